"""String-to-string evaluation metrics for Seq2Seq models: exact match, character error rate and BLEU.

BLEU (Papineni et al., 2002) is computed by sacrebleu: clipped ("modified") n-gram precisions p_n for
n = 1..N, combined as a geometric mean and scaled by a brevity penalty,

    BLEU = BP * exp(sum_n w_n * log p_n),   w_n = 1/N,   BP = min(1, exp(1 - r/c)).

The mean is over the *logs* of the precisions, a geometric mean (not over the p_n themselves): without
smoothing, one order without any match makes the score 0. Statistics are summed over the corpus before any
division, so long sentences weigh more than short ones.
"""

from collections.abc import Sequence

import sacrebleu
from sacrebleu.metrics.bleu import BLEU, BLEUScore


def _check_parallel(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions identical to their reference, in [0, 1]."""
    _check_parallel(predictions, references)
    return sum(p == r for p, r in zip(predictions, references)) / len(predictions)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest character insertions, deletions and substitutions turning `a` into `b`.

    Characters are Unicode code points, without normalisation: a precomposed Hangul syllable is one character,
    while the same syllable in decomposed (NFD) jamo is two or three.
    """
    if len(a) < len(b):
        a, b = b, a  # the DP row spans the shorter string, so memory is O(min(len(a), len(b)))
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete char_a
                    current[j - 1] + 1,  # insert char_b
                    previous[j - 1] + (char_a != char_b),  # substitute, free when equal
                )
            )
        previous = current
    return previous[-1]


def character_error_rate(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Total edit distance over total reference length, so long references weigh more than short ones.

    Can exceed 1 when predictions are longer than their references.
    """
    _check_parallel(predictions, references)
    reference_chars = sum(len(r) for r in references)
    if not reference_chars:
        raise ValueError("the character error rate is undefined when every reference is empty")
    return sum(edit_distance(p, r) for p, r in zip(predictions, references)) / reference_chars


def _reference_streams(references: Sequence[str] | Sequence[Sequence[str]], size: int) -> list[Sequence[str]]:
    """Either reference layout as sacrebleu's list of streams, each holding one string per prediction."""
    if not references:
        raise ValueError("no references given")
    streams = [references] if isinstance(references[0], str) else list(references)
    for stream in streams:
        # sacrebleu zips the streams with the predictions, so a short stream would silently drop sentences.
        if isinstance(stream, str) or len(stream) != size:
            raise ValueError(f"every reference stream must hold one string per prediction ({size})")
    return streams


def corpus_bleu(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str = "char",
    smooth: str = "exp",
) -> BLEUScore:
    """Corpus-level BLEU of `predictions` with n-grams up to 4: sacrebleu's `corpus_bleu`, on its 0-100 scale.

    `references` is either one reference string per prediction (`references[i]` for `predictions[i]`), or,
    as in sacrebleu, a list of reference streams: `references[k][i]` is the k-th reference for prediction i.
    With several references, n-gram counts are clipped by their maximum count in any one reference, and the
    brevity penalty uses the reference length closest to the prediction's (ties: the shorter).

    `tokenize` is a sacrebleu tokenizer: "char" makes every non-whitespace character a token (whitespace is
    dropped, so spacing errors cost nothing), "none" splits on whitespace only. `smooth="none"` scores 0 as soon
    as one order has no match; "exp" (sacrebleu's default) replaces such zero precisions by 1 / (2^k * total).
    An order no prediction is long enough for scores 0 either way. The result has `score`, `precisions`
    (percent per order), `bp` (the brevity penalty), `sys_len` and `ref_len` (tokens over the corpus), and the
    clipped `counts` and `totals` per order.
    """
    if tokenize not in BLEU.TOKENIZERS:
        raise ValueError(f"unknown tokenize mode {tokenize!r}, expected one of {', '.join(BLEU.TOKENIZERS)}")
    if smooth not in BLEU.SMOOTH_DEFAULTS:
        raise ValueError(f"unknown smoothing {smooth!r}, expected one of {', '.join(BLEU.SMOOTH_DEFAULTS)}")
    if not predictions:
        raise ValueError("no predictions to score")
    streams = _reference_streams(references, len(predictions))
    return sacrebleu.corpus_bleu(list(predictions), streams, tokenize=tokenize, smooth_method=smooth)
