"""In-graph text preprocessing for the character-level Seq2Seq models.

The vocabulary lives in `StringLookup` layers inside the exported SavedModel, so a client sends plain
strings and receives strings: splitting into characters, lookup, padding and turning ids back into
text all happen in the graph. Any Unicode input is accepted; characters never seen in training map to
the out-of-vocabulary id.
"""

import functools
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

import keras
import tensorflow as tf

PAD, OOV, START, END = "", "[UNK]", "[START]", "[END]"
PAD_ID, OOV_ID = 0, 1
# StringLookup puts the mask token at 0 and the OOV token at 1, then the vocabulary in order.
START_ID, END_ID = 2, 3


UNMAPPED = "\uffff"  # a noncharacter: what the compatibility table answers for a character NFKC keeps


@functools.cache
def compatibility_mappings() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every character that NFKC replaces on its own, and its replacement, from Python's Unicode database:
    full-width digits and punctuation (２０２２／４／４), the ideographic space, circled and superscript
    digits (①, ²), ligatures (ﬁ), half-width katakana (ｶ), compatibility ideographs."""
    pairs = [
        (char, normalized)
        for char in map(chr, range(sys.maxunicode + 1))
        if not 0xD800 <= ord(char) <= 0xDFFF and (normalized := unicodedata.normalize("NFKC", char)) != char
    ]
    return tuple(char for char, _ in pairs), tuple(normalized for _, normalized in pairs)


def compatibility_table() -> tf.lookup.StaticHashTable:
    """The graph's copy of `compatibility_mappings`: character → its NFKC replacement, else `UNMAPPED`."""
    keys, values = compatibility_mappings()
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(list(keys), list(values)), UNMAPPED)


def normalize_text(texts: tf.Tensor, compatibility: tf.lookup.StaticHashTable) -> tf.Tensor:
    """Each character replaced as NFKC replaces it alone (`compatibility_table`), lower-case (Unicode), runs
    of whitespace collapsed, stripped: width, case and spacing carry no date information. (What this does
    not do of NFKC is composing a letter with a combining accent typed after it.)"""

    def replace(chars: tf.Tensor) -> tf.Tensor:
        replacements = compatibility.lookup(chars)
        return tf.where(tf.equal(replacements, UNMAPPED), chars, replacements)

    chars = tf.ragged.map_flat_values(replace, split_characters(texts))
    texts = tf.strings.lower(tf.strings.reduce_join(chars, axis=-1), encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"\s+", " ")
    return tf.strings.strip(texts)


def split_characters(texts: tf.Tensor) -> tf.RaggedTensor:
    # Invalid UTF-8 (possible through TF Serving's base64 strings) becomes U+FFFD instead of an error.
    return tf.strings.unicode_split(texts, "UTF-8", errors="replace")


def character_counts(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(text)
    return counts


def vocabulary_from(texts: Iterable[str], *, min_count: int = 1) -> list[str]:
    """Characters seen at least `min_count` times, most frequent first (ties in code-point order)."""
    counts = character_counts(texts)
    return sorted(
        (char for char, count in counts.items() if count >= min_count), key=lambda char: (-counts[char], char)
    )


def _padded(rows: tf.RaggedTensor, padding: Any) -> tf.Tensor:
    """(N, None) ragged → (N, T) dense, right-padded; T ≥ 1 so an all-empty batch still has a time axis."""
    width = tf.maximum(rows.bounding_shape(axis=1, out_type=tf.int64), 1)
    return rows.to_tensor(default_value=padding, shape=tf.stack([rows.nrows(), width]))


class CharTokenizer(tf.Module):
    """Strings ⇄ padded character ids for the source (typed text) and the target (the model's output)."""

    def __init__(
        self, source_chars: list[str], target_chars: list[str], *, max_input_length: int, max_output_length: int
    ):
        super().__init__()
        self.source_chars = list(source_chars)
        self.target_chars = list(target_chars)
        self.max_input_length = max_input_length
        self.max_output_length = max_output_length
        self.compatibility = compatibility_table()
        self.source_lookup = keras.layers.StringLookup(vocabulary=self.source_chars, mask_token=PAD, oov_token=OOV)
        target_vocabulary = [START, END, *self.target_chars]
        self.target_lookup = keras.layers.StringLookup(vocabulary=target_vocabulary, mask_token=PAD, oov_token=OOV)
        self.target_words = keras.layers.StringLookup(
            vocabulary=target_vocabulary, mask_token=PAD, oov_token=OOV, invert=True
        )

    @classmethod
    def fit(
        cls, texts: list[str], targets: list[str], *, max_input_length: int, max_output_length: int
    ) -> "CharTokenizer":
        """Vocabularies from the training split, after the same normalisation the graph applies."""
        normalized = [text.decode() for text in normalize_text(tf.constant(texts), compatibility_table()).numpy()]
        return cls(
            vocabulary_from(normalized),
            vocabulary_from(targets),
            max_input_length=max_input_length,
            max_output_length=max_output_length,
        )

    @property
    def source_vocab_size(self) -> int:
        return len(self.source_chars) + 2

    @property
    def target_vocab_size(self) -> int:
        return len(self.target_chars) + 4

    @property
    def target_vocabulary(self) -> list[str]:
        """The string of each output id, special tokens included (id = index)."""
        return [PAD, OOV, START, END, *self.target_chars]

    def source_ids(self, texts: tf.Tensor) -> tf.Tensor:
        """(N,) strings → (N, T) int32 ids, right-padded with 0."""
        return _padded(tf.cast(self.source_lookup(self._source_characters(texts)), tf.int32), PAD_ID)

    def source_characters(self, texts: tf.Tensor) -> tf.Tensor:
        """(N,) strings → (N, T) the characters the model reads, one per id of `source_ids`, right-padded with ""."""
        return _padded(self._source_characters(texts), PAD)

    def _source_characters(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return split_characters(normalize_text(texts, self.compatibility))[:, : self.max_input_length]

    def target_ids(self, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Teacher forcing: decoder input [START] y₁ … y_T and labels y₁ … y_T [END], both (N, T + 1)."""
        chars = split_characters(targets)[:, : self.max_output_length]
        ids = tf.cast(self.target_lookup(chars), tf.int32)
        rows = ids.nrows()
        starts = tf.fill(tf.stack([rows, 1]), START_ID)
        ends = tf.fill(tf.stack([rows, 1]), END_ID)
        decoder_input = tf.concat([starts, ids], axis=1).to_tensor(default_value=PAD_ID)
        labels = tf.concat([ids, ends], axis=1).to_tensor(default_value=PAD_ID)
        return decoder_input, labels

    def target_text(self, ids: tf.Tensor) -> tf.Tensor:
        """(…, L) generated ids → (…) strings: everything up to the first [END], special tokens dropped."""
        before_end = tf.equal(tf.cumsum(tf.cast(tf.equal(ids, END_ID), tf.int32), axis=-1), 0)
        keep = tf.logical_and(before_end, ids > END_ID)
        chars = tf.where(keep, self.target_words(ids), "")
        return tf.strings.reduce_join(chars, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            "source_chars": self.source_chars,
            "target_chars": self.target_chars,
            "max_input_length": self.max_input_length,
            "max_output_length": self.max_output_length,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CharTokenizer":
        return cls(
            config["source_chars"],
            config["target_chars"],
            max_input_length=config["max_input_length"],
            max_output_length=config["max_output_length"],
        )
