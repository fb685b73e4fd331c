"""String-to-string evaluation metrics for Seq2Seq models: exact match, character error rate and BLEU.

BLEU follows Papineni et al. (2002) as in the lecture notes: clipped ("modified") n-gram precisions p_n for
n = 1..N, combined as a geometric mean and scaled by a brevity penalty,

    BLEU = BP * exp(sum_n w_n * log p_n),   w_n = 1/N,   BP = min(1, exp(1 - r/c)).

(The notes print `exp(1/4 * sum p_n)`; that is a typo: the mean is over the *logs* of the precisions.)
Statistics are summed over the corpus before any division, and every detail (tokenisation, closest reference
length, smoothing of zero counts) matches sacrebleu's `corpus_bleu`, which the tests use as the reference.
"""

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTHING_METHODS = ("none", "exp")
TOKENIZERS = ("char", "none")


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


def tokenize(text: str, mode: str) -> list[str]:
    """Splits a string into BLEU tokens.

    "char": every non-whitespace character is a token (sacrebleu's tokenize="char"; whitespace is dropped, so
    spacing errors cost nothing). "none": whitespace-separated words, with no punctuation splitting.
    """
    if mode == "char":
        return [char for char in text if not char.isspace()]
    if mode == "none":
        return text.split()
    raise ValueError(f"unknown tokenize mode {mode!r}, expected one of {TOKENIZERS}")


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _max_reference_counts(references: Sequence[Sequence[str]], n: int) -> Counter:
    # A candidate n-gram is credited at most as often as it occurs in any *single* reference.
    counts: Counter = Counter()
    for reference in references:
        for ngram, count in _ngrams(reference, n).items():
            counts[ngram] = max(counts[ngram], count)
    return counts


def modified_precision(candidate: Sequence[str], references: Sequence[Sequence[str]], n: int) -> tuple[int, int]:
    """Clipped n-gram matches and the number of candidate n-grams, for one tokenised candidate.

    Returned as counts rather than a ratio because corpus BLEU sums both over all sentences before dividing.
    """
    if n < 1:
        raise ValueError(f"n-gram order must be at least 1, got {n}")
    max_counts = _max_reference_counts(references, n)
    candidate_counts = _ngrams(candidate, n)
    clipped = sum(min(count, max_counts[ngram]) for ngram, count in candidate_counts.items())
    return clipped, sum(candidate_counts.values())


def _closest_length(hypothesis_length: int, reference_lengths: Sequence[int]) -> int:
    # Ties go to the shorter reference, which gives the milder brevity penalty (sacrebleu's rule).
    return min(reference_lengths, key=lambda length: (abs(length - hypothesis_length), length))


def _reference_sets(references: Sequence[str] | Sequence[Sequence[str]], size: int) -> list[tuple[str, ...]]:
    """Turns either reference layout into one tuple of references per prediction."""
    if not references:
        raise ValueError("no references given")
    streams = [references] if isinstance(references[0], str) else references
    for stream in streams:
        if isinstance(stream, str) or len(stream) != size:
            raise ValueError(f"every reference stream must hold one string per prediction ({size})")
    return list(zip(*streams))


@dataclass(frozen=True)
class Bleu:
    """A corpus BLEU score and its parts, on sacrebleu's 0-100 scale."""

    score: float
    precisions: list[float]  # per n-gram order, percent (smoothed where a count was zero)
    brevity_penalty: float
    hypothesis_length: int  # tokens over the corpus
    reference_length: int  # sum of the closest reference lengths


def _corpus_statistics(
    predictions: Sequence[str], reference_sets: Sequence[Sequence[str]], mode: str, max_order: int
) -> tuple[list[int], list[int], int, int]:
    """Clipped matches and totals per order, hypothesis length and closest reference length, over the corpus."""
    matches, totals = [0] * max_order, [0] * max_order
    hypothesis_length = reference_length = 0
    for prediction, reference_set in zip(predictions, reference_sets):
        candidate = tokenize(prediction, mode)
        tokenized_references = [tokenize(reference, mode) for reference in reference_set]
        hypothesis_length += len(candidate)
        reference_length += _closest_length(len(candidate), [len(r) for r in tokenized_references])
        for order in range(1, max_order + 1):
            matched, total = modified_precision(candidate, tokenized_references, order)
            matches[order - 1] += matched
            totals[order - 1] += total
    return matches, totals, hypothesis_length, reference_length


def _brevity_penalty(hypothesis_length: int, reference_length: int) -> float:
    if hypothesis_length >= reference_length:
        return 1.0
    return math.exp(1 - reference_length / hypothesis_length) if hypothesis_length else 0.0


def _precisions(matches: list[int], totals: list[int], smooth: str) -> list[float]:
    precisions = [0.0] * len(totals)
    exp_divisor = 1
    for order, (matched, total) in enumerate(zip(matches, totals)):
        if total == 0:
            # No hypothesis is long enough for this order: sacrebleu leaves it (and all higher orders) at 0.
            break
        if matched:
            precisions[order] = 100.0 * matched / total
        elif smooth == "exp":
            # NIST/mteval smoothing: the k-th order without any match counts as 1 / 2^k matches.
            exp_divisor *= 2
            precisions[order] = 100.0 / (exp_divisor * total)
    return precisions


def corpus_bleu(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str = "char",
    max_order: int = 4,
    smooth: str = "exp",
) -> Bleu:
    """Corpus-level BLEU of `predictions`, equal to sacrebleu's `corpus_bleu` with the same settings.

    `references` is either one reference string per prediction (`references[i]` for `predictions[i]`), or,
    as in sacrebleu, a list of reference streams: `references[k][i]` is the k-th reference for prediction i.
    With several references, n-gram counts are clipped by their maximum count in any one reference, and the
    brevity penalty uses the reference length closest to the prediction's (ties: the shorter).

    `smooth="none"` scores 0 as soon as one order has no match; "exp" (sacrebleu's default) replaces such
    zero precisions by 1 / (2^k * total). An order no prediction is long enough for scores 0 either way.
    """
    if smooth not in SMOOTHING_METHODS:
        raise ValueError(f"unknown smoothing {smooth!r}, expected one of {SMOOTHING_METHODS}")
    if max_order < 1:
        raise ValueError(f"max_order must be at least 1, got {max_order}")
    if not predictions:
        raise ValueError("no predictions to score")
    reference_sets = _reference_sets(references, len(predictions))
    matches, totals, hypothesis_length, reference_length = _corpus_statistics(
        predictions, reference_sets, tokenize, max_order
    )
    brevity_penalty = _brevity_penalty(hypothesis_length, reference_length)
    if not any(matches):
        return Bleu(0.0, [0.0] * max_order, brevity_penalty, hypothesis_length, reference_length)
    precisions = _precisions(matches, totals, smooth)
    if not all(precisions):
        score = 0.0  # log 0 = -inf: a geometric mean with a zero factor is zero
    else:
        score = brevity_penalty * math.exp(sum(math.log(p) for p in precisions) / max_order)
    return Bleu(score, precisions, brevity_penalty, hypothesis_length, reference_length)
