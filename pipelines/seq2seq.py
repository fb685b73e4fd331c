"""Seq2Seq date normalisation, end to end: generated data → model → training → evaluation → export.

A person types a date the way people write them ("Saturday, March 4th 1999", "2023년 1월 20일 금요일",
"20.01.2023"); the model answers the ISO date ("1999-03-04"). Characters in, characters out, with
attention; the exported SavedModel takes strings and returns strings, beam search included.

    python -m pipelines.seq2seq                              # quick profile (BiLSTM + attention, a few minutes)
    python -m pipelines.seq2seq --profile default            # the full profile (≥ 99.5% exact match)
    python -m pipelines.seq2seq --architecture transformer   # the Transformer variant
    python -m pipelines.seq2seq --dataset tfds --data-dir ~/tensorflow_datasets   # through the TFDS builder
"""

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from models.decoding import LENGTH_ALPHA, beam_search
from models.seq2seq import MODEL_BUILDERS, Seq2SeqStepDecoder, attention_weights
from models.text_graph import END_ID, OOV_ID, PAD_ID, START_ID, CharTokenizer
from pipelines import script
from pipelines.data import date_data, generated_tfds
from pipelines.data.date_data import DatePair
from pipelines.evaluation import plots, text_metrics
from pipelines.export import artifact as export
from pipelines.training.loop import TrainingConfig, fit, is_resuming, read_history

TASK = "seq2seq"
MAX_BEAM_WIDTH = 8
TOKENIZER_FILE = "tokenizer.json"

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "architecture": "lstm",
        "train_size": 20000,
        "embedding_dim": 32,
        "units": 64,
        "epochs": 6,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "decay_rate": 0.85,
        "patience": 3,
    },
    "default": {
        "architecture": "lstm",
        "train_size": 60000,
        "embedding_dim": 64,
        "units": 128,
        "epochs": 15,
        "batch_size": 64,
        "learning_rate": 2e-3,
        "decay_rate": 0.85,
        "patience": 3,
    },
}


@dataclass
class Seq2SeqConfig:
    dataset: str = "generated"
    data_dir: str | None = None
    train_size: int = 20000
    dev_size: int = 1000
    test_size: int = 2000
    architecture: str = "lstm"
    embedding_dim: int = 32
    units: int = 64  # LSTM units per encoder direction, or the Transformer's width
    dropout: float = 0.0
    max_input_length: int = 64
    max_output_length: int = 16
    beam_width: int = 3
    name: str = TASK
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            **{key: value for key, value in vars(self).items() if key != "training"},
            "training": self.training.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Seq2SeqConfig":
        plain = {key: value for key, value in values.items() if key != "training"}
        return cls(**plain, training=TrainingConfig(**values["training"]))


class Seq2SeqGraph(tf.Module):
    """The exported graph: a batch of strings in; decoded strings and their scores out."""

    def __init__(
        self, model: keras.Model, tokenizer: CharTokenizer, *, default_beam_width: int = 3, alpha: float = LENGTH_ALPHA
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder = Seq2SeqStepDecoder(model)
        self.default_beam_width = default_beam_width
        self.alpha = alpha

    def _translate(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        message = f"beam_width must be an integer from 1 to {MAX_BEAM_WIDTH}"
        checks = [
            tf.debugging.assert_greater_equal(beam_width, 1, message=message),
            tf.debugging.assert_less_equal(beam_width, MAX_BEAM_WIDTH, message=message),
        ]
        # Every op that uses the beam width waits for the checks, so a bad width fails with this message
        # rather than with whichever shape error an empty beam would hit first.
        with tf.control_dependencies(checks):
            beam_width = tf.identity(beam_width)
        result = beam_search(
            self.decoder,
            self.tokenizer.source_ids(texts),
            beam_width=beam_width,
            max_length=self.tokenizer.max_output_length + 1,  # + [END]
            start_id=START_ID,
            end_id=END_ID,
            pad_id=PAD_ID,
            banned_ids=(OOV_ID, START_ID),
            alpha=self.alpha,
        )
        beam_texts = self.tokenizer.target_text(result.tokens)
        return {
            "texts": beam_texts[:, 0],
            "scores": result.scores[:, 0],
            "log_probabilities": result.log_probabilities[:, 0],
            "beam_texts": beam_texts,
            "beam_scores": result.scores,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
    def translate_default(self, texts: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._translate(texts, tf.constant(self.default_beam_width))

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="texts"), tf.TensorSpec([], tf.int32, name="beam_width")]
    )
    def translate(self, texts: tf.Tensor, beam_width: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._translate(texts, beam_width)

    def signatures(self) -> dict[str, Any]:
        return {"serving_default": self.translate_default, "translate": self.translate}


# --- data ---------------------------------------------------------------------------------------


def load_data(config: Seq2SeqConfig) -> date_data.DateDataset:
    if config.dataset == "generated":
        return date_data.make_dataset(config.train_size, config.dev_size, config.test_size, seed=config.training.seed)
    if config.dataset == "tfds" or config.dataset.startswith("tfds:"):
        if not config.data_dir:
            raise ValueError("--dataset tfds needs --data-dir (the TFDS data_dir to build into or read from)")
        tfds_config = config.dataset.partition(":")[2] or "default"
        splits = {
            name: _pairs(date_data.load_tfds(split, data_dir=config.data_dir, config=tfds_config))
            for name, split in generated_tfds.SPLITS.items()
        }
        return date_data.DateDataset(**splits)
    raise ValueError(f"unknown dataset {config.dataset!r}; use generated, tfds or tfds:CONFIG")


def _pairs(dataset: tf.data.Dataset) -> list[DatePair]:
    return [
        DatePair(**{key: value.decode() for key, value in example.items()}) for example in dataset.as_numpy_iterator()
    ]


def make_tf_dataset(
    pairs: list[DatePair], tokenizer: CharTokenizer, *, batch_size: int, training: bool, seed: int = 0
) -> tf.data.Dataset:
    """((source_ids, decoder_ids), labels, weights) batches; weights are 0 on padding so it costs nothing."""

    def encode(batch: dict[str, tf.Tensor]):
        decoder_ids, labels = tokenizer.target_ids(batch["target"])
        return (tokenizer.source_ids(batch["text"]), decoder_ids), labels, tf.cast(labels != PAD_ID, tf.float32)

    dataset = date_data.as_tf_dataset(pairs).cache()
    if training:
        dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).map(encode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- model and training ---------------------------------------------------------------------------


def build_model(config: Seq2SeqConfig, tokenizer: CharTokenizer) -> keras.Model:
    sizes = {"source_vocab_size": tokenizer.source_vocab_size, "target_vocab_size": tokenizer.target_vocab_size}
    if config.architecture == "lstm":
        return MODEL_BUILDERS["lstm"](
            **sizes,
            embedding_dim=config.embedding_dim,
            encoder_units=config.units,
            attention_units=config.units,
            dropout=config.dropout,
        )
    return MODEL_BUILDERS["transformer"](
        **sizes,
        depth=config.units,
        feed_forward_units=2 * config.units,
        max_source_length=config.max_input_length,
        max_target_length=config.max_output_length + 2,
        dropout=config.dropout,
    )


def fit_tokenizer(config: Seq2SeqConfig, dataset: date_data.DateDataset) -> CharTokenizer:
    return CharTokenizer.fit(
        [pair.text for pair in dataset.train],
        [pair.target for pair in dataset.train],
        max_input_length=config.max_input_length,
        max_output_length=config.max_output_length,
    )


def train(
    config: Seq2SeqConfig, dataset: date_data.DateDataset, run_dir: Path, extra_callbacks=()
) -> tuple[keras.Model, CharTokenizer]:
    training = config.training
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = run_dir / TOKENIZER_FILE
    # A resumed run must keep the vocabulary its checkpoint was trained with.
    if is_resuming(run_dir) and tokenizer_path.exists():
        tokenizer = CharTokenizer.from_config(json.loads(tokenizer_path.read_text()))
    else:
        tokenizer = fit_tokenizer(config, dataset)
        tokenizer_path.write_text(json.dumps(tokenizer.get_config(), ensure_ascii=False, indent=1))
    (run_dir / "run.json").write_text(
        json.dumps(
            {"family": TASK, "config": config.to_dict(), "dataset": dataset.summary()}, indent=2, ensure_ascii=False
        )
    )
    model = fit(
        lambda: build_model(config, tokenizer),
        make_tf_dataset(dataset.train, tokenizer, batch_size=training.batch_size, training=True, seed=training.seed),
        make_tf_dataset(dataset.dev, tokenizer, batch_size=256, training=False),
        config=training,
        run_dir=run_dir,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
        extra_callbacks=list(extra_callbacks),
    )
    model.save(run_dir / "model.keras")
    return model, tokenizer


def load_run(run_dir: Path) -> tuple[Seq2SeqConfig, keras.Model, CharTokenizer]:
    config = Seq2SeqConfig.from_dict(json.loads((run_dir / "run.json").read_text())["config"])
    tokenizer = CharTokenizer.from_config(json.loads((run_dir / TOKENIZER_FILE).read_text()))
    return config, keras.saving.load_model(run_dir / "model.keras"), tokenizer


# --- evaluation -----------------------------------------------------------------------------------


def decode(
    graph: Seq2SeqGraph, texts: list[str], *, beam_width: int, batch_size: int = 256, progress: str | None = None
) -> tuple[list[str], list[float]]:
    """Run the exported graph's own decoding over `texts`; returns (outputs, scores)."""
    outputs, scores = [], []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=progress, disable=progress is None, unit="batch"):
        result = graph.translate(tf.constant(texts[start : start + batch_size]), tf.constant(beam_width))
        outputs += [text.decode() for text in result["texts"].numpy()]
        scores += result["scores"].numpy().tolist()
    return outputs, scores


def text_report(predictions: list[str], references: list[str]) -> dict[str, float]:
    bleu = text_metrics.corpus_bleu(predictions, references, tokenize="char")
    return {
        "exact_match": text_metrics.exact_match(predictions, references),
        "character_error_rate": text_metrics.character_error_rate(predictions, references),
        "bleu": bleu.score,
    }


def exact_match_by(pairs: list[DatePair], predictions: list[str], key: str) -> dict[str, dict[str, float]]:
    """Exact match per locale or per style: where the model still fails (error analysis)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for pair, prediction in zip(pairs, predictions):
        groups[getattr(pair, key)].append(prediction == pair.target)
    return {name: {"exact_match": float(np.mean(hits)), "count": len(hits)} for name, hits in sorted(groups.items())}


def evaluate(
    model: keras.Model, tokenizer: CharTokenizer, dataset: date_data.DateDataset, run_dir: Path, *, beam_width: int = 3
) -> dict[str, Any]:
    """Exact match, CER and BLEU on every split (beam search), greedy vs beam on test, plots; writes `<run_dir>/evaluation/`."""
    out = run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    graph = Seq2SeqGraph(model, tokenizer, default_beam_width=beam_width)
    report: dict[str, Any] = {"beam_width": beam_width}
    predictions: dict[str, list[str]] = {}
    for split in ("train", "dev", "test"):
        pairs = getattr(dataset, split)[:5000] if split == "train" else getattr(dataset, split)
        predictions[split], _ = decode(
            graph, [pair.text for pair in pairs], beam_width=beam_width, progress=f"decoding {split}"
        )
        report[split] = text_report(predictions[split], [pair.target for pair in pairs])
    greedy, _ = decode(graph, [pair.text for pair in dataset.test], beam_width=1, progress="decoding test (greedy)")
    report["test_greedy"] = text_report(greedy, [pair.target for pair in dataset.test])
    report["test_by_locale"] = exact_match_by(dataset.test, predictions["test"], "locale")
    report["test_by_style"] = exact_match_by(dataset.test, predictions["test"], "style")
    report["test_errors"] = [
        {"text": pair.text, "target": pair.target, "prediction": prediction, "locale": pair.locale, "style": pair.style}
        for pair, prediction in zip(dataset.test, predictions["test"])
        if prediction != pair.target
    ][:50]
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plots.plot_learning_curves(read_history(run_dir), out / "learning_curves.png")
    plots.plot_attention_maps(
        attention_samples(model, tokenizer, graph, heat_map_texts(dataset.test)), out / "attention.png"
    )
    return report


def heat_map_texts(pairs: list[DatePair], count: int = 6) -> list[str]:
    """One test input per locale, in a fixed order, so the plots show the range of formats."""
    first_by_locale: dict[str, str] = {}
    for pair in pairs:
        first_by_locale.setdefault(pair.locale, pair.text)
    return list(first_by_locale.values())[:count]


def attention_samples(
    model: keras.Model, tokenizer: CharTokenizer, graph: Seq2SeqGraph, texts: list[str]
) -> list[tuple[str, str, np.ndarray]]:
    """(normalised input, decoded output, weights (output chars × input chars)) for the attention plots."""
    outputs = graph.translate_default(tf.constant(texts))["texts"]
    source_ids = tokenizer.source_ids(tf.constant(texts))
    decoder_ids, _ = tokenizer.target_ids(outputs)
    weights = attention_weights(model, source_ids, decoder_ids).numpy()
    samples = []
    for row, (source, output) in enumerate(zip(source_ids.numpy(), outputs.numpy())):
        input_chars = [tokenizer.source_chars[i - 2] if i > 1 else "?" for i in source if i != PAD_ID]
        text = output.decode()
        # Row t of the teacher-forced pass predicts output character t.
        samples.append(("".join(input_chars), text, weights[row, : len(text), : len(input_chars)]))
    return samples


# --- export ---------------------------------------------------------------------------------------


def export_model(
    model: keras.Model,
    tokenizer: CharTokenizer,
    report: dict[str, Any],
    config: Seq2SeqConfig,
    root: Path,
    dataset_summary: dict[str, Any],
) -> Path:
    graph = Seq2SeqGraph(model, tokenizer, default_beam_width=config.beam_width)
    metadata = {
        "task": TASK,
        "input": {
            "max_length": config.max_input_length,
            "description": "human-written dates in any language or format; longer texts are refused by the server and truncated by the graph",
        },
        "output": {"max_length": config.max_output_length, "description": "ISO 8601 dates (YYYY-MM-DD)"},
        "decoding": {
            "default_beam_width": config.beam_width,
            "max_beam_width": MAX_BEAM_WIDTH,
            "length_alpha": LENGTH_ALPHA,
        },
        "signatures": {"texts": "serving_default", "texts_beam_width": "translate"},
        "outputs": ["texts", "scores", "log_probabilities", "beam_texts", "beam_scores"],
        "metrics": {
            "test_exact_match": report["test"]["exact_match"],
            "test_character_error_rate": report["test"]["character_error_rate"],
            "test_bleu": report["test"]["bleu"],
            "test_greedy_exact_match": report["test_greedy"]["exact_match"],
            "dev_exact_match": report["dev"]["exact_match"],
        },
        "training": config.to_dict(),
        "dataset": dataset_summary,
    }
    return export.export_artifact(graph, signatures=graph.signatures(), root=root, name=config.name, metadata=metadata)


def train_and_evaluate(
    config: Seq2SeqConfig, run_dir: Path
) -> tuple[keras.Model, CharTokenizer, date_data.DateDataset, dict[str, Any]]:
    dataset = load_data(config)
    print(f"dataset: {dataset.summary()['sizes']} pairs")
    model, tokenizer = train(config, dataset, run_dir)
    report = evaluate(model, tokenizer, dataset, run_dir, beam_width=config.beam_width)
    test = report["test"]
    print(
        f"test exact match {test['exact_match']:.4f}, CER {test['character_error_rate']:.4f}, BLEU {test['bleu']:.2f} (beam {config.beam_width})"
    )
    print(f"checkpoints, logs, history and plots in {run_dir}")
    return model, tokenizer, dataset, report


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-evaluate a finished training run; returns the headline figures."""
    config, model, tokenizer = load_run(run_dir)
    report = evaluate(model, tokenizer, load_data(config), run_dir, beam_width=config.beam_width)
    return {key: report[key] for key in ("test", "test_greedy", "dev")}


def export_run(run_dir: Path, artifacts: Path) -> Path:
    """Export a finished training run as the next artifact version (its saved evaluation, else a fresh one)."""
    config, model, tokenizer = load_run(run_dir)
    dataset = load_data(config)
    report = script.saved_or_fresh_report(
        run_dir, lambda: evaluate(model, tokenizer, dataset, run_dir, beam_width=config.beam_width)
    )
    return export_model(model, tokenizer, report, config, artifacts, dataset.summary())


def run(config: Seq2SeqConfig, *, run_dir: Path, artifacts: Path, register: bool = True) -> Path:
    """Train, evaluate, export and register one Seq2Seq model; returns the new artifact folder."""
    model, tokenizer, dataset, report = train_and_evaluate(config, run_dir)
    return script.publish(
        export_model(model, tokenizer, report, config, artifacts, dataset.summary()), register=register
    )


# --- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="generated",
        help="generated (in memory) | tfds | tfds:CONFIG — the TFDS builder in --data-dir, config default or small (default: %(default)s)",
    )
    parser.add_argument("--data-dir", help="TFDS data_dir for --dataset tfds (built there on first use, no downloads)")
    parser.add_argument("--train-size", type=int, help="generated training pairs")
    parser.add_argument("--dev-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument(
        "--architecture",
        choices=sorted(MODEL_BUILDERS),
        help="lstm (BiLSTM encoder, Bahdanau attention) or transformer",
    )
    parser.add_argument("--embedding-dim", type=int, help="character embedding size (LSTM)")
    parser.add_argument("--units", type=int, help="LSTM units per encoder direction, or the Transformer's width")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument(
        "--beam-width",
        type=int,
        default=3,
        choices=range(1, MAX_BEAM_WIDTH + 1),
        metavar=f"1..{MAX_BEAM_WIDTH}",
        help="default beam width of the exported model (default: %(default)s)",
    )
    script.add_training_arguments(parser, profiles=PROFILES, name=TASK)


def config_from_args(args: argparse.Namespace) -> Seq2SeqConfig:
    preset = PROFILES[args.profile]
    return Seq2SeqConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        train_size=script.preset_value(args, preset, "train_size"),
        dev_size=args.dev_size,
        test_size=args.test_size,
        architecture=script.preset_value(args, preset, "architecture"),
        embedding_dim=script.preset_value(args, preset, "embedding_dim"),
        units=script.preset_value(args, preset, "units"),
        dropout=args.dropout,
        beam_width=args.beam_width,
        name=args.name,
        training=script.training_config(args, preset),
    )


def main(argv: list[str] | None = None) -> int:
    return script.pipeline_main(
        argv,
        prog="python -m pipelines.seq2seq",
        description=__doc__,
        add_arguments=add_arguments,
        config_from_args=config_from_args,
        run=run,
    )


if __name__ == "__main__":
    sys.exit(main())
