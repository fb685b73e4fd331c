import random
import unicodedata

import pytest
import sacrebleu

from pipelines.evaluation.text_metrics import (
    character_error_rate,
    corpus_bleu,
    edit_distance,
    exact_match,
    modified_precision,
    tokenize,
)


def iso_date_corpus(size: int = 200) -> tuple[list[str], list[str]]:
    """ISO dates and copies damaged like an undertrained date normaliser would: wrong, dropped or extra chars."""
    rng = random.Random(0)
    references, predictions = [], []
    for _ in range(size):
        reference = f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        chars = list(reference)
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            position = rng.randrange(len(chars))
            edit = rng.choice(["substitute", "delete", "insert"])
            if edit == "substitute":
                chars[position] = rng.choice("0123456789-")
            elif edit == "delete" and len(chars) > 1:
                del chars[position]
            else:
                chars.insert(position, rng.choice("0123456789"))
        references.append(reference)
        predictions.append("".join(chars))
    return predictions, references


WORD_PREDICTIONS = [
    "the cat sat on the mat",
    "there is a cat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "it is raining",
]
WORD_REFERENCES = [
    "the cat is on the mat",
    "there is a cat on the mat",
    "the quick brown fox jumped over the lazy dog",
    "it rains heavily today",
]


def assert_matches_sacrebleu(predictions, streams, *, tokenize_mode, smooth, ours_references=None):
    """Compares every part of our score with sacrebleu's on the same reference streams."""
    expected = sacrebleu.corpus_bleu(predictions, streams, tokenize=tokenize_mode, smooth_method=smooth)
    ours = corpus_bleu(
        predictions,
        streams if ours_references is None else ours_references,
        tokenize=tokenize_mode,
        smooth=smooth,
    )
    assert ours.score == pytest.approx(expected.score, abs=1e-6)
    assert ours.precisions == pytest.approx(expected.precisions, abs=1e-6)
    assert ours.brevity_penalty == pytest.approx(expected.bp, abs=1e-6)
    assert ours.hypothesis_length == expected.sys_len
    assert ours.reference_length == expected.ref_len
    return ours


def test_modified_precision_clips_repeated_words():
    # The notes' example: "the" occurs 5 times in the candidate but at most twice in the reference.
    candidate = ["the", "the", "the", "the", "the"]
    assert modified_precision(candidate, [["the", "cat", "is", "on", "the", "mat"]], 1) == (2, 5)


def test_modified_precision_clips_by_the_best_single_reference():
    candidate = ["the", "the", "the", "the", "the"]
    references = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    assert modified_precision(candidate, references, 1) == (2, 5)
    assert modified_precision(candidate, references, 2) == (0, 4)


def test_modified_precision_of_a_too_short_candidate():
    assert modified_precision(["a"], [["a", "b"]], 2) == (0, 0)


def test_tokenize():
    assert tokenize("1999-03-04", "char") == list("1999-03-04")
    assert tokenize(" 4 March\t1999 ", "char") == list("4March1999")
    assert tokenize(" 4 March\t1999 ", "none") == ["4", "March", "1999"]
    with pytest.raises(ValueError, match="tokenize"):
        tokenize("x", "13a")


@pytest.mark.parametrize("tokenize_mode", ["char", "none"])
def test_perfect_predictions_score_100(tokenize_mode):
    references = ["1999-03-04", "2024-12-31 and more words here"]
    bleu = corpus_bleu(references, references, tokenize=tokenize_mode)
    assert bleu.score == pytest.approx(100.0)
    assert bleu.precisions == pytest.approx([100.0] * 4)
    assert bleu.brevity_penalty == 1.0


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_iso_dates_with_char_tokens_match_sacrebleu(smooth):
    predictions, references = iso_date_corpus()
    bleu = assert_matches_sacrebleu(
        predictions, [references], tokenize_mode="char", smooth=smooth, ours_references=references
    )
    assert 0 < bleu.score < 100


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_words_with_whitespace_tokens_match_sacrebleu(smooth):
    assert_matches_sacrebleu(
        WORD_PREDICTIONS, [WORD_REFERENCES], tokenize_mode="none", smooth=smooth, ours_references=WORD_REFERENCES
    )


def test_short_predictions_get_a_brevity_penalty_like_sacrebleu():
    predictions = [reference[:6] for reference in WORD_REFERENCES]
    bleu = assert_matches_sacrebleu(predictions, [WORD_REFERENCES], tokenize_mode="char", smooth="exp")
    assert bleu.brevity_penalty < 1


@pytest.mark.parametrize("tokenize_mode", ["char", "none"])
def test_multiple_references_match_sacrebleu(tokenize_mode):
    streams = [
        WORD_REFERENCES,
        ["a cat is on the mat", "the cat is there", "a fast brown fox jumps over a lazy dog", "it is raining"],
        ["on the mat sat the cat", "there is a cat sitting on the mat today", "quick fox", "rain"],
    ]
    bleu = assert_matches_sacrebleu(WORD_PREDICTIONS, streams, tokenize_mode=tokenize_mode, smooth="exp")
    single = corpus_bleu(WORD_PREDICTIONS, WORD_REFERENCES, tokenize=tokenize_mode)
    assert bleu.score > single.score  # extra references can only add matches


def test_closest_reference_length_prefers_the_shorter_on_ties():
    # A 4-word prediction is as close to the 3-word reference as to the 5-word one: the shorter one counts.
    bleu = assert_matches_sacrebleu(["w x y z"], [["a b c"], ["a b c d e"]], tokenize_mode="none", smooth="exp")
    assert bleu.reference_length == 3


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_no_four_gram_match_matches_sacrebleu(smooth):
    # Unigrams to trigrams match but no 4-gram does: "none" scores 0 while "exp" smooths it.
    predictions = ["abcxdefxghi", "123x456"]
    references = ["abcdefghi", "123456"]
    bleu = assert_matches_sacrebleu(
        predictions, [references], tokenize_mode="char", smooth=smooth, ours_references=references
    )
    assert bleu.precisions[2] > 0
    assert (bleu.score == 0) == (smooth == "none")


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_predictions_too_short_for_four_grams_match_sacrebleu(smooth):
    bleu = assert_matches_sacrebleu(["ab", "abc"], [["ab", "abc"]], tokenize_mode="char", smooth=smooth)
    assert bleu.score == 0.0


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_empty_prediction_matches_sacrebleu(smooth):
    predictions, references = iso_date_corpus(20)
    predictions[3] = ""
    bleu = assert_matches_sacrebleu(predictions, [references], tokenize_mode="char", smooth=smooth)
    assert bleu.hypothesis_length < bleu.reference_length


def test_only_empty_predictions_score_zero_like_sacrebleu():
    bleu = assert_matches_sacrebleu(["", ""], [["1999-03-04", "2000-01-01"]], tokenize_mode="char", smooth="exp")
    assert bleu.score == 0.0 and bleu.brevity_penalty == 0.0


def test_no_match_at_all_matches_sacrebleu():
    assert_matches_sacrebleu(["xyz xyz"], [["abc def"]], tokenize_mode="none", smooth="exp")


def test_corpus_bleu_rejects_bad_input():
    with pytest.raises(ValueError, match="one string per prediction"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="one string per prediction"):
        corpus_bleu(["a", "b"], [["a", "b"], ["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="smoothing"):
        corpus_bleu(["a"], ["a"], smooth="floor")


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("same", "same", 0),
        ("한국어", "한국인", 1),  # one precomposed syllable differs
        ("서울특별시", "서울시", 2),
        ("1999年3月4日", "1999-03-04", 5),
        ("한", unicodedata.normalize("NFD", "한"), 3),  # code points, not normalised: 1 syllable vs 3 jamo
    ],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_character_error_rate_sums_before_dividing():
    # Distances 1 + 0 + 4 over reference lengths 10 + 10 + 4 = 24 characters.
    predictions = ["1999-03-05", "2000-01-01", ""]
    references = ["1999-03-04", "2000-01-01", "abcd"]
    assert character_error_rate(predictions, references) == pytest.approx(5 / 24)


def test_character_error_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="undefined"):
        character_error_rate(["abc"], [""])
    with pytest.raises(ValueError):
        character_error_rate(["a", "b"], ["a"])


def test_exact_match():
    assert exact_match(["1999-03-04", "2000-01-01", "x"], ["1999-03-04", "2000-01-02", "x"]) == pytest.approx(2 / 3)
    assert exact_match(["a"], ["a"]) == 1.0
    with pytest.raises(ValueError):
        exact_match([], [])
