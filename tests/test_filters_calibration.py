"""Calibration of the per-language cut-offs (filters/calibration.py, `m3w calibrate`): each placement method on
distributions whose answer is known, the command end to end on generated documents, and (slow) the shipped table
reproduced from the real fixture pages with the documented command, its drop shares held against drift."""

from __future__ import annotations

import random

import numpy as np
import pytest
import yaml

from filters.calibration import CUTOFFS, Position, Sample, calibrate, half_of, measure_reference, place
from pipeline.filter.transforms import FilterSettings
from pipeline.settings import load_config

BY_NAME = {c.name: c for c in CUTOFFS}
FILTERS = FilterSettings.from_config(load_config()["filters"], "filters")


def test_the_quantile_where_both_samples_hold_enough_items_beyond_the_cut_off():
    values = np.arange(1, 1001) / 1000  # 0.001 .. 1.0
    reference = Position(cutoff=0.8, dropped=0.1, median=0.9, iqr=0.1, items=200)  # 20 reference items below
    placed = place(BY_NAME["paragraph.min_common_words"], reference, values, min_items=300, min_tail_items=5)
    assert placed.method == "quantile" and placed.value == pytest.approx(0.1, abs=0.002)
    assert placed.position.dropped == pytest.approx(0.1, abs=0.002)  # it drops the same share of this language


def test_the_median_and_interquartile_range_where_the_tail_is_too_thin():
    values = np.array([0.84, 0.86, 0.88, 0.90, 0.92])  # median 0.88, quartiles 0.86 and 0.90
    reference = Position(cutoff=0.9, dropped=0.0, median=0.96, iqr=0.02, items=100)
    placed = place(BY_NAME["obelics.min_common_words"], reference, values, min_items=5, min_tail_items=5)
    # 3 interquartile ranges below English's median → 3 of this language's below its median: 0.88 - 3 × 0.04.
    assert placed.method == "median and interquartile range" and placed.value == pytest.approx(0.76)
    # A tail of 4 reference items (< 5) is too thin for a quantile, even with enough items of the language.
    thin = Position(cutoff=0.9, dropped=0.04, median=0.96, iqr=0.02, items=100)
    assert place(BY_NAME["obelics.min_common_words"], thin, values, 5, 5).method == "median and interquartile range"


def test_a_saturated_count_shifts_with_the_median_and_counts_stay_whole():
    cutoff = BY_NAME["gopher_quality.min_stop_words"]
    reference = Position(cutoff=2, dropped=0.0, median=8.0, iqr=1.0, items=100)
    placed = place(cutoff, reference, np.array([7.0] * 30), 30, 5)  # every document has 7 of the 8 words
    assert placed.method == "median shift" and placed.value == 1.0
    placed = place(cutoff, reference, np.array([6.0, 7.0, 7.0, 8.0, 8.0] * 6), 30, 5)  # median 7, IQR 1
    assert placed.value == 1.0 and placed.value == int(placed.value)


def test_values_stay_in_the_statistics_range_and_too_little_data_places_nothing():
    reference = Position(cutoff=0.35, dropped=0.0, median=0.5, iqr=0.01, items=100)
    wide = np.linspace(0.1, 0.9, 40)  # the same distance in much wider quartiles lies below 0
    assert place(BY_NAME["obelics.min_stopwords"], reference, wide, 30, 5).value == 0.0
    placed = place(BY_NAME["obelics.min_stopwords"], reference, wide[:29], 30, 5)
    assert placed.value is None and placed.method == "29 items, fewer than 30"
    assert place(BY_NAME["obelics.min_stopwords"], reference, None, 30, 5).method == "no word list for the language"
    assert place(BY_NAME["obelics.min_stopwords"], None, wide, 30, 5).value is None


def test_the_halves_split_by_url_deterministically_and_evenly():
    urls = [f"https://site{i}.example/page" for i in range(2000)]
    halves = [half_of(url) for url in urls]
    assert halves == [half_of(url) for url in urls]
    assert 900 < halves.count("calibration") < 1100


def writer_sample(lang: str, documents: int, seed: int = 0) -> list[str]:
    """Generated articles (the sample crawl's own text sources): each a few paragraphs of one language."""
    from pipeline.sampledata.crawl import text

    rng = random.Random(seed)
    texts = []
    for _ in range(documents):
        if lang == "en":
            writer = text.EnglishWriter(random.Random(rng.getrandbits(64)), rng.choice(text.TOPICS))
        else:
            writer = text.FOREIGN_WRITERS[lang](random.Random(rng.getrandbits(64)))
        texts.append("\n\n".join(writer.paragraph() for _ in range(5)))
    return texts


def test_a_language_with_the_reference_statistics_gets_the_reference_cut_offs():
    """Calibrating English against English's own positions gives back English's cut-offs (up to the quantile's
    interpolation), the fixed point of the method."""
    sample = Sample.of("en", writer_sample("en", 40))
    reference = measure_reference(sample, FILTERS.paragraph, FILTERS.document)
    settings = FILTERS.calibration.__class__(reference_language="en", min_tail_items=5, min_documents=30,
                                             min_paragraphs=100)
    calibration = calibrate(sample, reference, FILTERS.paragraph, FILTERS.document, settings)
    expected = {"paragraph": {"min_stopwords": 0.3, "min_common_words": 0.8},
                "obelics": {"min_stopwords": 0.35, "min_common_words": 0.9},
                "gopher_quality": {"min_stop_words": 2, "min_avg_word_length": 3, "max_avg_word_length": 10}}
    for table, entry in calibration.entries().items():
        for key, value in entry.items():
            placed = calibration.placed[f"{table}.{key}"]
            if placed.method == "quantile":  # any value between two neighbouring items drops the same share
                assert placed.position.dropped == pytest.approx(reference[f"{table}.{key}"].dropped, abs=0.02)
            else:
                assert value == pytest.approx(expected[table][key], abs=1e-3), (table, key, placed)


def write_documents(path, texts: list[str], host: str) -> None:
    from pipeline.io.documents import parquet_bytes
    from schemas.document import Document, Image, Node

    docs = [Document(doc_id=f"{i:020d}", url=f"https://{host}/{i}.html", warc_filename="t.warc.gz",
                     warc_record_offset=i, nodes=[Node(text=t), Node(image=Image(f"https://{host}/{i}.jpg"))])
            for i, t in enumerate(texts)]
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{host}.parquet").write_bytes(parquet_bytes(docs, False, "zstd"))


def test_m3w_calibrate_writes_a_reference_and_a_config_a_filter_run_takes(tmp_path, capsys):
    from pipeline.cli import main

    docs = tmp_path / "docs" / "documents"
    write_documents(docs, writer_sample("en", 12), "en.example")
    write_documents(docs, writer_sample("de", 12, seed=1), "de.example")
    small = ["--set", "filters.calibration.min_documents=10", "--set", "filters.calibration.min_paragraphs=40"]
    reference, german = tmp_path / "reference.yaml", tmp_path / "de.yaml"
    assert main(["calibrate", "--input", str(tmp_path / "docs"), "--language", "en", "--output", str(reference),
                 *small]) == 0
    positions = yaml.safe_load(reference.read_text())
    assert positions["language"] == "en" and positions["documents"] == 12
    assert positions["positions"]["obelics.min_common_words"]["cutoff"] == 0.9
    assert main(["calibrate", "--input", str(tmp_path / "docs"), "--language", "de", "--reference", str(reference),
                 "--output", str(german), *small]) == 0
    out = capsys.readouterr().out
    assert "m3w calibrate: de, 12 documents" in out
    assert "| obelics.min_common_words | obelics_common_words | 0.9 |" in out
    config = load_config(user_yaml=str(german))  # the written YAML is a config of its own
    entry = config["filters"]["paragraph"]["by_language"]["de"]
    assert set(entry) == {"min_stopwords", "min_common_words"} and all(0 < v < 1 for v in entry.values())
    # Positions measured at other English cut-offs than the config's are refused, naming the cut-off.
    code = main(["calibrate", "--input", str(tmp_path / "docs"), "--language", "de", "--reference", str(reference),
                 "--set", "filters.document.obelics.by_language.en.min_common_words=0.85", *small])
    assert code == 2 and "obelics.min_common_words = 0.9, the config gives 0.85" in capsys.readouterr().err
    # Too few documents of the language: nothing placed, exit 1, the table says why.
    code = main(["calibrate", "--input", str(tmp_path / "docs"), "--language", "fr", "--reference", str(reference)])
    captured = capsys.readouterr()
    assert code == 1 and "0 items, fewer than 300" in captured.out and "no cut-off placed for fr" in captured.err


def test_the_shipped_reference_was_measured_at_the_shipped_english_cut_offs():
    from pipeline.commands.calibrate import check_reference, load_reference

    reference = load_reference(None, "en")
    check_reference(reference, FILTERS, "en", None)
    assert set(reference["positions"]) == set(BY_NAME)


# -- the shipped table on the real fixture pages (slow: extracts every page) -------------------------------------

@pytest.fixture(scope="module")
def fixture_languages():
    from benchmarks._fixture_warc import fixture_pages
    from benchmarks.filter_languages import by_language, extracted_documents

    return by_language(extracted_documents(fixture_pages()))


@pytest.mark.slow
def test_the_shipped_cut_offs_reproduce_and_their_drop_shares_hold(fixture_languages):
    """docs/filters.md's commands, in process: English's positions and German's cut-offs from the calibration half
    are the shipped ones; on the evaluation half German's word-share drops stay within 10 points of English's, and
    the benchmark's shares stay where docs/filters.md reports them."""
    from benchmarks.filter_languages import WORD_SHARE_DOCUMENT_RULES, WORD_SHARE_PARAGRAPH_RULES, measure
    from pipeline.commands.calibrate import load_reference

    halves = {lang: Sample.of(lang, [d.text for d in docs if half_of(d.url) == "calibration"])
              for lang, docs in fixture_languages.items()}
    shipped = load_reference(None, "en")["positions"]
    measured = measure_reference(halves["en"], FILTERS.paragraph, FILTERS.document)
    assert measured == shipped
    german = calibrate(halves["de"], shipped, FILTERS.paragraph, FILTERS.document, FILTERS.calibration)
    defaults = load_config()["filters"]
    assert german.entries() == {"paragraph": defaults["paragraph"]["by_language"]["de"],
                                "obelics": defaults["document"]["obelics"]["by_language"]["de"],
                                "gopher_quality": defaults["document"]["gopher_quality"]["by_language"]["de"]}
    for lang in ("fr", "es"):  # too few pages in the fixtures: no cut-offs shipped
        assert lang not in defaults["paragraph"]["by_language"]
        assert len(halves.get(lang, Sample(lang, [])).documents) < FILTERS.calibration.min_documents

    rows = {(lang, label, half): out for lang, label, half, out in measure(
        {lang: fixture_languages[lang] for lang in ("en", "de")}, full_run=False)}
    shares = {key: (100 * out.share(WORD_SHARE_DOCUMENT_RULES), 100 * out.share(WORD_SHARE_PARAGRAPH_RULES, True))
              for key, out in rows.items()}
    # (documents, paragraphs) dropped by the word-share rules, % — the table in docs/filters.md. Extraction decides
    # which text they judge: a document is 3 points of a half, a paragraph 0.15.
    reported = {
        ("en", "en's own", "calibration"): (0.0, 11.0), ("en", "en's own", "evaluation"): (4.2, 10.3),
        ("de", "de's own", "calibration"): (5.3, 11.7), ("de", "de's own", "evaluation"): (9.4, 8.9),
        ("de", "en's", "calibration"): (42.1, 15.2), ("de", "en's", "evaluation"): (28.1, 14.0),
    }
    assert set(shares) == set(reported)
    for key, (documents, paragraphs) in reported.items():
        assert shares[key][0] == pytest.approx(documents, abs=7) and shares[key][1] == pytest.approx(paragraphs, abs=3)
    # Done when: on pages the cut-offs were not set on, German's word-share drops within 10 points of English's.
    assert abs(shares[("de", "de's own", "evaluation")][0] - shares[("en", "en's own", "evaluation")][0]) <= 10
    assert shares[("de", "en's", "calibration")][0] > shares[("de", "de's own", "calibration")][0] + 15
