"""TFDS builders for the datasets this project generates itself: nothing is downloaded.

A family's data module subclasses `GeneratedDatasetBuilder`, says how to generate its splits and how
one item becomes a TFDS example, and lists its configs (split sizes and a seed). `load_split` then
prepares the dataset into a local `data_dir` on first use and reads it back with `tfds.load`.
"""

import abc
import argparse
import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any, ClassVar

import tensorflow as tf
import tensorflow_datasets as tfds

# The project's split names and TFDS's: the dev split is TFDS's "validation".
SPLITS = {"train": "train", "dev": "validation", "test": "test"}


@dataclasses.dataclass(eq=False)  # TFDS's BuilderConfig is a mutable dataclass; keep its identity equality
class SplitSizes(tfds.core.BuilderConfig):
    train_size: int = 0
    dev_size: int = 0
    test_size: int = 0
    seed: int = 0


class GeneratedDatasetBuilder(tfds.core.GeneratorBasedBuilder):
    """Splits train, validation (the project's dev split) and test, in generation order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    DEFAULT_CONFIG_NAME = "default"

    def __init_subclass__(cls, **kwargs):
        # TFDS 4.9 finds a builder's file through `importlib_resources`, which it only installs on
        # Python < 3.9, so preparing fails on 3.11 (tensorflow/datasets#11212). Naming the file avoids that.
        cls.code_path = tfds.core.Path(inspect.getfile(cls))
        super().__init_subclass__(**kwargs)

    @abc.abstractmethod
    def generate(self, config: Any) -> Any:
        """The dataset for `config`: an object with `train`, `dev` and `test` lists."""

    @abc.abstractmethod
    def example(self, item: Any) -> dict[str, Any]:
        """One generated item as a TFDS example matching `_info()`'s features."""

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        data = self.generate(self.builder_config)
        return {tfds_name: self._generate_examples(getattr(data, name)) for name, tfds_name in SPLITS.items()}

    def _generate_examples(self, items: list) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, item in enumerate(items):
            yield index, self.example(item)


def prepare(builder: type[GeneratedDatasetBuilder], data_dir: str, config: str = "default") -> tfds.core.DatasetBuilder:
    """Generate the dataset into `data_dir` unless it is already there."""
    prepared = tfds.builder(f"{builder.name}/{config}", data_dir=data_dir)
    prepared.download_and_prepare()
    return prepared


def load_split(
    builder: type[GeneratedDatasetBuilder], split: str, *, data_dir: str, config: str = "default"
) -> tf.data.Dataset:
    """`tfds.load` of one split, preparing the dataset into `data_dir` first if needed."""
    prepare(builder, data_dir, config)
    return tfds.load(f"{builder.name}/{config}", split=split, data_dir=data_dir, download=False)


def add_cli_arguments(
    parser: argparse.ArgumentParser, builder: type[GeneratedDatasetBuilder], *, samples_help: str
) -> None:
    """A data module's command line: --samples N (look at the data) or --build-tfds DIR, with --config and --seed."""
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--samples", type=int, metavar="N", help=samples_help)
    action.add_argument("--build-tfds", metavar="DATA_DIR", help=f"prepare the TFDS dataset '{builder.name}' there")
    configs = "; ".join(f"{config.name}: {config.description.rstrip('.')}" for config in builder.BUILDER_CONFIGS)
    parser.add_argument(
        "--config",
        choices=[config.name for config in builder.BUILDER_CONFIGS],
        default="default",
        help=f"TFDS config for --build-tfds ({configs}) (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed for --samples; TFDS configs fix their own (default: %(default)s)",
    )


def build_and_report(builder: type[GeneratedDatasetBuilder], data_dir: str, config: str) -> int:
    """--build-tfds: prepare the dataset and print its split sizes."""
    prepared = prepare(builder, data_dir, config)
    sizes = {name: split.num_examples for name, split in prepared.info.splits.items()}
    print(f"{builder.name}/{config} in {prepared.data_dir}: {sizes}")
    return 0
