// The page at /: lists the served models (GET v1/models) and gives each one a panel to try it with, through the
// service's own JSON routes. Plain JavaScript, no dependencies, no build step.
"use strict";

const EXAMPLE_DATES = [
  "20.01.2023",
  "Saturday, March 4th 1999",
  "4. März 1999",
  "samedi 4 mars 1999",
  "4 de marzo de 1999",
  "2023년 1월 20일 금요일",
  "2023年1月20日",
  "hello",
];
const TYPING_PAUSE_MS = 250; // answer as you type, once typing pauses this long
const DEFAULT_IMAGE_SHAPE = [28, 28, 1];

class ServiceError extends Error {
  // An answer that is not 2xx: the service's JSON error body ({"error", "expected"}) where it sent one.
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.expected = body && body.expected;
  }
}

// --- requests ---------------------------------------------------------------------------------------------

async function readAnswer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null; // not JSON: a proxy's error page, say; the status says what happened
  }
  if (!response.ok) throw new ServiceError(response.status, body);
  return body;
}

async function getJson(url) {
  return readAnswer(await fetch(url, { headers: { accept: "application/json" } }));
}

async function postTimed(url, body) {
  const started = performance.now();
  const headers = body instanceof FormData ? {} : { "content-type": "application/json" };
  const response = await fetch(url, { method: "POST", body: body instanceof FormData ? body : JSON.stringify(body), headers });
  const answer = await readAnswer(response);
  return { answer, milliseconds: performance.now() - started };
}

function routeUrl(context, path, extra = {}) {
  const query = new URLSearchParams({ model: context.model.name, ...extra });
  const version = context.versionSelect.value;
  if (version) query.set("version", version);
  return `${path}?${query}`;
}

// Only the answer to the newest request is shown: sliders and typing send several, and they may come back in
// any order.
async function latestAnswer(context, request) {
  const ticket = ++context.requests;
  try {
    const result = await request();
    if (ticket !== context.requests) return null;
    showError(context, null);
    return result;
  } catch (error) {
    if (ticket === context.requests) showError(context, error);
    return null;
  }
}

// --- the model list ---------------------------------------------------------------------------------------

function describeVersion(version) {
  const parts = [`v${version.version} ${version.state}`];
  if (version.blessing) parts.push(version.blessing);
  if (version.labels && version.labels.length) parts.push(`labels: ${version.labels.join(", ")}`);
  if (version.error) parts.push(`error: ${version.error}`);
  return parts.join(" · ");
}

function showModels(models) {
  const table = document.getElementById("models");
  const rows = table.querySelector("tbody");
  for (const model of models) {
    const row = rows.insertRow();
    row.dataset.model = model.name;
    row.insertCell().textContent = model.name;
    row.insertCell().textContent = model.task || "not loaded";
    const versions = document.createElement("ul");
    for (const version of model.versions) versions.append(element("li", describeVersion(version)));
    row.insertCell().append(versions);
  }
  table.hidden = false;
  const status = document.getElementById("models-status");
  status.textContent = models.length ? `${models.length} models` : "No model is served yet.";
}

// --- panels -----------------------------------------------------------------------------------------------

function element(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined) made.textContent = text;
  if (className) made.className = className;
  return made;
}

function cloneTemplate(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

function cloneTemplateContent(id) {
  return document.getElementById(id).content.cloneNode(true);
}

// An error replaces the last answer, which no longer matches the input a person sees.
function showError(context, error) {
  context.panel.querySelector(".result").hidden = Boolean(error);
  const shown = context.panel.querySelector(".error");
  shown.hidden = !error;
  if (!error) return;
  shown.textContent = error.expected ? `${error.message} — expected: ${error.expected}` : error.message;
}

function availableVersions(model) {
  return model.versions.filter((version) => version.state === "AVAILABLE").sort((a, b) => b.version - a.version);
}

function fillVersionPicker(context, versions) {
  if (versions.length < 2) return; // one version: the routes' default, no choice to make
  for (const version of versions) {
    const labels = version.labels && version.labels.length ? ` (${version.labels.join(", ")})` : "";
    context.versionSelect.append(new Option(`${version.version}${labels}`, version.version));
  }
  context.versionSelect.closest("label").hidden = false;
}

function addPanel(model, metadataByVersion) {
  const setUp = PANELS[model.task];
  const versions = availableVersions(model);
  if (!setUp || !versions.length) return;
  const panel = cloneTemplate("panel");
  panel.dataset.model = model.name;
  panel.dataset.task = model.task;
  panel.setAttribute("aria-label", `Try ${model.name}`);
  panel.querySelector("h2").textContent = `Try ${model.name} (${model.task})`;
  const context = { panel, model, versionSelect: panel.querySelector("select[name=version]"), requests: 0 };
  context.metadata = () => metadataByVersion[context.versionSelect.value || versions[0].version] || {};
  fillVersionPicker(context, versions);
  // Another version answers the same input again, to compare them.
  context.versionSelect.addEventListener("change", () => context.askAgain && context.askAgain());
  panel.querySelector(".panel-body").append(cloneTemplateContent(`${model.task}-panel`));
  document.getElementById("panels").append(panel);
  setUp(context);
}

// Files come from the file input or are dropped on the panel's drop zone.
function onFile(context, handle) {
  const input = context.panel.querySelector("input[type=file]");
  input.addEventListener("change", () => input.files[0] && handle(input.files[0]));
  const zone = context.panel.querySelector(".drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files[0]) handle(event.dataTransfer.files[0]);
  });
}

function showLatency(context, milliseconds) {
  context.panel.querySelector(".latency").textContent = `Answered in ${Math.round(milliseconds)} ms`;
}

// --- classifier -------------------------------------------------------------------------------------------

function imageShape(context) {
  const shape = context.metadata().input && context.metadata().input.image_shape;
  return shape && shape.length === 3 ? shape : DEFAULT_IMAGE_SHAPE;
}

// The picture drawn at the model's input size, as the graph resizes it (channels as the model takes them).
function drawAsReceived(context, source) {
  const [height, width, channels] = imageShape(context);
  const canvas = context.panel.querySelector(".as-received");
  canvas.width = width;
  canvas.height = height;
  const drawing = canvas.getContext("2d", { willReadFrequently: true });
  drawing.imageSmoothingQuality = "high";
  drawing.drawImage(source, 0, 0, width, height);
  const pixels = drawing.getImageData(0, 0, width, height);
  if (channels === 1) toGrey(pixels.data);
  drawing.putImageData(pixels, 0, 0);
  context.panel.querySelector(".input-size").textContent = `${width}×${height}×${channels}`;
  return pixels;
}

function toGrey(rgba) {
  for (let index = 0; index < rgba.length; index += 4) {
    const grey = Math.round(0.299 * rgba[index] + 0.587 * rgba[index + 1] + 0.114 * rgba[index + 2]);
    rgba[index] = rgba[index + 1] = rgba[index + 2] = grey;
  }
}

// Pixels as the JSON routes take them: rows of 0–255 values, H×W for one channel, H×W×C otherwise.
function pixelRows(pixels, channels) {
  const rows = [];
  for (let y = 0; y < pixels.height; y++) {
    const row = [];
    for (let x = 0; x < pixels.width; x++) {
      const at = (y * pixels.width + x) * 4;
      row.push(channels === 1 ? pixels.data[at] : Array.from(pixels.data.slice(at, at + channels)));
    }
    rows.push(row);
  }
  return rows;
}

function showClassification(context, { answer, milliseconds }) {
  const [prediction] = answer.predictions;
  const shown = context.panel.querySelector(".answer");
  shown.replaceChildren("Label ", element("strong", prediction.label, "label"), ` (version ${answer.model.version})`);
  const list = context.panel.querySelector(".top-k");
  list.replaceChildren(...prediction.top_k.map(scoreBar));
  showLatency(context, milliseconds);
}

function scoreBar({ label, score }) {
  const item = element("li");
  const percent = `${(100 * score).toFixed(1)}%`;
  const bar = element("span", "", "bar");
  bar.style.width = percent;
  item.append(element("span", label, "bar-label"), element("span", "", "bar-track"), element("span", percent));
  item.querySelector(".bar-track").append(bar);
  return item;
}

async function classifyFile(context, file) {
  context.askAgain = () => classifyFile(context, file);
  const bitmap = await createImageBitmap(file).catch(() => null); // the service says why when it cannot decode it
  if (bitmap) drawAsReceived(context, bitmap);
  const form = new FormData();
  form.append("image", file);
  const result = await latestAnswer(context, () => postTimed(routeUrl(context, "classify"), form));
  if (result) showClassification(context, result);
}

async function classifyDrawing(context, canvas) {
  context.askAgain = () => classifyDrawing(context, canvas);
  const channels = imageShape(context)[2];
  const pixels = drawAsReceived(context, canvas);
  const body = { instances: [pixelRows(pixels, channels)] };
  const result = await latestAnswer(context, () => postTimed(routeUrl(context, "classify"), body));
  if (result) showClassification(context, result);
}

function clearCanvas(canvas) {
  const drawing = canvas.getContext("2d");
  drawing.fillStyle = "black"; // white ink on black, as the training digits
  drawing.fillRect(0, 0, canvas.width, canvas.height);
}

function enableDrawing(canvas, whenDrawn) {
  const drawing = canvas.getContext("2d");
  clearCanvas(canvas);
  let last = null;
  const at = (event) => {
    const bounds = canvas.getBoundingClientRect();
    return [((event.clientX - bounds.left) * canvas.width) / bounds.width, ((event.clientY - bounds.top) * canvas.height) / bounds.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = at(event);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = at(event);
    Object.assign(drawing, { strokeStyle: "white", lineWidth: canvas.width / 9, lineCap: "round" });
    drawing.beginPath();
    drawing.moveTo(...last);
    drawing.lineTo(...next);
    drawing.stroke();
    last = next;
  });
  const finish = () => {
    if (last) whenDrawn();
    last = null;
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
}

function setUpClassifier(context) {
  const canvas = context.panel.querySelector(".drawing");
  const [height, width, channels] = imageShape(context);
  context.panel.querySelector(".input-size").textContent = `${width}×${height}×${channels}`;
  enableDrawing(canvas, () => classifyDrawing(context, canvas));
  context.panel.querySelector(".classify-drawing").addEventListener("click", () => classifyDrawing(context, canvas));
  context.panel.querySelector(".clear-drawing").addEventListener("click", () => clearCanvas(canvas));
  onFile(context, (file) => classifyFile(context, file));
}

// --- detector ---------------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svgElement(tag, attributes, text) {
  const made = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  if (text !== undefined) made.textContent = text;
  return made;
}

function detectionBox({ box, label, score }, fontSize) {
  const [x1, y1, x2, y2] = box;
  const group = svgElement("g", { class: "detection" });
  group.append(
    svgElement("rect", { class: "box", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }),
    svgElement("text", { x: x1, y: Math.max(fontSize, y1 - 2), "font-size": fontSize }, `${label} ${score.toFixed(2)}`),
  );
  return group;
}

function showDetections(context, size, { answer, milliseconds }) {
  const detections = answer.predictions[0].detections;
  const boxes = context.panel.querySelector(".boxes");
  boxes.setAttribute("viewBox", `0 0 ${size.width} ${size.height}`);
  const fontSize = Math.max(8, Math.round(size.width / 16));
  boxes.replaceChildren(...detections.map((detection) => detectionBox(detection, fontSize)));
  const count = detections.length;
  context.panel.querySelector(".answer").textContent = `${count} detection${count === 1 ? "" : "s"} (version ${answer.model.version})`;
  context.panel.querySelector(".json").textContent = JSON.stringify(answer, null, 2);
  showLatency(context, milliseconds);
}

function thresholds(context) {
  const value = (name) => context.panel.querySelector(`input[name=${name}]`).value;
  return { score_threshold: value("score_threshold"), iou_threshold: value("iou_threshold") };
}

async function detect(context) {
  const { file, size } = context.picture;
  const form = new FormData();
  form.append("image", file);
  for (const [name, value] of Object.entries(thresholds(context))) form.append(name, value);
  const result = await latestAnswer(context, () => postTimed(routeUrl(context, "detect"), form));
  if (result) showDetections(context, size, result);
}

async function pickPicture(context, file) {
  const bitmap = await createImageBitmap(file).catch(() => null);
  const scene = context.panel.querySelector(".scene");
  scene.hidden = !bitmap;
  if (bitmap) {
    const image = scene.querySelector("img");
    if (image.src) URL.revokeObjectURL(image.src);
    image.src = URL.createObjectURL(file);
  }
  context.panel.querySelector(".boxes").replaceChildren();
  context.picture = { file, size: bitmap ? { width: bitmap.width, height: bitmap.height } : { width: 1, height: 1 } };
  await detect(context);
}

function setUpDetector(context) {
  const postprocessing = context.metadata().postprocessing || {};
  for (const [name, shown] of [["score_threshold", ".score-value"], ["iou_threshold", ".iou-value"]]) {
    const slider = context.panel.querySelector(`input[name=${name}]`);
    if (typeof postprocessing[name] === "number") slider.value = postprocessing[name]; // the model's default
    const output = context.panel.querySelector(shown);
    output.textContent = Number(slider.value).toFixed(2);
    slider.addEventListener("input", () => {
      output.textContent = Number(slider.value).toFixed(2);
      if (context.picture) detect(context);
    });
  }
  onFile(context, (file) => pickPicture(context, file));
  context.askAgain = () => context.picture && detect(context);
}

// --- seq2seq ----------------------------------------------------------------------------------------------

function showTranslation(context, { answer, milliseconds }) {
  const [prediction] = answer.predictions;
  const shown = context.panel.querySelector(".answer");
  if (prediction.text === null) {
    shown.replaceChildren(element("strong", prediction.reason || "no answer", "text"), ` (best guess ${prediction.guess})`);
  } else {
    shown.replaceChildren(element("strong", prediction.text, "text"));
  }
  if (typeof prediction.date_probability === "number") {
    shown.append(` · probability that it is a date: ${prediction.date_probability.toPrecision(3)}`);
  }
  shown.append(` (version ${answer.model.version})`);
  const table = context.panel.querySelector(".beams");
  table.tBodies[0].replaceChildren(...prediction.beams.map(beamRow));
  table.hidden = false;
  showAttention(context, prediction.attention);
  showLatency(context, milliseconds);
}

// A version exported before the attention signature has no "attention" role: it is not asked for the attention.
function hasAttention(context) {
  return Boolean((context.metadata().signatures || {}).attention);
}

// A space would make an empty header.
function shownCharacter(character) {
  return character === " " ? "␣" : character;
}

function showAttention(context, attention) {
  const map = context.panel.querySelector(".attention-map");
  map.hidden = !attention;
  if (!attention) return;
  const table = map.querySelector("table.attention");
  const headers = attention.source.map((character) => headerCell(character, "col"));
  table.tHead.rows[0].replaceChildren(element("td"), ...headers);
  const rows = attention.output.map((character, row) => {
    const cells = attention.weights[row].map((weight, column) => weightCell(weight, character, attention.source[column]));
    const tableRow = element("tr");
    tableRow.append(headerCell(character, "row"), ...cells);
    return tableRow;
  });
  table.tBodies[0].replaceChildren(...rows);
}

function headerCell(character, scope) {
  const cell = element("th", shownCharacter(character));
  cell.scope = scope;
  if (character === " ") cell.title = "space";
  return cell;
}

// Shaded by the weight (page.css reads --weight); the weight as text for screen readers and in the tooltip.
function weightCell(weight, written, read) {
  const cell = element("td");
  const percent = `${(100 * weight).toFixed(1)}%`;
  cell.dataset.weight = weight;
  cell.title = `writing ${shownCharacter(written)}, reading ${shownCharacter(read)}: ${percent}`;
  cell.style.setProperty("--weight", weight);
  cell.append(element("span", percent, "visually-hidden"));
  return cell;
}

function beamRow({ text, score }) {
  const row = element("tr");
  row.append(element("td", text), element("td", score.toFixed(3)));
  return row;
}

async function translate(context) {
  const text = context.panel.querySelector("input[name=text]").value;
  if (!text.trim()) return;
  const body = { texts: [text], beam_width: Number(context.panel.querySelector("select[name=beam_width]").value) };
  if (hasAttention(context)) body.attention = true;
  const result = await latestAnswer(context, () => postTimed(routeUrl(context, "translate"), body));
  if (result) showTranslation(context, result);
}

function setUpSeq2seq(context) {
  const decoding = context.metadata().decoding || {};
  const beams = context.panel.querySelector("select[name=beam_width]");
  for (let width = 1; width <= (decoding.max_beam_width || 8); width++) beams.append(new Option(width, width));
  beams.value = decoding.default_beam_width || 3;
  const input = context.panel.querySelector("input[name=text]");
  let pause = null;
  input.addEventListener("input", () => {
    clearTimeout(pause);
    pause = setTimeout(() => translate(context), TYPING_PAUSE_MS);
  });
  beams.addEventListener("change", () => translate(context));
  context.askAgain = () => translate(context);
  const examples = context.panel.querySelector(".examples");
  for (const example of EXAMPLE_DATES) {
    const button = element("button", example);
    button.type = "button";
    button.addEventListener("click", () => {
      input.value = example;
      translate(context);
    });
    examples.append(button);
  }
}

const PANELS = { classifier: setUpClassifier, detector: setUpDetector, seq2seq: setUpSeq2seq };

// --- start ------------------------------------------------------------------------------------------------

// GET models: each AVAILABLE version's metadata.json, for the input size and the defaults the signatures lack.
function metadataByModel(models) {
  const byModel = {};
  for (const metadata of models) (byModel[metadata.name] ||= {})[metadata.version] = metadata;
  return byModel;
}

async function main() {
  const status = document.getElementById("models-status");
  try {
    const [listed, metadata] = await Promise.all([getJson("v1/models"), getJson("models")]);
    showModels(listed.models);
    const byModel = metadataByModel(metadata.models);
    for (const model of listed.models) addPanel(model, byModel[model.name] || {});
  } catch (error) {
    status.textContent = `The models could not be listed: ${error.message}`;
    status.classList.add("error");
  }
}

main();
