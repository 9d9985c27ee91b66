"""Every filter rule at its threshold and on both sides of it, with the exact drop reason.

Each rule is tested alone (every other threshold of its group switched off with null), so the verdict can
only come from the rule under test. The measures themselves are checked on hand-computed examples first.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

from filters import text_quality as tq
from filters.base import TextItem
from filters.language import LanguageRule, LanguageSettings, Prediction, normalize_language
from filters.safety import FlaggedWordsSettings, SpamSettings, TextSafety, spam_ratio
from filters.wordlists import SUPPORTED_LANGUAGES, common_words, flagged_words, gopher_stopwords, stopwords
from pipeline.settings import load_config

DEFAULTS = load_config()["filters"]
EPS = 1e-6


def item(text: str, lang: str, n_images: int = 0) -> TextItem:
    return TextItem(text=text, lang=lang, n_images=n_images)

# An ordinary English paragraph: passes every default OBELICS paragraph rule.
GOOD = ("The river runs past the old mill and the bakery, where the village keeps its market on Saturday "
        "mornings. Most of the people who live there have known each other for many years, and they like to "
        "talk about the weather.")


SHARE_KEYS = ("min_stopwords", "min_common_words")  # per language: `by_language`
GOPHER_KEYS = ("min_stop_words", "min_avg_word_length", "max_avg_word_length")


def alone(section: dict, per_language: tuple[str, ...], lang: str, on: dict) -> dict:
    """`section` with every threshold off but `on`; the per-language ones of `on` in `lang`'s entry (the only one)."""
    cfg = {k: (None if k.startswith(("min_", "max_")) else v) for k, v in section.items()}
    cfg["by_language"] = {lang: {k: on.pop(k, None) for k in per_language}}
    cfg.update(on)
    return cfg


def paragraph_rules(lang: str = "en", **on) -> tq.ParagraphRules:
    return tq.ParagraphRules(tq.ParagraphSettings.from_config(alone(DEFAULTS["paragraph"], SHARE_KEYS, lang, on)))


def obelics_doc_rules(lang: str = "en", **on) -> tq.ObelicsDocumentRules:
    cfg = alone(DEFAULTS["document"]["obelics"], SHARE_KEYS, lang, on)
    return tq.ObelicsDocumentRules(tq.ObelicsDocumentSettings.from_config(cfg))


def assert_boundary(verdict_at, value: float, kind: str, reason: str) -> None:
    """kind 'max': dropped when value > limit; 'min': dropped when value < limit. At the limit it is kept."""
    assert verdict_at(value).keep, f"kept at the threshold {value}"
    below, above = verdict_at(value - EPS), verdict_at(value + EPS)
    dropped, kept = (below, above) if kind == "max" else (above, below)
    assert not dropped.keep and dropped.reason == reason
    assert kept.keep


# -- measures -------------------------------------------------------------------------------------------


def test_words_are_obelics_words():
    assert tq.words_of("Hello, World! 42 it's — «Ça» va...") == ["hello", "world", "it's", "ça", "va"]


def test_measures_on_hand_computed_examples():
    # 2-grams of "abababab": ab×4, ba×3; √2 → the top 1 repeated n-gram: 4 of 7 occurrences.
    assert tq.char_repetition_ratio("abababab", 2) == pytest.approx(4 / 7)
    assert tq.char_repetition_ratio("abcdef", 2) == 0.0  # nothing repeats
    # word bigrams of "a b c a b c": ab×2, bc×2, ca×1 → 4 of 5 occurrences belong to repeated bigrams.
    assert tq.word_repetition_ratio("a b c a b c".split(), 2) == pytest.approx(0.8)
    assert tq.special_char_ratio("a, b1") == pytest.approx(3 / 5)  # ",", " ", "1"
    assert tq.punctuation_ratio("Hello, world. Yes!") == pytest.approx(3 / 6)
    assert tq.punctuation_ratio("Hello, world. Yes!", min_tokens=12) == 1.0  # too short to judge
    assert tq.share_in(["a", "b", "c", "d"], frozenset({"a", "c"})) == 0.5


def test_flagged_ratio_counts_words_and_phrases_but_not_allowlisted_words():
    words = tq.words_of("They cursed: shit, what a blow job of a day, said the man who wanted to kill time.")
    # "shit" and the phrase "blow job" are flagged; "kill" is on m3w's allowlist (everyday sense).
    assert tq.flagged_ratio(words, "en") == pytest.approx(2 / len(words))
    single, phrases = flagged_words("en")
    assert "kill" not in single and "shit" in single and ("blow", "job") in phrases
    assert "ficken" in flagged_words("de")[0] and "ficken" not in single  # per-language additions


def test_word_lists_exist_for_every_supported_language():
    for lang in SUPPORTED_LANGUAGES:
        assert len(stopwords(lang)) > 300 and len(common_words(lang)) >= 50_000 and len(gopher_stopwords(lang)) == 8
    assert stopwords("xx") is None and common_words("xx") is None and gopher_stopwords("xx") is None
    assert set(gopher_stopwords("en")) == {"the", "be", "to", "of", "and", "that", "have", "with"}


# -- OBELICS paragraph rules -------------------------------------------------------------------------


def test_good_paragraph_passes_every_default_rule():
    verdict = tq.ParagraphRules(tq.ParagraphSettings.from_config(DEFAULTS["paragraph"]))(item(GOOD, "en"))
    assert verdict.keep, verdict
    assert {"char_repetition", "stopwords", "common_words", "flagged_words"} <= set(verdict.scores)


def test_paragraph_word_count_bounds():
    rules = paragraph_rules(min_words=4, max_words=6)
    assert rules(item("one two three", "en")).reason == "obelics_par_word_count"
    assert rules(item("one two three four", "en")).keep
    assert rules(item("one two three four five six", "en")).keep
    assert rules(item("one two three four five six seven", "en")).reason == "obelics_par_word_count"


REPETITIVE = "Buy the red shoes here. Buy the red shoes here today, because the red shoes sell out fast."
PARAGRAPH_RULES = [
    ("max_char_repetition", "max", "obelics_par_char_repetition", REPETITIVE,
     lambda t: tq.char_repetition_ratio(t, 10)),
    ("max_word_repetition", "max", "obelics_par_word_repetition", REPETITIVE,
     lambda t: tq.word_repetition_ratio(tq.words_of(t), 5)),
    ("max_special_chars", "max", "obelics_par_special_chars", "Price: $12.99 (was $15.49) -- 20% off, 3 days.",
     tq.special_char_ratio),
    ("min_stopwords", "min", "obelics_par_stopwords", GOOD, lambda t: tq.share_in(tq.words_of(t), stopwords("en"))),
    ("max_flagged_words", "max", "obelics_par_flagged_words", "What the shit is going on with this old machine today?",
     lambda t: tq.flagged_ratio(tq.words_of(t), "en")),
    ("min_punctuation", "min", "obelics_par_punctuation", GOOD, lambda t: tq.punctuation_ratio(t, 12)),
    ("min_common_words", "min", "obelics_par_common_words", "The zorblat quexes fizzled near the old river bank.",
     lambda t: tq.share_in(tq.words_of(t), common_words("en"))),
]


@pytest.mark.parametrize(("key", "kind", "reason", "text", "measure"), PARAGRAPH_RULES,
                         ids=[r[0] for r in PARAGRAPH_RULES])
def test_paragraph_rule_threshold(key, kind, reason, text, measure):
    value = measure(text)
    assert 0 < value < 1
    assert_boundary(lambda limit: paragraph_rules(**{key: limit})(item(text, "en")), value, kind, reason)


def test_paragraph_rules_needing_a_word_list_are_skipped_for_languages_without_one():
    rules = paragraph_rules("xx", min_stopwords=0.99, min_common_words=0.99)  # cut-offs for xx, but no word lists
    verdict = rules(item("Zorblat quexes fizzled near grobble banks.", "xx"))
    assert verdict.keep and verdict.skipped == ("obelics_par_stopwords", "obelics_par_common_words")
    rules = paragraph_rules("en", min_stopwords=0.99, min_common_words=0.99)
    assert rules(item("Zorblat quexes fizzled near grobble banks.", "en")).reason == "obelics_par_stopwords"


def test_paragraph_rules_run_in_obelics_order():
    # Short AND repetitive: the word count is checked first.
    rules = tq.ParagraphRules(tq.ParagraphSettings.from_config(DEFAULTS["paragraph"]))
    assert rules(item("go go go", "en")).reason == "obelics_par_word_count"


# -- OBELICS document rules --------------------------------------------------------------------------


def test_document_image_count_bounds():
    rules = obelics_doc_rules(min_images=1, max_images=30)
    assert rules(item(GOOD, "en", n_images=0)).reason == "obelics_image_count"
    assert rules(item(GOOD, "en", n_images=1)).keep and rules(item(GOOD, "en", n_images=30)).keep
    assert rules(item(GOOD, "en", n_images=31)).reason == "obelics_image_count"


def test_document_word_count_bounds():
    rules = obelics_doc_rules(min_words=10, max_words=12)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu".split()
    assert rules(item(" ".join(words[:9]), "en", n_images=1)).reason == "obelics_word_count"
    assert rules(item(" ".join(words[:10]), "en", n_images=1)).keep
    assert rules(item(" ".join(words[:12]), "en", n_images=1)).keep
    assert rules(item(" ".join(words[:13]), "en", n_images=1)).reason == "obelics_word_count"


DOCUMENT_RULES = [
    ("max_char_repetition", "max", "obelics_char_repetition", REPETITIVE, lambda t: tq.char_repetition_ratio(t, 10)),
    ("max_word_repetition", "max", "obelics_word_repetition", REPETITIVE,
     lambda t: tq.word_repetition_ratio(tq.words_of(t), 5)),
    ("max_special_chars", "max", "obelics_special_chars", GOOD, tq.special_char_ratio),
    ("min_stopwords", "min", "obelics_stopwords", GOOD, lambda t: tq.share_in(tq.words_of(t), stopwords("en"))),
    ("min_punctuation", "min", "obelics_punctuation", GOOD, tq.punctuation_ratio),
    ("min_common_words", "min", "obelics_common_words", "The zorblat quexes fizzled near the old river bank.",
     lambda t: tq.share_in(tq.words_of(t), common_words("en"))),
]


@pytest.mark.parametrize(("key", "kind", "reason", "text", "measure"), DOCUMENT_RULES,
                         ids=[r[0] for r in DOCUMENT_RULES])
def test_document_rule_threshold(key, kind, reason, text, measure):
    value = measure(text)
    assert 0 < value < 1
    assert_boundary(lambda limit: obelics_doc_rules(**{key: limit})(item(text, "en", n_images=1)), value, kind, reason)


# -- Gopher and FineWeb (datatrove) ------------------------------------------------------------------


def datatrove_rules(group: str, tokenizer: str = "fast", **on) -> tq.DatatroveRules:
    """Only `group` enabled, every threshold in it off except `on`."""
    cfg = copy.deepcopy(DEFAULTS["document"])
    cfg["tokenizer"] = tokenizer
    for name in ("gopher_quality", "gopher_repetition", "fineweb"):
        cfg[name]["enabled"] = name == group
    off = {"gopher_quality": {**{k: None for k in cfg["gopher_quality"] if k != "enabled"},
                              "by_language": {"en": {k: on.pop(k, None) for k in GOPHER_KEYS},
                                              "de": {k: on.pop(f"de_{k}", None) for k in GOPHER_KEYS}}},
           "gopher_repetition": {"dup_line_frac": None, "dup_para_frac": None, "dup_line_char_frac": None,
                                 "dup_para_char_frac": None, "top_n_grams": [], "dup_n_grams": []},
           "fineweb": {"line_punct_thr": None, "short_line_thr": None, "char_duplicates_ratio": None,
                       "new_line_ratio": None}}[group]
    cfg[group].update(off)
    cfg[group].update(on)
    return tq.DatatroveRules(tq.DocumentSettings.from_config(cfg))


def dt_words(text: str) -> list[str]:
    """The words datatrove's rules count, with the tokenizer they are given."""
    from datatrove.utils.text import split_into_words

    return split_into_words(text, tq.regex_tokenizer())


WORDS = ("river mill bakery village market people weather garden bridge station harbour kitchen festival museum "
         "school field valley forest island farm").split()


def test_gopher_word_count_bounds():
    rules = datatrove_rules("gopher_quality", min_doc_words=5, max_doc_words=7)
    assert rules(item(" ".join(WORDS[:4]), "en")).reason == "gopher_word_count"
    assert rules(item(" ".join(WORDS[:5]), "en")).keep and rules(item(" ".join(WORDS[:7]), "en")).keep
    assert rules(item(" ".join(WORDS[:8]), "en")).reason == "gopher_word_count"


def test_gopher_mean_word_length_bounds():
    rules = datatrove_rules("gopher_quality", min_avg_word_length=3, max_avg_word_length=10)
    assert rules(item("ab cd ef gh", "en")).reason == "gopher_mean_word_length"
    assert rules(item("abc def ghi jkl", "en")).keep
    assert rules(item("abcdefghij klmnopqrst", "en")).keep
    assert rules(item("abcdefghijk lmnopqrstuv", "en")).reason == "gopher_mean_word_length"


def test_gopher_stop_words_minimum():
    rules = datatrove_rules("gopher_quality", min_stop_words=2, de_min_stop_words=3)
    assert rules(item("the river and the mill", "en")).keep  # the, and
    assert rules(item("the river near a mill", "en")).reason == "gopher_stop_words"  # only "the"
    assert rules(item("die Mühle und der Fluss", "de")).keep  # German Gopher stop words: die, und, der
    assert rules(item("die Mühle und ein Fluss", "de")).reason == "gopher_stop_words"  # German's own cut-off: 3


def test_gopher_line_rules_at_their_thresholds():
    bullets = "\n".join(["- item"] * 9 + ["plain line"])  # 9 of 10 lines start with a bullet
    rules = datatrove_rules("gopher_quality", max_bullet_lines_ratio=0.9)
    assert rules(item(bullets, "en")).keep
    assert rules(item("\n".join(["- item"] * 10), "en")).reason == "gopher_bullet_lines"
    assert datatrove_rules("gopher_quality", max_bullet_lines_ratio=0.9 - EPS)(item(bullets, "en")).reason == \
        "gopher_bullet_lines"
    ellipsis = "\n".join(["and then..."] * 3 + ["a full line."] * 7)  # 3 of 10 lines end with an ellipsis
    rules = datatrove_rules("gopher_quality", max_ellipsis_lines_ratio=0.3)
    assert rules(item(ellipsis, "en")).keep
    assert datatrove_rules("gopher_quality", max_ellipsis_lines_ratio=0.3 - EPS)(item(ellipsis, "en")).reason == \
        "gopher_ellipsis_lines"


@pytest.mark.parametrize(("key", "text", "count", "reason"), [
    ("max_symbol_word_ratio", "great #river #mill walk by the old bakery", "#", "gopher_hash_ratio"),
    ("max_symbol_word_ratio", "well ... the river ... walk by the bakery", "...", "gopher_ellipsis_ratio"),
])
def test_gopher_symbol_ratios(key, text, count, reason):
    value = text.count(count) / len(dt_words(text))
    assert_boundary(lambda limit: datatrove_rules("gopher_quality", **{key: limit})(item(text, "en")), value, "max",
                    reason)


def test_gopher_alpha_words_ratio():
    text = "river 12 mill 34 bakery village market people weather garden"  # 8 of 10 words have a letter
    value = sum(any(c.isalpha() for c in w) for w in dt_words(text)) / len(dt_words(text))
    assert value == pytest.approx(0.8)
    assert_boundary(lambda limit: datatrove_rules("gopher_quality", max_non_alpha_words_ratio=limit)(item(text, "en")),
                    value, "min", "gopher_alpha_words")


def _repetition_measures():
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )

    paragraphs = "The mill is old.\n\nThe river is wide.\n\nThe mill is old.\n\nThe bakery opens early."
    lines = "The mill is old.\nThe river is wide.\nThe mill is old.\nThe bakery opens early."
    ngrams = "the red shoes are red shoes and red shoes again the end of the story"
    return [
        ("dup_para_frac", paragraphs, find_duplicates(paragraphs.split("\n\n"))[0] / 4, "gopher_dup_paragraphs"),
        ("dup_para_char_frac", paragraphs, find_duplicates(paragraphs.split("\n\n"))[1] / len(paragraphs),
         "gopher_dup_paragraph_chars"),
        ("dup_line_frac", lines, find_duplicates(lines.split("\n"))[0] / 4, "gopher_dup_lines"),
        ("dup_line_char_frac", lines, find_duplicates(lines.split("\n"))[1] / len(lines), "gopher_dup_line_chars"),
        ("top_n_grams", ngrams, find_top_duplicate(get_n_grams(dt_words(ngrams), 2)) / len(ngrams),
         "gopher_top_2_gram"),
        ("dup_n_grams", REPETITIVE, find_all_duplicate(dt_words(REPETITIVE), 5) / len(REPETITIVE),
         "gopher_dup_5_grams"),
    ]


@pytest.mark.parametrize("case", range(6), ids=["dup_para", "dup_para_char", "dup_line", "dup_line_char", "top_2_gram",
                                                 "dup_5_grams"])
def test_gopher_repetition_rule_threshold(case):
    key, text, value, reason = _repetition_measures()[case]
    assert 0 < value < 1

    def verdict(limit):
        setting = [[int(reason.split("_")[2]), limit]] if key in ("top_n_grams", "dup_n_grams") else limit
        return datatrove_rules("gopher_repetition", **{key: setting})(item(text, "en"))

    assert_boundary(verdict, value, "max", reason)


def test_fineweb_rules_at_their_thresholds():
    ended = "\n".join(["A complete sentence about the river ends here."] * 2 +
                      [f"line number {w} without an ending" for w in WORDS[:8]])  # 2 of 10 lines end in '.'
    assert_boundary(lambda limit: datatrove_rules("fineweb", line_punct_thr=limit)(item(ended, "en")), 0.2, "min",
                    "fineweb_line_punct")
    short = "\n".join([f"short {w}." for w in WORDS[:6]] +
                      [f"this line about the {w} is longer than thirty characters." for w in WORDS[6:9]])
    assert_boundary(lambda limit: datatrove_rules("fineweb", short_line_thr=limit)(item(short, "en")), 6 / 9, "max",
                    "fineweb_short_lines")
    dup_lines = "\n".join(["The same line again and again."] * 2 + [f"Another line about the {w}." for w in WORDS[:8]])
    value = len("The same line again and again.") / len(dup_lines.replace("\n", ""))
    assert_boundary(lambda limit: datatrove_rules("fineweb", char_duplicates_ratio=limit)(item(dup_lines, "en")), value,
                    "max", "fineweb_char_dup")
    listy = "\n".join(f"{w} item." for w in WORDS[:6])
    value = listy.count("\n") / len(dt_words(listy))
    assert_boundary(lambda limit: datatrove_rules("fineweb", new_line_ratio=limit)(item(listy, "en")), value, "max",
                    "fineweb_list_ratio")


def test_fineweb_sees_one_paragraph_per_line():
    # Blank lines between paragraphs are not list structure: FineWeb judges trafilatura-style text.
    text = "\n\n".join([GOOD, "Another paragraph about the river, long enough to be a real one."])
    assert datatrove_rules("fineweb", new_line_ratio=1 / len(dt_words(text)) + EPS)(item(text, "en")).keep


def test_empty_text_is_no_text_not_a_crash():
    rules = tq.DatatroveRules(tq.DocumentSettings.from_config(DEFAULTS["document"]))
    assert rules(item("", "en")).reason == "no_text"
    assert rules(item("... !!! ---", "en")).reason == "no_text"


def test_fast_tokenizer_splits_words_numbers_and_punctuation():
    assert dt_words("Walt Disney's $6.99-a-month plan, (really)!") == [
        "Walt", "Disney's", "$", "6.99", "-", "a", "-", "month", "plan", ",", "(", "really", ")", "!"]


def test_datatrove_spacy_tokenizer_option():
    words = " ".join(WORDS[:5])
    rules = datatrove_rules("gopher_quality", min_doc_words=5, tokenizer="datatrove")
    assert rules(item(words, "en")).keep and rules(item(" ".join(WORDS[:4]), "en")).reason == "gopher_word_count"
    # A language whose assigned tokenizer is not installed (Japanese needs sudachipy) falls back to spaCy's 'xx'.
    assert datatrove_rules("gopher_quality", min_doc_words=3, tokenizer="datatrove")(item(words, "ja")).keep
    with pytest.raises(ValueError, match="fast' or 'datatrove"):
        datatrove_rules("gopher_quality", tokenizer="nltk")


# -- language ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "code", "script"), [
    ("__label__en", "en", ""), ("__label__eng_Latn", "en", "Latn"), ("deu_Latn", "de", "Latn"), ("EN", "en", ""),
    ("__label__fra_Latn", "fr", "Latn"), ("__label__zho_Hans", "zh", "Hans"),
    ("__label__als", "als", ""),  # lid.176's Alemannic (a Wikipedia code), not ISO 639-3 Tosk Albanian
])
def test_language_labels_are_normalized(label, code, script):
    assert normalize_language(label) == (code, script)


LANGUAGE = LanguageSettings.from_config(DEFAULTS["language"])


def language_rule(**changes) -> LanguageRule:
    return LanguageRule(dataclasses.replace(LANGUAGE, **changes))


@pytest.mark.parametrize("target", ["en", "eng", "eng_Latn", "__label__en"])
def test_target_languages_match_whatever_form_they_are_written_in(target):
    rule = language_rule(languages=[target], threshold=0.65)
    assert rule.judge(Prediction("en", 0.9, "", {"en": 0.9})).keep
    assert rule.judge(Prediction("de", 0.9, "", {"de": 0.9, "en": 0.05})).reason == "language"


def test_language_threshold():
    prediction = Prediction("en", 0.65, "", {"en": 0.65})
    assert_boundary(lambda limit: language_rule(languages=["en"], threshold=limit).judge(prediction), 0.65, "min",
                    "language")
    # A second target counts as much as the first; an empty target list keeps every language.
    assert language_rule(languages=["en", "de"], threshold=0.65).judge(Prediction("de", 0.9, "", {"de": 0.9})).keep
    assert language_rule(languages=[], threshold=0.65).judge(Prediction("de", 0.99, "", {"de": 0.99})).keep
    # Disabled, the rule only labels: the prediction is in the scores, nothing is dropped.
    verdict = language_rule(enabled=False).judge(Prediction("de", 0.99, "Latn", {"de": 0.99}))
    assert verdict.keep and verdict.scores == {"language": "de", "language_score": 0.99, "language_script": "Latn"}


def test_language_rule_runs_the_model_on_the_item_text_and_counts():
    rule = language_rule(languages=["en"])
    english = rule(item(GOOD, ""))
    assert english.keep and english.scores["language"] == "en" and english.scores["target_score"] >= 0.65
    german = rule(item("Der Fluss fließt an der alten Mühle und der Bäckerei vorbei, wo das Dorf seinen Markt hält.",
                       ""))
    assert (german.reason, german.scores["language"]) == ("language", "de")
    assert rule.stats == {"kept": 1, "dropped": 1, "dropped/language": 1}


# -- safety text rules -------------------------------------------------------------------------------


def safety(**kw) -> TextSafety:
    flagged = FlaggedWordsSettings(enabled=True, max_ratio=kw.get("flagged"))
    spam = SpamSettings(enabled=True, max_ratio=kw.get("spam"), min_hits=kw.get("min_hits", 1))
    return TextSafety(flagged, spam)


def test_flagged_words_threshold():
    text = " ".join(WORDS * 5)[: -len(WORDS[-1])] + "shit"  # 1 flagged word in 100
    assert len(tq.words_of(text)) == 100
    assert_boundary(lambda limit: safety(flagged=limit)(item(text, "en")), 0.01, "max", "flagged_words")
    assert safety(flagged=0.01)(item(" ".join(WORDS * 5), "en")).keep


def test_spam_ratio_and_minimum_hits():
    text = "Buy now! Free shipping on every order. Click here for the lowest price, buy now. " + " ".join(WORDS)
    ratio, hits = spam_ratio(tq.words_of(text))
    assert hits == 5  # buy now (twice), free shipping, click here, lowest price
    assert_boundary(lambda limit: safety(spam=limit, min_hits=5)(item(text, "en")), ratio, "max", "spam")
    assert safety(spam=0.0, min_hits=6)(item(text, "en")).keep  # too few occurrences to call it spam
    assert spam_ratio(tq.words_of(GOOD)) == (0.0, 0)
