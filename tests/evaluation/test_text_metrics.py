import random
import unicodedata

import pytest

from pipelines.evaluation.text_metrics import character_error_rate, corpus_bleu, edit_distance, exact_match


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


def assert_bleu(bleu, score, precisions, brevity_penalty, hypothesis_length, reference_length):
    """Every part of a corpus BLEU against known values: sacrebleu 2.6's, which the hand-written implementation this
    project used before agreed with to 1e-6."""
    assert bleu.score == pytest.approx(score, abs=1e-6)
    assert bleu.precisions == pytest.approx(precisions, abs=1e-6)
    assert bleu.bp == pytest.approx(brevity_penalty, abs=1e-6)
    assert bleu.sys_len == hypothesis_length
    assert bleu.ref_len == reference_length


def test_repeated_words_are_clipped():
    # "the" occurs 5 times in the candidate but at most twice in the reference: unigram precision 2/5, not 5/5,
    # so repeating a likely word cannot buy precision.
    bleu = corpus_bleu(["the the the the the"], ["the cat is on the mat"], tokenize="none", smooth="none")
    assert (bleu.counts[0], bleu.totals[0]) == (2, 5)
    assert bleu.precisions[0] == pytest.approx(40.0)


def test_repeated_words_are_clipped_by_the_best_single_reference():
    references = [["the cat is on the mat"], ["there is a cat on the mat"]]
    bleu = corpus_bleu(["the the the the the"], references, tokenize="none", smooth="none")
    assert (bleu.counts[0], bleu.totals[0]) == (2, 5)
    assert (bleu.counts[1], bleu.totals[1]) == (0, 4)


def test_a_too_short_candidate_has_no_bigrams():
    bleu = corpus_bleu(["a"], ["a b"], tokenize="none", smooth="none")
    assert (bleu.counts[1], bleu.totals[1]) == (0, 0)


def test_tokenize():
    # "char": every non-whitespace character is a token, so spacing does not count.
    bleu = corpus_bleu(["4 March\t1999 "], ["4March1999"], tokenize="char")
    assert (bleu.sys_len, bleu.ref_len, bleu.score) == (10, 10, pytest.approx(100.0))
    # "none": whitespace-separated words, tabs included.
    bleu = corpus_bleu([" 4 March\t1999 "], ["4 March 1999"], tokenize="none")
    assert (bleu.sys_len, bleu.counts[:3]) == (3, [3, 2, 1])
    with pytest.raises(ValueError, match="tokenize"):
        corpus_bleu(["x"], ["x"], tokenize="no-such-tokenizer")


@pytest.mark.parametrize("tokenize_mode", ["char", "none"])
def test_perfect_predictions_score_100(tokenize_mode):
    references = ["1999-03-04", "2024-12-31 and more words here"]
    bleu = corpus_bleu(references, references, tokenize=tokenize_mode)
    assert bleu.score == pytest.approx(100.0)
    assert bleu.precisions == pytest.approx([100.0] * 4)
    assert bleu.bp == 1.0


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_iso_dates_with_char_tokens(smooth):
    predictions, references = iso_date_corpus()
    bleu = corpus_bleu(predictions, references, tokenize="char", smooth=smooth)
    precisions = [92.8143712575, 83.7028824834, 75.4987531172, 68.5897435897]
    assert_bleu(bleu, 79.64135674259445, precisions, 1.0, 2004, 2000)
    assert 0 < bleu.score < 100
    assert corpus_bleu(predictions, [references], tokenize="char", smooth=smooth).score == bleu.score


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_words_with_whitespace_tokens(smooth):
    bleu = corpus_bleu(WORD_PREDICTIONS, WORD_REFERENCES, tokenize="none", smooth=smooth)
    precisions = [80.0, 66.6666666667, 52.9411764706, 38.4615384615]
    assert_bleu(bleu, 55.154755375668685, precisions, 0.9607894391523232, 25, 26)


def test_short_predictions_get_a_brevity_penalty():
    predictions = [reference[:6] for reference in WORD_REFERENCES]
    bleu = corpus_bleu(predictions, [WORD_REFERENCES], tokenize="char", smooth="exp")
    # 20 hypothesis characters against 90: BP = exp(1 - 90/20).
    assert_bleu(bleu, 3.0197383422318516, [100.0] * 4, 0.0301973834223185, 20, 90)
    assert bleu.bp < 1


@pytest.mark.parametrize(
    ("tokenize_mode", "score", "precisions", "brevity_penalty", "lengths"),
    [
        ("char", 96.42543119644071, [100.0, 97.3684210526, 95.8333333333, 92.6470588235], 1.0, (80, 77)),
        ("none", 72.69396512297921, [100.0, 85.7142857143, 70.5882352941, 46.1538461538], 1.0, (25, 25)),
    ],
)
def test_multiple_references(tokenize_mode, score, precisions, brevity_penalty, lengths):
    streams = [
        WORD_REFERENCES,
        ["a cat is on the mat", "the cat is there", "a fast brown fox jumps over a lazy dog", "it is raining"],
        ["on the mat sat the cat", "there is a cat sitting on the mat today", "quick fox", "rain"],
    ]
    bleu = corpus_bleu(WORD_PREDICTIONS, streams, tokenize=tokenize_mode, smooth="exp")
    assert_bleu(bleu, score, precisions, brevity_penalty, *lengths)
    single = corpus_bleu(WORD_PREDICTIONS, WORD_REFERENCES, tokenize=tokenize_mode)
    assert bleu.score > single.score  # extra references can only add matches


def test_closest_reference_length_prefers_the_shorter_on_ties():
    # A 4-word prediction is as close to the 3-word reference as to the 5-word one: the shorter one counts.
    bleu = corpus_bleu(["w x y z"], [["a b c"], ["a b c d e"]], tokenize="none", smooth="exp")
    assert_bleu(bleu, 0.0, [0.0] * 4, 1.0, 4, 3)
    assert bleu.ref_len == 3


@pytest.mark.parametrize(
    ("smooth", "score", "four_gram_precision"), [("exp", 29.671013048802454, 100 / 24), ("none", 0.0, 0.0)]
)
def test_no_four_gram_match(smooth, score, four_gram_precision):
    # Unigrams to trigrams match but no 4-gram does: "none" scores 0 while "exp" smooths it to 1 / (2 * 12) matches.
    predictions = ["abcxdefxghi", "123x456"]
    references = ["abcdefghi", "123456"]
    bleu = corpus_bleu(predictions, references, tokenize="char", smooth=smooth)
    assert_bleu(bleu, score, [83.3333333333, 62.5, 35.7142857143, four_gram_precision], 1.0, 18, 15)
    assert bleu.precisions[2] > 0
    assert (bleu.score == 0) == (smooth == "none")


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_predictions_too_short_for_four_grams(smooth):
    bleu = corpus_bleu(["ab", "abc"], [["ab", "abc"]], tokenize="char", smooth=smooth)
    assert_bleu(bleu, 0.0, [100.0, 100.0, 100.0, 0.0], 1.0, 5, 5)
    assert bleu.score == 0.0


@pytest.mark.parametrize("smooth", ["exp", "none"])
def test_empty_prediction(smooth):
    predictions, references = iso_date_corpus(20)
    predictions[3] = ""
    bleu = corpus_bleu(predictions, [references], tokenize="char", smooth=smooth)
    precisions = [90.2564102564, 78.9772727273, 70.0636942675, 61.5942028986]
    assert_bleu(bleu, 72.58844772564044, precisions, 0.9746849137081522, 195, 200)
    assert bleu.sys_len < bleu.ref_len


def test_only_empty_predictions_score_zero():
    bleu = corpus_bleu(["", ""], [["1999-03-04", "2000-01-01"]], tokenize="char", smooth="exp")
    assert_bleu(bleu, 0.0, [0.0] * 4, 0.0, 0, 20)
    assert bleu.score == 0.0 and bleu.bp == 0.0


def test_no_match_at_all():
    bleu = corpus_bleu(["xyz xyz"], [["abc def"]], tokenize="none", smooth="exp")
    assert_bleu(bleu, 0.0, [0.0] * 4, 1.0, 2, 2)


def test_corpus_bleu_rejects_bad_input():
    with pytest.raises(ValueError, match="one string per prediction"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="one string per prediction"):
        corpus_bleu(["a", "b"], [["a", "b"], ["a"]])
    with pytest.raises(ValueError, match="no predictions"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="smoothing"):
        corpus_bleu(["a"], ["a"], smooth="laplace")


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
