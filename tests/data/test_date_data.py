import datetime
import random

import pytest
import tensorflow_datasets as tfds

from pipelines.data import date_data
from pipelines.data.date_data import DatePair, make_dataset

MARCH_4_1999 = datetime.date(1999, 3, 4)
JANUARY_20_2023 = datetime.date(2023, 1, 20)
MARCH_24_1920 = datetime.date(1920, 3, 24)


@pytest.fixture(scope="module")
def dataset() -> date_data.DateDataset:
    return make_dataset(27000, 1000, 2000, seed=0)


@pytest.fixture(scope="module")
def all_pairs(dataset) -> list[DatePair]:
    return dataset.train + dataset.dev + dataset.test


@pytest.fixture(scope="module")
def pairs(all_pairs) -> list[DatePair]:
    """The dates alone."""
    return [pair for pair in all_pairs if date_data.is_date(pair)]


@pytest.fixture(scope="module")
def non_dates(all_pairs) -> list[DatePair]:
    return [pair for pair in all_pairs if not date_data.is_date(pair)]


def render_style(date: datetime.date, locale: str, style: str, rng: random.Random) -> str | None:
    """The text one style gives for `date`, before noise; None where the style is not allowed for it.

    `locale` and `style` are as in `DatePair`, e.g. ("de_DE", "babel:medium") or ("hand", "ordinal").
    """
    (found,) = [found for found in date_data._styles() if (found.locale, found.style) == (locale, style)]
    return found.render(date, rng)


def variants(date: datetime.date, locale: str, style: str, draws: int = 300) -> set[str]:
    """Every text a style gives for `date` over many seeded draws (hand-written styles pick among templates)."""
    return {render_style(date, locale, style, random.Random(seed)) for seed in range(draws)}


@pytest.mark.parametrize(
    ("date", "locale", "style", "text"),
    [
        (MARCH_4_1999, "de_DE", "babel:medium", "04.03.1999"),
        (MARCH_4_1999, "de_DE", "babel:short", "04.03.99"),
        (MARCH_4_1999, "de_DE", "babel:full", "Donnerstag, 4. März 1999"),
        (MARCH_4_1999, "ko_KR", "babel:full", "1999년 3월 4일 목요일"),
        (MARCH_4_1999, "ko_KR", "babel:short", "99. 3. 4."),
        (JANUARY_20_2023, "ko_KR", "babel:full", "2023년 1월 20일 금요일"),
        (MARCH_4_1999, "ja_JP", "babel:full", "1999年3月4日木曜日"),
        (MARCH_4_1999, "ja_JP", "babel:medium", "1999/03/04"),
        (MARCH_4_1999, "en_US", "babel:full", "Thursday, March 4, 1999"),
        (MARCH_4_1999, "en_US", "babel:short", "3/4/99"),
        (MARCH_4_1999, "en_US", "babel:short+weekday", "Thu, 3/4/1999"),
        (MARCH_4_1999, "en_GB", "babel:full", "Thursday, 4 March 1999"),
        (MARCH_4_1999, "fr_FR", "babel:full", "jeudi 4 mars 1999"),
        (MARCH_4_1999, "es_ES", "babel:long", "4 de marzo de 1999"),
        (JANUARY_20_2023, "es_ES", "babel:short", "20/1/23"),
        (JANUARY_20_2023, "en_GB", "babel:short", "20/01/2023"),
        (JANUARY_20_2023, "fr_FR", "babel:short+weekday", "ven. 20/01/2023"),
    ],
)
def test_babel_renderings(date, locale, style, text):
    assert render_style(date, locale, style, random.Random(0)) == text


@pytest.mark.parametrize("locale", ["en_GB", "fr_FR", "es_ES"])
@pytest.mark.parametrize("style", ["babel:short", "babel:short+weekday"])
def test_day_first_slash_dates_only_render_days_over_12(locale, style):
    # "04/03/1999" would read as April 3rd in the US convention, so it is never generated.
    assert render_style(MARCH_4_1999, locale, style, random.Random(0)) is None
    assert "24" in render_style(MARCH_24_1920, locale, style, random.Random(0))


@pytest.mark.parametrize(
    ("date", "text"),
    [
        (datetime.date(1950, 1, 2), "1/2/50"),
        (datetime.date(2049, 12, 31), "12/31/49"),
        (datetime.date(1949, 12, 31), "12/31/1949"),
        (datetime.date(2050, 1, 1), "1/1/2050"),
        (MARCH_24_1920, "3/24/1920"),
    ],
)
def test_two_digit_year_formats_fall_back_to_four_digits_outside_the_window(date, text):
    assert render_style(date, "en_US", "babel:short", random.Random(0)) == text


def test_hand_written_variants():
    assert {"March 4th, 1999", "4th March 1999", "Thursday, March 4th 1999", "Mar. 4th, 1999"} <= variants(
        MARCH_4_1999, "hand", "ordinal"
    )
    assert {"the 4th of March 1999", "Thursday, the 4th of March 1999"} <= variants(MARCH_4_1999, "hand", "of_month")
    assert {"Mar. 4, 1999", "Mar 4, 1999", "4 Mar 1999"} <= variants(MARCH_4_1999, "hand", "abbreviated")
    assert variants(MARCH_4_1999, "hand", "iso_slash") == {"1999/03/04"}
    assert variants(MARCH_4_1999, "hand", "iso_dash") == {"1999-3-4", "1999-03-04"}
    assert variants(MARCH_4_1999, "hand", "dotted") == {"4.3.1999", "04.03.1999"}
    # "May" is not shortened, so it never gets an abbreviation dot.
    assert not any("May." in text for text in variants(datetime.date(2001, 5, 22), "hand", "abbreviated"))


@pytest.mark.parametrize(
    ("day", "text"),
    [
        *[(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th")],
        *[(21, "21st"), (22, "22nd"), (23, "23rd"), (31, "31st")],
    ],
)
def test_ordinal(day, text):
    assert date_data.ordinal(day) == text


def test_every_locale_and_style_appears_in_a_few_thousand_pairs(pairs):
    sample = pairs[:3000]
    assert {pair.locale for pair in sample} == {*date_data.LOCALES, date_data.HAND}
    assert {pair.style for pair in sample} == set(date_data.styles())
    assert {"ko_KR", "ja_JP", "de_DE", "fr_FR", "es_ES", "en_US", "en_GB"} <= set(date_data.LOCALES)


def test_noise_changes_case_and_spacing(pairs):
    texts = [pair.text for pair in pairs]
    assert any(text.isupper() and text.lower() != text for text in texts)
    assert any(text.islower() and text.upper() != text and text[0].isalpha() for text in texts)
    assert any("  " in text for text in texts)


def test_render_targets_the_rendered_date():
    rng = random.Random(7)
    for date in date_data.random_dates(2000, rng):
        assert date_data.render(date, rng).target == date.isoformat()


def test_targets_are_valid_iso_dates_in_range(pairs):
    for pair in pairs:
        date = datetime.datetime.strptime(pair.target, date_data.TARGET_FORMAT).date()
        assert pair.target == date.isoformat()
        assert date_data.MIN_YEAR <= date.year <= date_data.MAX_YEAR


def test_two_digit_years_only_inside_the_window(pairs):
    first, last = date_data.TWO_DIGIT_YEAR_WINDOW
    two_digit = [pair for pair in pairs if pair.target[:4] not in pair.text]
    assert two_digit, "the sample should hold some two-digit years"
    for pair in two_digit:
        assert first <= int(pair.target[:4]) <= last, pair
        assert pair.target[2:4] in pair.text, pair


def test_texts_fit_the_documented_maximum(dataset, all_pairs):
    assert max(len(pair.text) for pair in all_pairs) <= date_data.MAX_TEXT_LENGTH
    assert dataset.summary()["max_text_length"] == max(len(pair.text) for pair in all_pairs)


def test_no_text_maps_to_two_targets(pairs, all_pairs):
    assert len(pairs) == 30000
    assert date_data.find_conflicts(all_pairs) == {}  # a non-date is never also a date's text


def test_each_split_mixes_in_its_share_of_non_dates_of_every_kind(dataset, non_dates):
    for split, dates in (("train", 27000), ("dev", 1000), ("test", 2000)):
        found = [pair for pair in getattr(dataset, split) if not date_data.is_date(pair)]
        assert len(found) == round(dates * date_data.NON_DATE_SHARE), split
    assert {pair.style for pair in non_dates} == {
        date_data.NOT_A_DATE_STYLE + kind for kind in date_data.NON_DATE_KINDS
    }
    assert all(pair.target == "" and pair.locale == date_data.NOT_A_DATE_LOCALE for pair in non_dates)
    # Days past the month's end only in the held-out splits: the graph's constraint finds them, the model is
    # not taught to.
    assert "not_a_date:impossible_day" not in {pair.style for pair in dataset.train}
    assert {"not_a_date:impossible_day", "not_a_date:impossible_month"} <= {pair.style for pair in dataset.test}
    assert "not_a_date:impossible_month" in {pair.style for pair in dataset.train}
    # Spread through the split, not appended: the first and the last tenth both hold some.
    tenth = len(dataset.test) // 10
    assert not all(map(date_data.is_date, dataset.test[:tenth]))
    assert not all(map(date_data.is_date, dataset.test[-tenth:]))
    assert make_dataset(300, 50, 50, seed=0, non_date_share=0).summary()["non_dates"] == {
        "train": 0,
        "dev": 0,
        "test": 0,
    }
    with pytest.raises(ValueError, match="non_date_share"):
        make_dataset(300, 50, 50, non_date_share=1.5)


def test_impossible_dates_do_not_exist_in_any_day_month_order():
    rng = random.Random(0)
    drawn = [date_data.impossible_day(rng) for _ in range(3000)]
    months = [date_data.impossible_month(rng) for _ in range(300)]
    for date in drawn + months:
        assert date_data.MIN_YEAR <= date.year <= date_data.MAX_YEAR
        for month, day in ((date.month, date.day), (date.day, date.month)):  # also read the other way round
            with pytest.raises(ValueError):
                datetime.date(date.year, month, day)
    february_29 = [date for date in drawn if (date.month, date.day) == (2, 29)]
    assert 0.28 < len(february_29) / len(drawn) < 0.38  # the leap-year rule, the hardest to tell, is well fed
    assert all(date.day <= 31 for date in drawn) and all(date.month > 12 for date in months)


@pytest.mark.parametrize(
    ("locale", "style", "text"),
    [
        ("en_US", "babel:long", "February 30, 2001"),
        ("de_DE", "babel:medium", "30.02.2001"),
        ("ja_JP", "babel:long", "2001年2月30日"),
        ("hand", "iso_slash", "2001/02/30"),
        ("hand", "ordinal", "February 30th, 2001"),
    ],
)
def test_impossible_dates_render_in_the_styles_of_real_ones(locale, style, text):
    february_30 = date_data.ImpossibleDate(2001, 2, 30, weekday=4)
    assert text in variants(february_30, locale, style)


def test_non_dates_include_what_people_type_instead_of_a_date(non_dates):
    texts = {pair.text.strip().lower() for pair in non_dates}
    assert {"", "yesterday", "hello", "n/a"} <= texts
    partial = [pair.text for pair in non_dates if pair.style.endswith(":partial")]
    assert any(text.strip().lower() == text.strip().lower().rstrip("0123456789 ,") for text in partial)  # no year
    numbers = [pair.text for pair in non_dates if pair.style.endswith(":number")]
    assert not [text for text in numbers if text.isdigit() and len(text) in (6, 8)]  # the compact dates' lengths


def test_find_conflicts_reports_ambiguous_texts():
    pairs = [
        DatePair("4/3/99", "1999-04-03", "en_US", "babel:short"),
        DatePair("4/3/99", "1999-03-04", "es_ES", "babel:short"),
        DatePair("04.03.1999", "1999-03-04", "de_DE", "babel:medium"),
    ]
    assert date_data.find_conflicts(pairs) == {"4/3/99": {"1999-04-03", "1999-03-04"}}


def test_splits_do_not_share_dates(dataset):
    train, dev, test = (
        [pair.target for pair in getattr(dataset, split) if date_data.is_date(pair)] for split in date_data.SPLITS
    )
    assert not set(test) & (set(train) | set(dev))
    assert not set(dev) & set(train)
    # Held-out splits take distinct dates, one rendering each.
    assert len(set(test)) == len(test) == 2000 and len(set(dev)) == len(dev) == 1000


def test_random_dates_are_distinct_and_in_range():
    dates = date_data.random_dates(5000, random.Random(1))
    assert len(set(dates)) == 5000
    assert all(date_data.FIRST_DATE <= date <= date_data.LAST_DATE for date in dates)
    # Uniform over two centuries: both halves get a fair share.
    assert 2300 < sum(date.year < 2000 for date in dates) < 2700


def test_same_seed_same_data_and_other_seed_other_data():
    first = make_dataset(300, 50, 50, seed=3)
    assert make_dataset(300, 50, 50, seed=3) == first
    assert make_dataset(300, 50, 50, seed=4).test != first.test


def test_test_split_does_not_depend_on_train_size():
    assert make_dataset(100, 50, 50, seed=0).test == make_dataset(400, 50, 50, seed=0).test


def test_held_out_splits_must_leave_days_for_train():
    with pytest.raises(ValueError):
        make_dataset(10, date_data.DAY_COUNT, 0)


def test_summary(dataset):
    summary = dataset.summary()
    assert summary["non_dates"] == {"train": 4050, "dev": 150, "test": 300}
    assert summary["sizes"] == {"train": 27000 + 4050, "dev": 1000 + 150, "test": 2000 + 300}
    assert sum(summary["locales"].values()) == sum(summary["styles"].values()) == 30000 + 4500
    non_date_styles = {date_data.NOT_A_DATE_STYLE + kind for kind in date_data.NON_DATE_KINDS}
    assert set(summary["styles"]) == set(date_data.styles()) | non_date_styles


def test_tf_dataset_yields_utf8_strings():
    pairs = [
        DatePair("1999년 3월 4일 목요일", "1999-03-04", "ko_KR", "babel:full"),
        DatePair("Thursday, March 4th 1999", "1999-03-04", "hand", "ordinal"),
    ]
    dataset = date_data.as_tf_dataset(pairs)
    assert set(dataset.element_spec) == {"text", "target"}
    assert all(spec.shape == () and spec.dtype.name == "string" for spec in dataset.element_spec.values())
    rows = list(dataset.as_numpy_iterator())
    assert [row["text"].decode("utf-8") for row in rows] == [pair.text for pair in pairs]
    assert [row["target"].decode("utf-8") for row in rows] == ["1999-03-04", "1999-03-04"]


def test_cli_prints_samples(capsys):
    assert date_data.main(["--samples", "5", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all("→" in line for line in lines)


def test_tfds_builder_prepares_offline_and_loads(tmp_path):
    expected = make_dataset(2000, 200, 200, seed=0)
    tfds.builder("date_normalization/small", data_dir=str(tmp_path)).download_and_prepare()

    test = list(tfds.load("date_normalization/small", split="test", data_dir=str(tmp_path)).as_numpy_iterator())
    assert [row["text"].decode() for row in test] == [pair.text for pair in expected.test]
    assert [row["target"].decode() for row in test] == [pair.target for pair in expected.test]

    validation = date_data.load_tfds("validation", data_dir=str(tmp_path), config="small")
    assert [row["text"].decode() for row in validation.as_numpy_iterator()] == [pair.text for pair in expected.dev]
    train = date_data.load_tfds("train", data_dir=str(tmp_path), config="small")
    assert train.cardinality().numpy() == len(expected.train) == 2000 + 300


@pytest.mark.parametrize(
    ("date", "locale", "style", "text"),
    [
        (MARCH_4_1999, "hand", "compact", "19990304"),
        (MARCH_4_1999, "hand", "iso_dotted", "1999.03.04"),
        (MARCH_4_1999, "hand", "iso_dotted", "1999.3.4"),
        (datetime.date(2015, 12, 31), "es_ES", "typed:month_abbreviation", "31-dic-2015"),
        (MARCH_4_1999, "de_DE", "typed:month_abbreviation", "4. März 1999"),
        (JANUARY_20_2023, "fr_FR", "typed:month_abbreviation", "20 janv. 2023"),
        (MARCH_4_1999, "en_US", "typed:apostrophe_year", "Mar 4 '99"),
        (MARCH_4_1999, "de_DE", "typed:apostrophe_year", "4. März '99"),
        (MARCH_4_1999, "en_US", "typed:with_words", "on March 4, 1999"),
        (MARCH_4_1999, "de_DE", "typed:with_words", "am 4. März 1999"),
        (MARCH_4_1999, "fr_FR", "typed:with_words", "le 4 mars 1999"),
        (MARCH_4_1999, "es_ES", "typed:with_words", "el 4 de marzo del 1999"),
        (JANUARY_20_2023, "ko_KR", "typed:with_words", "2023년 1월 20일에"),
        (JANUARY_20_2023, "ko_KR", "typed:weekday_brackets", "2023년 1월 20일 (금)"),
        (JANUARY_20_2023, "ja_JP", "typed:weekday_brackets", "2023年1月20日（金）"),
    ],
)
def test_dates_as_people_type_them(date, locale, style, text):
    assert text in variants(date, locale, style)


def test_apostrophe_years_only_inside_the_two_digit_window():
    assert render_style(MARCH_24_1920, "en_US", "typed:apostrophe_year", random.Random(0)) is None


def test_trailing_punctuation_and_brackets_appear(pairs):
    texts = [pair.text.strip() for pair in pairs]
    assert any(text.endswith(("!", "?", ";")) for text in texts)
    assert any(text.startswith("(") and text.endswith(")") for text in texts)


def test_held_out_styles_are_in_no_split_and_make_their_own_test_set(all_pairs, dataset):
    assert not {(pair.locale, pair.style) for pair in all_pairs} & date_data.HELD_OUT_STYLES
    unseen = date_data.unseen_style_pairs(2000, seed=0)
    assert {(pair.locale, pair.style) for pair in unseen} == date_data.HELD_OUT_STYLES
    # The test split's dates, so no date of it was trained on either.
    assert [pair.target for pair in unseen] == [pair.target for pair in dataset.test if date_data.is_date(pair)]
    assert date_data.find_conflicts(all_pairs + unseen) == {}
    assert unseen == date_data.unseen_style_pairs(2000, seed=0)


def test_only_the_taught_pairs_count_in_the_validation_loss():
    taught = DatePair("", "", date_data.NOT_A_DATE_LOCALE, date_data.NOT_A_DATE_STYLE + "partial")
    untaught = DatePair("30.02.2001", "", date_data.NOT_A_DATE_LOCALE, date_data.NOT_A_DATE_STYLE + "impossible_day")
    date = DatePair("4.3.1999", "1999-03-04", date_data.HAND, "dotted")
    assert [date_data.is_taught(pair) for pair in (taught, untaught, date)] == [True, False, True]
