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
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from models.date_constraint import IsoDateConstraint
from models.decoding import LENGTH_ALPHA
from models.seq2seq import MODEL_BUILDERS, attention_weights
from models.text_graph import END_ID, PAD_ID, CharTokenizer
from pipelines.data import date_data, generated_tfds
from pipelines.data.date_data import DatePair
from pipelines.evaluation import classification, plots, text_metrics
from pipelines.export.seq2seq_graph import MAX_BEAM_WIDTH, Seq2SeqGraph
from pipelines.export.warmup import WARMUP_EXAMPLES
from pipelines.family import Config, Family, RunFolder, Trained
from pipelines.training import flags
from pipelines.training.loop import TrainingConfig, fit, read_history
from pipelines.training.search_space import Choice, LogUniform, SearchSpace, Uniform
from pipelines.validation.scoring import HeldOut
from serving.contract import ArtifactMetadata, Decoding, Role, Task, TextSpec

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "architecture": "lstm",
        "train_size": 20000,
        "embedding_dim": 32,
        "units": 64,
        # Four cosine epochs match six exponentially decayed ones (test exact match 0.9987 against 0.9983) in
        # two thirds of the time; four exponential epochs stop while the rate is still high (0.9965).
        "epochs": 4,
        "batch_size": 64,
        "learning_rate": 3e-3,
        "schedule": "cosine",
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

# `modelservice tune seq2seq`: judged by exact match on the dev split as a client is answered (beam search at
# the config's beam width, which is a decoding choice rather than a training one, so it is not searched).
SEARCH_SPACE = SearchSpace(
    objective="dev_exact_match",
    dimensions=(
        LogUniform("learning_rate", low=3e-4, high=1e-2),
        Uniform("dropout", low=0.0, high=0.3, step=0.1),
        Choice("batch_size", values=(32, 64, 128)),
        Choice("architecture", values=tuple(sorted(MODEL_BUILDERS))),
        Choice("units", values=(32, 64, 128)),
        Choice("embedding_dim", values=(16, 32, 64), when=("architecture", ("lstm",))),
    ),
)


@dataclass
class Seq2SeqConfig(Config):
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
    output_constraint: str = "iso-date"  # "iso-date": decoding writes only real dates; "none": any string
    non_date_share: float = date_data.NON_DATE_SHARE  # non-dates added to each split, as a share of its dates
    date_threshold: float | None = None  # the least date_probability answered as a date; None: calibrated on dev
    name: str = "seq2seq"
    training: TrainingConfig = field(default_factory=TrainingConfig)


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


@dataclass(frozen=True)
class Decoded:
    """What the exported graph answered for a list of texts, one entry per text."""

    texts: list[str]  # the best hypothesis: with the date constraint, a date even where the input is none
    scores: list[float]
    is_date: list[bool]
    date_probability: list[float]

    @property
    def answers(self) -> list[str]:
        """What a client is told: the date, or `NOT_A_DATE` (empty) where the graph says it is not one."""
        return [text if is_date else date_data.NOT_A_DATE for text, is_date in zip(self.texts, self.is_date)]


def decode(
    graph: Seq2SeqGraph, texts: list[str], *, beam_width: int, batch_size: int = 256, progress: str | None = None
) -> Decoded:
    """Run the exported graph's own decoding over `texts`."""
    columns: dict[str, list] = {name: [] for name in ("texts", "scores", "is_date", "date_probability")}
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=progress, disable=progress is None, unit="batch"):
        result = graph.translate(tf.constant(texts[start : start + batch_size]), tf.constant(beam_width))
        for name, values in columns.items():
            values += result[name].numpy().tolist()
    return Decoded(
        texts=[text.decode() for text in columns["texts"]],
        scores=columns["scores"],
        is_date=columns["is_date"],
        date_probability=columns["date_probability"],
    )


def text_report(predictions: list[str], references: list[str]) -> dict[str, float]:
    bleu = text_metrics.corpus_bleu(predictions, references, tokenize="char")
    return {
        "exact_match": text_metrics.exact_match(predictions, references),
        "character_error_rate": text_metrics.character_error_rate(predictions, references),
        "bleu": bleu.score,
    }


def exact_match_by(
    pairs: list[DatePair], predictions: list[str], key: Callable[[DatePair], str]
) -> dict[str, dict[str, float]]:
    """Exact match per group (a locale, a style): where the model still fails (error analysis)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for pair, prediction in zip(pairs, predictions):
        groups[key(pair)].append(prediction == pair.target)
    return {name: {"exact_match": float(np.mean(hits)), "count": len(hits)} for name, hits in sorted(groups.items())}


def served_graph(
    model: keras.Model, tokenizer: CharTokenizer, config: Seq2SeqConfig, calibration: Sequence[DatePair] = ()
) -> Seq2SeqGraph:
    """The exported graph: the run's default beam width, the date constraint unless it is turned off, and
    the "is a date" threshold: the config's, or calibrated on `calibration` (the dev split) when it holds dates
    and non-dates."""
    constraint = (
        IsoDateConstraint(
            tokenizer.target_vocabulary, end_id=END_ID, min_year=date_data.MIN_YEAR, max_year=date_data.MAX_YEAR
        )
        if config.output_constraint == "iso-date"
        else None
    )
    graph = Seq2SeqGraph(model, tokenizer, default_beam_width=config.beam_width, constraint=constraint)
    if config.date_threshold is not None:
        graph.date_threshold.assign(config.date_threshold)
    elif len({date_data.is_date(pair) for pair in calibration}) == 2:
        decoded = decode(graph, [pair.text for pair in calibration], beam_width=config.beam_width)
        positives = [date_data.is_date(pair) for pair in calibration]
        graph.date_threshold.assign(classification.calibrate_threshold(decoded.date_probability, positives))
    return graph


# Training pairs decoded for the report: their exact match beside dev's tells over-fitting from under-fitting,
# and 2,000 pin it to about a percent for a fraction of decoding them all.
TRAIN_REPORT_SIZE = 2000


def evaluate_model(
    model: keras.Model,
    tokenizer: CharTokenizer,
    dataset: date_data.DateDataset,
    run_dir: Path,
    config: Seq2SeqConfig,
    graph: Seq2SeqGraph | None = None,
) -> dict[str, Any]:
    """Exact match, CER and BLEU on every split as a client is answered (the date, or "not a date"), on the
    test split's dates alone, greedy vs beam on test, "is a date" precision and recall, plots.

    Writes `<run_dir>/evaluation/`. `graph`: the served graph when the caller has built it already."""
    out = RunFolder(run_dir).evaluation
    graph = graph or served_graph(model, tokenizer, config, calibration=dataset.dev)
    beam_width = config.beam_width
    threshold = float(graph.date_threshold.numpy())
    report: dict[str, Any] = {"beam_width": beam_width, "output_constraint": config.output_constraint}
    decoded: dict[str, Decoded] = {}
    for split in date_data.SPLITS:
        pairs = getattr(dataset, split)[:TRAIN_REPORT_SIZE] if split == "train" else getattr(dataset, split)
        decoded[split] = decode(
            graph, [pair.text for pair in pairs], beam_width=beam_width, progress=f"decoding {split}"
        )
        report[split] = text_report(decoded[split].answers, [pair.target for pair in pairs])
    test_dates = [(pair, text) for pair, text in zip(dataset.test, decoded["test"].texts) if date_data.is_date(pair)]
    report["test_dates"] = text_report([text for _, text in test_dates], [pair.target for pair, _ in test_dates])
    greedy = decode(graph, [pair.text for pair in dataset.test], beam_width=1, progress="decoding test (greedy)")
    report["test_greedy"] = text_report(greedy.answers, [pair.target for pair in dataset.test])
    report["is_date"] = {
        split: classification.detection_report(
            decoded[split].date_probability, [date_data.is_date(pair) for pair in getattr(dataset, split)], threshold
        )
        for split in ("dev", "test")
    }
    answers = decoded["test"].answers
    report["test_by_locale"] = exact_match_by(dataset.test, answers, lambda pair: pair.locale)
    report["test_by_style"] = exact_match_by(dataset.test, answers, lambda pair: pair.style)
    report["unseen_styles"] = unseen_styles_report(graph, len(test_dates), config)
    report["test_errors"] = [
        {
            "text": pair.text,
            "target": pair.target,
            "prediction": answer,
            "best_guess": guess,
            "date_probability": probability,
            "locale": pair.locale,
            "style": pair.style,
        }
        for pair, answer, guess, probability in zip(
            dataset.test, answers, decoded["test"].texts, decoded["test"].date_probability
        )
        if answer != pair.target
    ][:50]
    RunFolder(run_dir).save_report(report)
    plots.plot_learning_curves(read_history(run_dir), out / "learning_curves.png")
    plots.plot_attention_maps(
        attention_samples(model, tokenizer, graph, heat_map_texts(dataset.test)), out / "attention.png"
    )
    plots.plot_score_separation(
        decoded["test"].date_probability,
        [date_data.is_date(pair) for pair in dataset.test],
        threshold,
        out / "is_date.png",
        labels=("not a date", "a date"),
        xlabel="date_probability (log scale)",
    )
    return report


def unseen_styles_report(graph: Seq2SeqGraph, count: int, config: Seq2SeqConfig) -> dict[str, Any]:
    """Exact match on `count` test dates written in the styles no split holds (`date_data.HELD_OUT_STYLES`),
    overall and per style: how the model reads a way of writing a date it has not seen."""
    pairs = date_data.unseen_style_pairs(count, seed=config.training.seed)
    answers = decode(graph, [pair.text for pair in pairs], beam_width=config.beam_width).answers
    return {
        **text_report(answers, [pair.target for pair in pairs]),
        "by_style": exact_match_by(pairs, answers, lambda pair: f"{pair.locale} {pair.style}"),
        "errors": [
            {"text": pair.text, "target": pair.target, "prediction": answer, "style": f"{pair.locale} {pair.style}"}
            for pair, answer in zip(pairs, answers)
            if answer != pair.target
        ][:30],
    }


def heat_map_texts(pairs: list[DatePair], count: int = 6) -> list[str]:
    """One test input per locale, in a fixed order, so the plots show the range of formats."""
    first_by_locale: dict[str, str] = {}
    for pair in filter(date_data.is_date, pairs):
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


class Seq2SeqFamily(Family[Seq2SeqConfig, date_data.DateDataset, CharTokenizer]):
    name = "seq2seq"
    config_type = Seq2SeqConfig
    profiles = PROFILES
    quality_floor = 0.98  # 0.999-1.0 exact match in the quick profile, per style
    group_floor = 0.9
    description = __doc__
    search_space = SEARCH_SPACE
    side_file = "tokenizer.json"  # a resumed run must keep the vocabulary its checkpoint was trained with

    def load_data(self, config: Seq2SeqConfig) -> date_data.DateDataset:
        if config.dataset == "generated":
            return date_data.make_dataset(
                config.train_size,
                config.dev_size,
                config.test_size,
                seed=config.training.seed,
                non_date_share=config.non_date_share,
            )
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

    def fit_preprocessing(self, config: Seq2SeqConfig, data: date_data.DateDataset) -> CharTokenizer:
        return CharTokenizer.fit(
            [pair.text for pair in data.train],
            [pair.target for pair in data.train],
            max_input_length=config.max_input_length,
            max_output_length=config.max_output_length,
        )

    def dump_fitted(self, fitted: CharTokenizer) -> dict[str, Any]:
        return fitted.get_config()

    def load_fitted(self, values: dict[str, Any]) -> CharTokenizer:
        return CharTokenizer.from_config(values)

    def build_model(self, config: Seq2SeqConfig, data: date_data.DateDataset, fitted: CharTokenizer) -> keras.Model:
        sizes = {"source_vocab_size": fitted.source_vocab_size, "target_vocab_size": fitted.target_vocab_size}
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

    def fit(
        self,
        config: Seq2SeqConfig,
        data: date_data.DateDataset,
        fitted: CharTokenizer,
        run_dir: Path,
        extra_callbacks: Sequence = (),
    ) -> keras.Model:
        training = config.training
        return fit(
            lambda: self.build_model(config, data, fitted),
            make_tf_dataset(data.train, fitted, batch_size=training.batch_size, training=True, seed=training.seed),
            make_tf_dataset(list(filter(date_data.is_taught, data.dev)), fitted, batch_size=256, training=False),
            config=training,
            run_dir=run_dir,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
            extra_callbacks=list(extra_callbacks),
        )

    def evaluate(self, trained: Trained, data: date_data.DateDataset, run_dir: Path) -> dict[str, Any]:
        graph = self.graph(trained, data)
        return evaluate_model(trained.model, trained.fitted, data, run_dir, trained.config, graph)

    def dev_score(self, trained: Trained, data: date_data.DateDataset) -> float:
        graph = self.graph(trained, data)
        texts = [pair.text for pair in data.dev]
        answers = decode(graph, texts, beam_width=trained.config.beam_width, progress="decoding dev").answers
        return text_report(answers, [pair.target for pair in data.dev])["exact_match"]

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        return {key: report[key] for key in ("test", "test_greedy", "dev")}

    def describe(self, report: dict[str, Any]) -> str:
        test, is_date = report["test"], report["is_date"]["test"]
        return (
            f"test exact match {test['exact_match']:.4f}, CER {test['character_error_rate']:.4f}, "
            f"BLEU {test['bleu']:.2f} (beam {report['beam_width']}); "
            f'"is a date": precision {is_date["precision"]:.4f}, recall {is_date["recall"]:.4f} '
            f"at date_probability >= {is_date['threshold']:.3g}; "
            f"exact match on styles never trained on {report['unseen_styles']['exact_match']:.4f}"
        )

    def served_graph(self, trained: Trained, data: date_data.DateDataset) -> Seq2SeqGraph:
        return served_graph(trained.model, trained.fitted, trained.config, calibration=data.dev)

    def warmup_examples(self, data: date_data.DateDataset) -> list:
        return [pair.text for pair in data.test[:WARMUP_EXAMPLES]]

    def held_out(self, data: date_data.DateDataset) -> HeldOut:
        pairs = data.test
        return HeldOut(
            tuple(pair.text for pair in pairs),
            tuple(pair.target for pair in pairs),
            groups=tuple(pair.style for pair in pairs),
        )

    def artifact_metadata(
        self, trained: Trained, data: date_data.DateDataset, report: dict[str, Any]
    ) -> ArtifactMetadata:
        config = trained.config
        return ArtifactMetadata(
            task=Task.SEQ2SEQ,
            family=self.name,
            name=config.name,
            input=TextSpec(
                max_length=config.max_input_length,
                description="human-written dates in any language or format; "
                "longer texts are refused by the server and truncated by the graph",
            ),
            output=TextSpec(max_length=config.max_output_length, description="ISO 8601 dates (YYYY-MM-DD)"),
            decoding=Decoding(
                default_beam_width=config.beam_width,
                max_beam_width=MAX_BEAM_WIDTH,
                length_alpha=LENGTH_ALPHA,
                output_constraint=config.output_constraint,
                date_threshold=report["is_date"]["test"]["threshold"],
            ),
            signatures={
                Role.DEFAULT: "serving_default",
                Role.TEXTS: "translate",
                Role.ATTENTION: "translate_attention",
            },
            outputs=Seq2SeqGraph.OUTPUTS,
            metrics={
                "test_exact_match": report["test"]["exact_match"],
                "test_character_error_rate": report["test"]["character_error_rate"],
                "test_bleu": report["test"]["bleu"],
                "test_greedy_exact_match": report["test_greedy"]["exact_match"],
                "dev_exact_match": report["dev"]["exact_match"],
                "test_is_date_precision": report["is_date"]["test"]["precision"],
                "test_is_date_recall": report["is_date"]["test"]["recall"],
                "unseen_styles_exact_match": report["unseen_styles"]["exact_match"],
            },
            training=config.to_dict(),
            dataset=data.summary(),
        )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--dataset",
            default="generated",
            help="generated (in memory) | tfds | tfds:CONFIG — the TFDS builder in --data-dir, "
            "config default or small (default: %(default)s)",
        )
        parser.add_argument(
            "--data-dir", help="TFDS data_dir for --dataset tfds (built there on first use, no downloads)"
        )
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
            "--date-threshold",
            type=flags.threshold,
            help="the least date_probability the exported model answers as a date, 0-1 (default: the one that "
            "decides the most dev examples right)",
        )
        parser.add_argument(
            "--non-date-share",
            type=float,
            default=date_data.NON_DATE_SHARE,
            help="texts that are not dates (words, numbers, partial and impossible dates) added to each "
            'split, as a share of its dates; the model learns to answer them "not a date" (default: %(default)s)',
        )
        parser.add_argument(
            "--beam-width",
            type=int,
            default=3,
            choices=range(1, MAX_BEAM_WIDTH + 1),
            metavar=f"1..{MAX_BEAM_WIDTH}",
            help="default beam width of the exported model (default: %(default)s)",
        )
        parser.add_argument(
            "--output-constraint",
            choices=("iso-date", "none"),
            default="iso-date",
            help="iso-date: decoding can only write real dates YYYY-MM-DD (years "
            f"{date_data.MIN_YEAR}-{date_data.MAX_YEAR}); none: any string (default: %(default)s)",
        )
        flags.add_training_arguments(parser, profiles=self.profiles, name=self.name)

    def config_from_args(self, args: argparse.Namespace) -> Seq2SeqConfig:
        preset = self.profiles[args.profile]
        return Seq2SeqConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            train_size=flags.preset_value(args, preset, "train_size"),
            dev_size=args.dev_size,
            test_size=args.test_size,
            architecture=flags.preset_value(args, preset, "architecture"),
            embedding_dim=flags.preset_value(args, preset, "embedding_dim"),
            units=flags.preset_value(args, preset, "units"),
            dropout=args.dropout,
            non_date_share=args.non_date_share,
            date_threshold=args.date_threshold,
            beam_width=args.beam_width,
            output_constraint=args.output_constraint,
            name=args.name,
            training=flags.training_config(args, preset),
        )


FAMILY = Seq2SeqFamily()

if __name__ == "__main__":
    sys.exit(FAMILY.main())
