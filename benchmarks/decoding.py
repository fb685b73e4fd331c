"""Decoding throughput: the exported graph-mode beam search vs. a Python loop over the Keras model.

    python -m benchmarks.decoding                                   # runs/seq2seq + artifacts/seq2seq
    python -m benchmarks.decoding --run-dir /tmp/s2s/run --artifact /tmp/s2s/artifacts/seq2seq
    python -m benchmarks.decoding --train-if-missing                # trains a small model first if needed
    python -m benchmarks.decoding --batch-sizes 1 8 32 --beam-widths 1 3 --strings 128 --repeats 5

Two decoders turn the same test texts (`pipelines.data.date_data`, seeded) into ISO dates, in batches of
the same size, one call per batch:

  graph        the exported SavedModel, loaded with plain `tf.saved_model.load`, through its `translate`
               signature: tokenisation, beam search (a `tf.while_loop`) and detokenisation in one graph
  python-loop  `python_loop_decode`: the Keras model from the run folder called eagerly once per output
               character, beam bookkeeping in NumPy; the same search as `models/decoding.py::beam_search`

Each (batch size, beam width) is warmed up on both sides (the graph's first-call optimisation, Keras's
first eager calls), then every text is decoded --repeats times, or more until a second was timed; the
fastest pass counts (timeit's convention: it is the one least disturbed by other processes). Results:
a table of strings/s, the ratio graph / python-loop (goal >= 10x) and the share of identical outputs;
`decoding.json` and `decoding.png` under --out.

Both sides decode under the model's output constraint (the exported date automaton, `models/date_constraint.py`);
what the constraint costs is measured apart, on the same model's graph in process with and without it.

The Python loop's cost is mostly per call, not per string (eager dispatch of every layer for every
character, ~8 ms per step on 2 CPU cores whatever the batch), so the ratio is largest at batch 1 and
shrinks as batches grow and both sides become bound by the same arithmetic.
"""

import argparse
import dataclasses
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from benchmarks.common import environment, fastest_pass, plot_ratio_bars, save_results, saved_model_dir, settings
from models.date_constraint import IsoDateConstraint
from models.decoding import LENGTH_ALPHA, NEG_INF
from models.seq2seq import Seq2SeqStepDecoder
from models.text_graph import END_ID, OOV_ID, PAD_ID, START_ID, CharTokenizer
from pipelines import seq2seq
from pipelines.data.date_data import make_dataset

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GOAL_SPEEDUP = 10.0
BANNED_IDS = (PAD_ID, OOV_ID, START_ID)  # what the exported graph bans: never a training target
FIRST_CHAR_ID = END_ID + 1  # target ids: padding, OOV, [START], [END], then the characters

Decode = Callable[..., tuple[list[str], list[float]]]


# --- the Python-loop baseline ---------------------------------------------------------------------


def python_loop_decode(
    model: keras.Model,
    tokenizer: CharTokenizer,
    texts: list[str],
    *,
    beam_width: int,
    alpha: float = LENGTH_ALPHA,
    constraint: IsoDateConstraint | None = None,
) -> tuple[list[str], list[float]]:
    """Beam search the way it is usually written: a Python loop calling the Keras decoder once per character.

    Same search as `models.decoding.beam_search` (and so the same outputs as the exported graph):
    scores are summed log-probabilities / length^α, finished hypotheses keep their score, padding,
    OOV and [START] are never generated, and the loop stops when every hypothesis has finished or
    after max_output_length + 1 characters; with a `constraint`, only what it allows is generated. Returns
    the best hypothesis's text and score per input.
    """
    decoder = Seq2SeqStepDecoder(model)
    context, state = decoder.start(tokenizer.source_ids(tf.constant(texts, tf.string)))
    # One row per hypothesis, each input's beams on adjacent rows.
    context = tuple(np.repeat(np.asarray(part), beam_width, axis=0) for part in context)
    state = tuple(np.repeat(np.asarray(part), beam_width, axis=0) for part in state)

    batch, max_length = len(texts), tokenizer.max_output_length + 1  # + [END]
    tokens = np.full((batch * beam_width, max_length + 1), PAD_ID, np.int32)
    tokens[:, 0] = START_ID
    # Only beam 0 is alive at first, so the first step does not fill the beam with copies of one hypothesis.
    sums = np.full((batch, beam_width), NEG_INF, np.float32)
    sums[:, 0] = 0.0
    finished = np.zeros((batch, beam_width), bool)
    lengths = np.zeros((batch, beam_width), np.int32)

    for t in range(max_length):
        if finished.all():
            break
        logits, state = decoder.step(tokens, t, context, state)
        allowed = None if constraint is None else constraint.allowed(tf.constant(tokens), tf.constant(t)).numpy()
        log_probs = next_token_log_probs(np.asarray(logits), finished, allowed)
        vocab = log_probs.shape[-1]
        candidate_sums = sums[..., np.newaxis] + log_probs  # (N, B, V)
        candidate_lengths = lengths + np.logical_not(finished)
        candidate_scores = candidate_sums / length_penalty(candidate_lengths, alpha)[..., np.newaxis]
        chosen = top_k(candidate_scores.reshape(batch, -1), beam_width)
        parent, token = chosen // vocab, chosen % vocab

        sums = np.take_along_axis(candidate_sums.reshape(batch, -1), chosen, axis=1)
        lengths = np.take_along_axis(candidate_lengths, parent, axis=1)
        finished = np.take_along_axis(finished, parent, axis=1) | (token == END_ID)
        parent_rows = (parent + np.arange(batch)[:, np.newaxis] * beam_width).reshape(-1)
        tokens = tokens[parent_rows]
        tokens[:, t + 1] = token.reshape(-1)
        state = tuple(np.asarray(part)[parent_rows] for part in state)

    best = slice(None, None, beam_width)  # top-k ranked the beams, so beam 0 of each input is its best
    texts_out = [ids_to_text(tokenizer, row) for row in tokens[best, 1:]]
    return texts_out, (sums / length_penalty(lengths, alpha))[:, 0].tolist()


def next_token_log_probs(logits: np.ndarray, finished: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """(N·B, V) logits → (N, B, V) log-probabilities over the allowed tokens (`allowed`: (N·B, V) more
    limits); a finished hypothesis's only continuation is padding, at no cost."""
    batch, beams = finished.shape
    logits = logits.astype(np.float32, copy=True)
    logits[:, list(BANNED_IDS)] = NEG_INF
    if allowed is not None:
        logits = np.where(allowed, logits, NEG_INF)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).reshape(batch, beams, -1)
    padding_only = np.full(log_probs.shape[-1], NEG_INF, np.float32)
    padding_only[PAD_ID] = 0.0
    return np.where(finished[..., np.newaxis], padding_only, log_probs)


def length_penalty(lengths: np.ndarray, alpha: float) -> np.ndarray:
    return np.power(np.maximum(lengths, 1).astype(np.float32), np.float32(alpha))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, ties to the lower index, as `tf.math.top_k` breaks them."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def ids_to_text(tokenizer: CharTokenizer, ids: np.ndarray) -> str:
    chars = []
    for token in ids:
        if token == END_ID:
            break
        if token >= FIRST_CHAR_ID:
            chars.append(tokenizer.target_chars[token - FIRST_CHAR_ID])
    return "".join(chars)


# --- the exported graph ---------------------------------------------------------------------------


def graph_decoder(signature: Callable[..., dict[str, tf.Tensor]]) -> Decode:
    """The SavedModel's `translate` signature with `python_loop_decode`'s interface."""

    def decode(texts: list[str], *, beam_width: int) -> tuple[list[str], list[float]]:
        result = signature(texts=tf.constant(texts, tf.string), beam_width=tf.constant(beam_width, tf.int32))
        return [text.decode() for text in result["texts"].numpy()], result["scores"].numpy().tolist()

    return decode


# --- set-up ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.decoding", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/seq2seq"),
        help="training run with model.keras and tokenizer.json, for the Python loop (default: %(default)s)",
    )
    parser.add_argument(
        "--artifact",
        type=Path,
        default=Path("artifacts/seq2seq"),
        help="exported model: a version folder, or a model folder whose latest version is used (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 32], help="strings per decoder call (default: %(default)s)"
    )
    parser.add_argument(
        "--beam-widths", type=int, nargs="+", default=[1, 3], help="beam widths, 1 = greedy (default: %(default)s)"
    )
    parser.add_argument(
        "--strings", type=int, default=64, help="test texts decoded per repeat and setting (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="minimum number of timed passes over the texts per side and setting; the fastest counts "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated test texts (default: %(default)s)")
    parser.add_argument(
        "--train-if-missing",
        action="store_true",
        help="train a small model into a temporary folder when --run-dir or --artifact is missing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=PROJECT_ROOT / "benchmarks" / "results",
        help="folder for decoding.json and decoding.png (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or min(args.beam_widths) < 1:
        parser.error("--batch-sizes and --beam-widths must be >= 1")
    if args.strings < 1 or args.repeats < 1:
        parser.error("--strings and --repeats must be >= 1")
    return args


def train_small_model(workdir: Path) -> tuple[Path, Path]:
    """A quickly trained model (poor accuracy, but the same architecture and output length); (run dir, artifact)."""
    run_dir, artifacts = workdir / "run", workdir / "artifacts"
    started = time.perf_counter()
    seq2seq.FAMILY.main([
        "--run-dir", str(run_dir), "--artifacts", str(artifacts), "--no-register",
        "--train-size", "3000", "--dev-size", "200", "--test-size", "200", "--epochs", "2",
    ])  # fmt: skip
    print(f"trained and exported a small model in {time.perf_counter() - started:.0f} s\n")
    return run_dir, saved_model_dir(artifacts / seq2seq.FAMILY.name)


def find_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path] | None:
    """(run dir, SavedModel folder), training them first with --train-if-missing; None when missing."""
    run_dir, artifact = args.run_dir, saved_model_dir(args.artifact)
    if (run_dir / "model.keras").is_file() and artifact is not None:
        return run_dir, artifact
    if args.train_if_missing:
        return train_small_model(workdir)
    missing = []
    if not (run_dir / "model.keras").is_file():
        missing.append(str(run_dir / "model.keras"))
    if artifact is None:
        missing.append(f"an exported version in {args.artifact}")
    print(
        f"no trained Seq2Seq model: missing {' and '.join(missing)}.\n"
        "Run `make train` or `python -m pipelines.seq2seq` first (or point --run-dir and --artifact at a run),\n"
        "or pass --train-if-missing to train a small model into a temporary folder.",
        file=sys.stderr,
    )
    return None


def sample_texts(count: int, seed: int) -> list[str]:
    return [pair.text for pair in make_dataset(0, 0, count, seed=seed).test]


# --- measurement ------------------------------------------------------------------------------------


def time_decoder(
    decode: Decode, batches: list[list[str]], *, beam_width: int, repeats: int
) -> tuple[float, list[str], list[float]]:
    """(fastest pass in seconds, outputs, scores) of decoding every batch, after one warm-up call."""
    decode(batches[0], beam_width=beam_width)
    fastest, results = fastest_pass(
        lambda: [decode(batch, beam_width=beam_width) for batch in batches], repeats=repeats
    )
    return (
        fastest,
        [text for texts, _ in results for text in texts],
        [score for _, scores in results for score in scores],
    )


def measure(
    decoders: dict[str, Decode], texts: list[str], *, batch_size: int, beam_width: int, repeats: int
) -> dict[str, Any]:
    batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    row: dict[str, Any] = {"batch_size": batch_size, "beam_width": beam_width, "strings": len(texts)}
    outputs: dict[str, tuple[list[str], list[float]]] = {}
    for name, decode in decoders.items():
        seconds, decoded, scores = time_decoder(decode, batches, beam_width=beam_width, repeats=repeats)
        outputs[name] = (decoded, scores)
        row[name] = {"seconds": seconds, "strings_per_s": len(texts) / seconds}
    (graph_texts, graph_scores), (loop_texts, loop_scores) = outputs["graph"], outputs["python_loop"]
    row["ratio"] = row["graph"]["strings_per_s"] / row["python_loop"]["strings_per_s"]
    row["agreement"] = float(np.mean([a == b for a, b in zip(graph_texts, loop_texts)]))
    row["max_score_difference"] = float(np.max(np.abs(np.array(graph_scores) - np.array(loop_scores))))
    return row


def constraint_cost(
    constrained: Any, free: Any, texts: list[str], *, batch_size: int, beam_width: int, repeats: int
) -> dict[str, float]:
    """The same model's graph with and without the date constraint, in this process: what the constraint costs."""
    decoders = {"constrained": graph_decoder(constrained.translate), "free": graph_decoder(free.translate)}
    batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    rates = {
        name: len(texts) / time_decoder(decode, batches, beam_width=beam_width, repeats=repeats)[0]
        for name, decode in decoders.items()
    }
    return {"constrained_strings_per_s": rates["constrained"], "free_strings_per_s": rates["free"],
            "slowdown": rates["free"] / rates["constrained"]}  # fmt: skip


# --- report ----------------------------------------------------------------------------------------


def report_text(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'batch':>5} {'beam':>4} {'graph str/s':>12} {'python-loop str/s':>18} {'ratio':>7} {'agreement':>10} "
        f"{'max |Δscore|':>13}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row['batch_size']:>5} {row['beam_width']:>4} {row['graph']['strings_per_s']:>12.1f} "
            f"{row['python_loop']['strings_per_s']:>18.1f} "
            f"{row['ratio']:>6.1f}x {row['agreement']:>9.1%} {row['max_score_difference']:>13.1e}"
        )
    costs = [row for row in rows if "constraint" in row]
    if costs:
        lines += ["", "the date constraint (models/date_constraint.py), the same graph in process with and without it:"]
        lines += [
            f"  batch {row['batch_size']:>3}, beam {row['beam_width']}: "
            f"{row['constraint']['constrained_strings_per_s']:8.1f} str/s constrained, "
            f"{row['constraint']['free_strings_per_s']:8.1f} free: {row['constraint']['slowdown']:.2f}x the time"
            for row in costs
        ]
    met = all(row["ratio"] >= GOAL_SPEEDUP for row in rows)
    slowest = min(rows, key=lambda row: row["ratio"])
    lines += [
        "",
        f"goal: graph >= {GOAL_SPEEDUP:g}x the Python loop at every setting: {'MET' if met else 'NOT MET'} "
        f"(lowest {slowest['ratio']:.1f}x at batch {slowest['batch_size']}, beam {slowest['beam_width']})",
        "outputs identical on both sides: "
        f"{'yes' if all(row['agreement'] == 1.0 for row in rows) else 'NO (see the agreement column)'}",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plot_ratio_bars(
        rows,
        path,
        sides=(("graph", "graph (SavedModel signature)"), ("python_loop", "Python loop (eager Keras)")),
        rate="strings_per_s",
        tick_label=lambda row: f"batch {row['batch_size']}\nbeam {row['beam_width']}",
        title="Seq2Seq decoding throughput (ratio graph / Python loop above the bars)",
    )


# --- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="decoding-bench-") as workdir:
        if (found := find_model(args, Path(workdir))) is None:
            return 2
        run_dir, artifact = found
        trained = seq2seq.FAMILY.load_trained(run_dir)
        config, model, tokenizer = trained.config, trained.model, trained.fitted
        saved_model = tf.saved_model.load(str(artifact))  # kept referenced: its signatures need it alive
        constrained = seq2seq.served_graph(model, tokenizer, config)  # what the export holds
        free = seq2seq.served_graph(model, tokenizer, dataclasses.replace(config, output_constraint="none"))
        decoders: dict[str, Decode] = {
            "graph": graph_decoder(saved_model.signatures["translate"]),
            "python_loop": functools.partial(python_loop_decode, model, tokenizer, constraint=constrained.constraint),
        }
        texts = sample_texts(args.strings, args.seed)
        print(
            f"{config.architecture} model from {run_dir}, SavedModel {artifact}; {len(texts)} test texts, "
            f"fastest of >= {args.repeats} passes, {os.cpu_count()} CPUs"
        )
        rows = []
        for beam_width in args.beam_widths:
            for batch_size in args.batch_sizes:
                rows.append(
                    measure(decoders, texts, batch_size=batch_size, beam_width=beam_width, repeats=args.repeats)
                )
                row = rows[-1]
                if constrained.constraint is not None:
                    row["constraint"] = constraint_cost(
                        constrained, free, texts, batch_size=batch_size, beam_width=beam_width, repeats=args.repeats
                    )
                print(
                    f"batch {batch_size:>3}, beam {beam_width}: graph {row['graph']['strings_per_s']:8.1f} str/s, "
                    f"python loop {row['python_loop']['strings_per_s']:7.1f} str/s ({row['ratio']:.1f}x)"
                )
    text = report_text(rows)
    total = time.perf_counter() - started
    print("\n" + text)
    results = {
        "settings": settings(args),
        "model": {"run_dir": str(run_dir), "artifact": str(artifact), "architecture": config.architecture},
        "environment": environment(),
        "results": rows,
        "goal": {"speedup": GOAL_SPEEDUP, "met": all(row["ratio"] >= GOAL_SPEEDUP for row in rows)},
        "total_seconds": round(total, 1),
    }
    save_results(args.out, "decoding", results, functools.partial(plot, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
