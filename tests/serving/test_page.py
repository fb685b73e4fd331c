"""The page at / and Swagger UI at /docs in a real browser: Playwright drives Debian's `chromium` against a server of
the session's four trained models (tests/conftest.py).

Each test gives the page a real input (a test digit, a drawn digit, a generated scene, a date, a corrupt file) and
checks what it shows against what the route answers for the same input. No request may leave the server: every
script, style and icon of / and /docs is served by the service. A screenshot of each task goes to the test's
tmp_path; with MODELSERVICE_PAGE_SCREENSHOTS=docs they are also copied to docs/page_<task>.png for the README.

Playwright's own browser download needs the internet, so the tests use the system's chromium (`apt-get install
chromium`; .ci/run installs it where it can), or CHROMIUM_PATH; without one they are skipped, and say why.
"""

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.e2e]  # a real browser: make test-e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30.0
EXPECT_TIMEOUT_MS = 30_000  # a first request to a model can wait for a batch on a loaded 2-core machine
VIEWPORT = {"width": 1000, "height": 800}
PHONE_VIEWPORT = {"width": 390, "height": 844}

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
expect = playwright_sync.expect


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), shutil.which("chromium-browser")]
    return next((path for path in candidates if path and Path(path).exists()), None)


@pytest.fixture(scope="module")
def server(trained_classifier, trained_seq2seq, trained_detector, trained_transfer, tmp_path_factory) -> Iterator[str]:
    """The shared server's models and the transfer-learned classifier, whose panel the page shows too."""
    from serving.process import running_server

    log = Path(tmp_path_factory.mktemp("page-server")) / "server.log"
    env = {"MODELSERVICE_MODELS": "classifier,seq2seq,detector,transfer", "MODELSERVICE_GRPC_PORT": "0"}
    with running_server(env=env, log_path=log) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator["playwright_sync.Browser"]:
    path = chromium_path()
    if path is None:
        pytest.skip(
            "no chromium found (apt-get install chromium, or set CHROMIUM_PATH); "
            "Playwright's own browser download needs the internet"
        )
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path)
        yield launched
        launched.close()


class RecordedPage:
    """A page and every URL it requested."""

    def __init__(self, browser: "playwright_sync.Browser", viewport: dict[str, int]):
        self.page = browser.new_page(viewport=viewport)
        self.requested: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))

    def outside(self, server: str) -> list[str]:
        """The requested URLs not on `server` (the page's own blob: URLs for a picked file stay in the browser)."""
        origin = urlsplit(server).netloc
        return [url for url in self.requested if not url.startswith("blob:") and urlsplit(url).netloc != origin]


@pytest.fixture
def recorded(browser) -> Iterator[RecordedPage]:
    recorded = RecordedPage(browser, VIEWPORT)
    yield recorded
    recorded.page.close()


def open_page(recorded: RecordedPage, server: str) -> "playwright_sync.Page":
    recorded.page.goto(server + "/")
    expect(recorded.page.locator("section.panel")).to_have_count(4)  # one per served model
    return recorded.page


def panel(page: "playwright_sync.Page", model: str) -> "playwright_sync.Locator":
    return page.locator(f"section.panel[data-model={model}]")


def screenshot(locator: "playwright_sync.Locator", tmp_path: Path, task: str) -> None:
    path = tmp_path / f"page_{task}.png"
    locator.screenshot(path=path)
    if os.environ.get("MODELSERVICE_PAGE_SCREENSHOTS") == "docs":
        shutil.copyfile(path, PROJECT_ROOT / "docs" / f"page_{task}.png")


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8).squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


def png_file(pixels: np.ndarray, path: Path) -> Path:
    path.write_bytes(png_bytes(pixels))
    return path


# --- the model list, and nothing loaded from outside -----------------------------------------------------------


def test_the_page_lists_the_served_models_and_loads_nothing_from_outside(server, recorded):
    page = open_page(recorded, server)
    listed = httpx.get(server + "/v1/models", timeout=TIMEOUT).json()["models"]
    rows = page.locator("#models tbody tr")
    expect(rows).to_have_count(len(listed))
    for model in listed:
        row = page.locator(f"#models tbody tr[data-model={model['name']}]")
        expect(row).to_contain_text(model["task"])
        for version in model["versions"]:
            expect(row).to_contain_text(f"v{version['version']} {version['state']}")
            expect(row).to_contain_text(version["blessing"])
    expect(page.get_by_role("link", name="API documentation")).to_have_attribute("href", "docs")
    expect(page.get_by_role("link", name="Metrics")).to_have_attribute("href", "metrics")
    assert recorded.requested, "the page requested nothing"
    assert recorded.outside(server) == []


def test_docs_render_swagger_ui_from_the_service_itself(server, recorded):
    recorded.page.goto(server + "/docs")
    expect(recorded.page.locator(".opblock-summary-path", has_text="/classify").first).to_be_visible()
    assert any("/static/swagger-ui/swagger-ui-bundle.js" in url for url in recorded.requested)
    assert recorded.outside(server) == []
    assert httpx.get(server + "/redoc", timeout=TIMEOUT).status_code == 404  # it loaded its script from a CDN


def test_the_page_fits_a_phone_screen(server, browser):
    phone = RecordedPage(browser, PHONE_VIEWPORT)
    try:
        open_page(phone, server)
        assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        phone.page.close()


def test_every_control_is_named_and_a_date_panel_is_used_from_the_keyboard(server, recorded, date_answers):
    page = open_page(recorded, server)
    unnamed = page.evaluate(
        """() => Array.from(document.querySelectorAll("input, select, button, textarea"))
          .filter(control => !control.labels?.length && !control.getAttribute("aria-label")
                             && !control.textContent.trim())
          .map(control => control.outerHTML)"""
    )
    assert unnamed == []  # a screen reader names each one
    seq2seq = panel(page, "seq2seq")
    seq2seq.get_by_label("A date, written any way").focus()
    page.keyboard.type("20.01.2023")
    expect(seq2seq.locator(".answer .text")).to_have_text(date_answers("20.01.2023")[0] or "not a date")
    page.keyboard.press("Tab")
    expect(seq2seq.get_by_label("Beams")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the second example
    expect(seq2seq.get_by_role("button", name="Saturday, March 4th 1999")).to_be_focused()
    page.keyboard.press("Enter")
    expect(seq2seq.get_by_label("A date, written any way")).to_have_value("Saturday, March 4th 1999")
    expected = date_answers("Saturday, March 4th 1999")[0] or "not a date"
    expect(seq2seq.locator(".answer .text")).to_have_text(expected)


# --- classifier ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["classifier", "transfer"])
def test_a_digit_file_gets_the_label_the_route_gives(server, recorded, digits, tmp_path, model):
    page = open_page(recorded, server)
    digit = png_file(digits.test.images[0], tmp_path / "digit.png")
    route = f"{server}/classify?model={model}"
    answer = httpx.post(route, files={"image": digit.read_bytes()}, timeout=TIMEOUT).json()
    classifier = panel(page, model)
    classifier.get_by_label("Image file").set_input_files(digit)
    expect(classifier.locator(".label")).to_have_text(answer["predictions"][0]["label"])
    expect(classifier.locator(".top-k li")).to_have_count(len(answer["predictions"][0]["top_k"]))
    expect(classifier.locator(".latency")).to_contain_text(" ms")
    (metadata,) = [
        entry for entry in httpx.get(f"{server}/models", timeout=TIMEOUT).json()["models"] if entry["name"] == model
    ]
    height, width, _ = metadata["input"]["image_shape"]  # each model's own input size
    expect(classifier.locator(".as-received")).to_have_attribute("width", str(width))
    expect(classifier.locator(".as-received")).to_have_attribute("height", str(height))
    screenshot(classifier, tmp_path, model)


def test_a_drawn_digit_is_sent_at_the_models_input_size(server, recorded):
    page = open_page(recorded, server)
    classifier = panel(page, "classifier")
    box = classifier.locator("canvas.drawing").bounding_box()
    assert box is not None
    with page.expect_request("**/classify?*") as sent:
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.85, steps=8)
        page.mouse.up()
    instance = np.array(sent.value.post_data_json["instances"][0])
    assert instance.shape == (8, 8)  # the classifier's metadata: 8×8×1
    assert instance.max() > 100 and instance[:, 0].max() == 0  # white ink in the middle, the border black
    answer = httpx.post(server + "/classify", json={"instances": [instance.tolist()]}, timeout=TIMEOUT).json()
    expect(classifier.locator(".label")).to_have_text(answer["predictions"][0]["label"])
    expect(classifier.locator(".as-received")).to_have_attribute("width", "8")


def test_a_corrupt_file_shows_the_services_error(server, recorded, tmp_path):
    page = open_page(recorded, server)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a PNG")
    answer = httpx.post(server + "/classify", files={"image": corrupt.read_bytes()}, timeout=TIMEOUT)
    assert answer.status_code == 400
    classifier = panel(page, "classifier")
    classifier.get_by_label("Image file").set_input_files(corrupt)
    error = classifier.get_by_role("alert")
    expect(error).to_contain_text("the uploaded image could not be decoded")
    expect(error).to_contain_text(answer.json()["expected"])
    expect(classifier.locator(".result")).to_be_hidden()


# --- detector --------------------------------------------------------------------------------------------------


def detections_for(server: str, scene: Path | bytes, **thresholds: str) -> list[dict]:
    image = scene if isinstance(scene, bytes) else scene.read_bytes()
    response = httpx.post(server + "/detect", files={"image": image}, data=thresholds, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["detections"]


def test_a_scene_gets_one_drawn_box_per_detection_and_the_sliders_requery(server, recorded, scenes, tmp_path):
    page = open_page(recorded, server)
    busiest = max(scenes.test[:16], key=lambda scene: len(scene.classes))  # the most digits of the first scenes
    scene = png_file(busiest.image, tmp_path / "scene.png")
    detector = panel(page, "detector")
    detector.get_by_label("Image file").set_input_files(scene)
    expected = detections_for(server, scene)  # the model's default thresholds, as the page's sliders start
    expect(detector.locator(".answer")).to_contain_text(f"{len(expected)} detection")
    expect(detector.locator("svg.boxes rect.box")).to_have_count(len(expected))
    captions = detector.locator("svg.boxes text").all_text_contents()
    assert captions == [f"{detection['label']} {detection['score']:.2f}" for detection in expected]

    lower = detections_for(server, scene, score_threshold="0.05", iou_threshold="0.5")
    assert len(lower) > len(expected)  # else the slider would change nothing to see
    detector.get_by_label("Score threshold").fill("0.05")
    expect(detector.locator("svg.boxes rect.box")).to_have_count(len(lower))
    screenshot(detector, tmp_path, "detector")
    detector.locator("details summary").click()
    expect(detector.locator("pre.json")).to_contain_text('"detections"')


def test_a_scene_dropped_on_the_panel_is_detected(server, recorded, scenes):
    """Drag and drop: the file arrives in the drop event's DataTransfer, as a file manager's drag gives it."""
    page = open_page(recorded, server)
    scene = png_bytes(max(scenes.test[:16], key=lambda scene: len(scene.classes)).image)
    detector = panel(page, "detector")
    detector.get_by_label("Score threshold").fill("0.05")  # boxes even from the tests' barely trained detector
    zone = detector.locator(".drop-zone")
    dragged = page.evaluate_handle(
        """bytes => {
          const transfer = new DataTransfer();
          transfer.items.add(new File([new Uint8Array(bytes)], "scene.png", { type: "image/png" }));
          return transfer;
        }""",
        list(scene),
    )
    zone.dispatch_event("dragover", {"dataTransfer": dragged})
    expect(zone).to_have_class(re.compile(r"\bdragging\b"))
    with page.expect_response("**/detect?*") as answered:
        zone.dispatch_event("drop", {"dataTransfer": dragged})
    expect(zone).not_to_have_class(re.compile(r"\bdragging\b"))
    expected = detections_for(server, scene, score_threshold="0.05", iou_threshold="0.5")
    assert expected, "no box to compare"
    # The same boxes as the route gives for the file itself (Playwright does not expose a multipart body's bytes).
    assert answered.value.json()["predictions"][0]["detections"] == expected
    expect(detector.locator("svg.boxes rect.box")).to_have_count(len(expected))


# --- seq2seq ---------------------------------------------------------------------------------------------------


def test_a_date_is_answered_as_it_is_typed_with_its_attention_heat_map(server, recorded, date_answers, tmp_path):
    page = open_page(recorded, server)
    seq2seq = panel(page, "seq2seq")
    seq2seq.get_by_label("A date, written any way").press_sequentially("20.01.2023")
    # What the exported model answers (as tests/serving/test_serving_seq2seq.py compares): "2023-01-20" when right.
    expect(seq2seq.locator(".answer .text")).to_have_text(date_answers("20.01.2023")[0] or "not a date")
    expect(seq2seq.locator(".beams tbody tr")).to_have_count(3)  # the default beam width

    body = {"texts": ["20.01.2023"], "attention": True}
    attention = httpx.post(server + "/translate", json=body, timeout=TIMEOUT).json()["predictions"][0]["attention"]
    assert len(attention["output"]) == 10  # the date constraint's YYYY-MM-DD, right or wrong
    heat_map = seq2seq.locator("table.attention")
    expect(heat_map.locator("thead th")).to_have_text(list("20.01.2023"))  # columns: the input's characters
    expect(heat_map.locator("tbody th")).to_have_text(attention["output"])  # rows: the answer's
    weights = np.array(
        heat_map.locator("tbody tr").evaluate_all(
            "rows => rows.map(row => Array.from(row.cells).slice(1).map(cell => Number(cell.dataset.weight)))"
        )
    )
    assert weights.shape == (10, 10)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(weights, attention["weights"], atol=1e-6)
    screenshot(seq2seq, tmp_path, "seq2seq")
    seq2seq.get_by_label("Beams").select_option("5")
    expect(seq2seq.locator(".beams tbody tr")).to_have_count(5)


def test_the_heat_map_of_a_long_date_scrolls_inside_a_phone_screen(server, browser):
    phone = RecordedPage(browser, PHONE_VIEWPORT)
    try:
        seq2seq = panel(open_page(phone, server), "seq2seq")
        seq2seq.get_by_role("button", name="Saturday, March 4th 1999").click()
        expect(seq2seq.locator("table.attention thead th")).to_have_count(len("saturday, march 4th 1999"))
        assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert seq2seq.locator(".attention-scroll").evaluate("box => box.scrollWidth > box.clientWidth")
    finally:
        phone.page.close()


# --- versions ----------------------------------------------------------------------------------------------------


def test_the_version_picker_asks_the_chosen_version_again(
    browser, trained_classifier, trained_seq2seq, digits, date_answers, tmp_path
):
    """A server with two versions of the classifier and of the date normaliser: a panel offers both (highest
    first, the routes' default), and choosing the other one sends the same input again to that version. The
    date normaliser's version 1 is a schema-1 artifact (tests/serving/fixtures/v1_artifacts) without the
    attention signature: its answers come without a heat-map, and the panel hides it."""
    import sys

    from benchmarks.model_swaps import copy_as_version
    from serving.process import free_port, running_process

    models = tmp_path / "models"
    for version in (1, 2):
        copy_as_version(trained_classifier[2], models, version)
    copy_as_version(
        PROJECT_ROOT / "tests" / "serving" / "fixtures" / "v1_artifacts" / "seq2seq" / "1", models, 1, name="seq2seq"
    )
    copy_as_version(trained_seq2seq[3], models, 2, name="seq2seq")
    port = free_port()
    command = [sys.executable, "-m", "serving", "--model-dir", str(models), "--port", str(port)]
    serve_both = {"MODELSERVICE_MODELS": "classifier:all,seq2seq:all"}  # the default serves the latest only
    with running_process(command, port=port, env=serve_both, log_path=tmp_path / "server.log") as url:
        recorded = RecordedPage(browser, VIEWPORT)
        try:
            recorded.page.goto(url + "/")
            classifier = panel(recorded.page, "classifier")
            picker = classifier.get_by_label("Version")
            expect(picker.locator("option")).to_have_text(["2", "1"])
            classifier.get_by_label("Image file").set_input_files(png_file(digits.test.images[0], tmp_path / "d.png"))
            expect(classifier.locator(".answer")).to_contain_text("(version 2)")
            picker.select_option("1")
            expect(classifier.locator(".answer")).to_contain_text("(version 1)")
            assert any("version=1" in requested for requested in recorded.requested)

            seq2seq = panel(recorded.page, "seq2seq")
            seq2seq.get_by_label("A date, written any way").press_sequentially("20.01.2023")
            expect(seq2seq.locator(".answer .text")).to_have_text(date_answers("20.01.2023")[0] or "not a date")
            expect(seq2seq.locator(".answer")).to_contain_text("(version 2)")
            expect(seq2seq.locator("table.attention tbody tr")).to_have_count(10)
            expect(seq2seq.locator("table.attention")).to_be_visible()
            seq2seq.get_by_label("Version").select_option("1")
            expect(seq2seq.locator(".answer")).to_contain_text("(version 1)")
            expect(seq2seq.locator(".beams tbody tr")).to_have_count(3)
            expect(seq2seq.locator("table.attention")).to_be_hidden()
        finally:
            recorded.page.close()
