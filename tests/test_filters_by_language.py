"""Cut-offs per language: every rule whose statistic depends on the language judges a document only by its own
language's cut-off (never another's), skips a language without one and says so, and the shipped German cut-offs
still remove what the rules exist for (keyword lists, boilerplate, machine-made noise) while keeping German prose."""

from __future__ import annotations

import copy
import random

import pytest

from filters import text_quality as tq
from filters.base import TextItem
from filters.calibration import CUTOFFS, LANGUAGE_RULES, Cutoff
from pipeline.filter.transforms import DocumentFilters, FilterSettings, skipped_name
from pipeline.settings import load_config
from schemas.document import Document, Image, Node

DEFAULTS = load_config()["filters"]

# Hand-written German prose (a news report): passes every rule with German's cut-offs.
GERMAN = [
    "Die Bundesregierung hat am Mittwoch einen Gesetzentwurf zur Förderung von Wärmepumpen beschlossen. "
    "Hausbesitzer sollen künftig bis zu siebzig Prozent der Kosten erstattet bekommen, wenn sie ihre alte Ölheizung "
    "austauschen.",
    "Verbraucherschützer begrüßten die Entscheidung, kritisierten aber die lange Bearbeitungszeit der "
    "Förderanträge. In manchen Bundesländern warten Antragsteller seit Monaten auf eine Antwort der zuständigen "
    "Behörde.",
    "Auch die Handwerksbetriebe sehen Nachholbedarf. Es fehle an Fachkräften, sagte der Sprecher des "
    "Zentralverbands, und viele Heizungsinstallateure seien bereits bis zum Jahresende ausgebucht.",
    "Die Opposition sprach von einem Schnellschuss. Statt neuer Förderprogramme brauche es verlässliche "
    "Rahmenbedingungen, damit Eigentümer und Mieter langfristig planen könnten.",
    "Der Bundestag soll noch vor der Sommerpause über den Entwurf abstimmen. Danach muss auch der Bundesrat "
    "zustimmen, in dem die Länder ihre eigenen Vorstellungen einbringen wollen.",
]
ENGLISH = ("The river runs past the old mill and the bakery, where the village keeps its market on Saturday "
           "mornings. Most of the people who live there have known each other for many years, and they like to "
           "talk about the weather.")

# Planted low-quality German text, what the word-share rules exist for.
SEO_WORDS = ("Kredit Sofortkredit Ratenkredit Kreditvergleich günstig online Zinsen Schufa Autokredit Kreditrechner "
             "Umschuldung beantragen Testsieger Vergleich Rechner Angebot sofort Auszahlung Handyvertrag Tarif "
             "Stromanbieter wechseln billig Gutschein Rabatt Versandkostenfrei Bestpreis Schnäppchen kaufen bestellen "
             "Lieferung Sonderangebot Preisvergleich Tagesgeld Festgeld Zinsrechner Depot Aktien Broker Sparplan "
             "Versicherung Haftpflicht Rechtsschutz Kfz Reiseversicherung Urlaub Pauschalreise Hotel").split()
BOILERPLATE = ("Startseite | Über uns | Leistungen | Kontakt | Impressum | Datenschutz | AGB | Newsletter abonnieren | "
               "Cookie-Einstellungen | Barrierefreiheit | Sitemap | © 2024 Alle Rechte vorbehalten")
FUNCTION_WORDS = "die der das und mit von auf für ist nicht auch wird bei nach".split()


def keywords(seed: int, n: int = 20) -> str:
    """A keyword-stuffed line: search terms and nothing between them."""
    return " ".join(random.Random(seed).sample(SEO_WORDS, n))


def machine_noise(seed: int, words: int = 40) -> str:
    """A broken text spinner's output: German function words, each followed by an invented word."""
    rng = random.Random(seed)
    syllables = ["grun", "zel", "fab", "rot", "wim", "mel", "hu", "kröb", "sta", "zung", "blan", "ter", "zob", "quax"]
    pairs = [f"{rng.choice(FUNCTION_WORDS)} {''.join(rng.choices(syllables, k=rng.randint(2, 4)))}"
             for _ in range(words // 2)]
    return ", ".join(" ".join(pairs[i:i + 4]) for i in range(0, len(pairs), 4)).capitalize() + "."


# -- no rule judges by another language's cut-off ----------------------------------------------------------------

# Per cut-off: a value no ordinary text passes, and one every ordinary text passes.
EXTREME = {"min_stopwords": 1.0, "min_common_words": 1.0, "min_stop_words": 9, "min_avg_word_length": 100.0,
           "max_avg_word_length": 0.5}
LENIENT = {"min_stopwords": 0.01, "min_common_words": 0.01, "min_stop_words": 1, "min_avg_word_length": 1.0,
           "max_avg_word_length": 50.0}


def only(cutoff: Cutoff, entries: dict[str, float]):
    """A rule object running `cutoff`'s rule alone (every other threshold off), with `entries` (language → value of
    this cut-off; the table's other keys null) as its by_language table."""
    document = copy.deepcopy(DEFAULTS["document"])
    keys = {"paragraph": ("min_stopwords", "min_common_words"), "obelics": ("min_stopwords", "min_common_words"),
            "gopher_quality": ("min_stop_words", "min_avg_word_length", "max_avg_word_length")}[cutoff.table]
    table = {lang: {key: value if key == cutoff.key else None for key in keys} for lang, value in entries.items()}
    if cutoff.table == "paragraph":
        section = {k: (None if k.startswith(("min_", "max_")) else v) for k, v in DEFAULTS["paragraph"].items()}
        return tq.ParagraphRules(tq.ParagraphSettings.from_config({**section, "by_language": table}))
    if cutoff.table == "obelics":
        section = {k: (None if k.startswith(("min_", "max_")) else v) for k, v in document["obelics"].items()}
        return tq.ObelicsDocumentRules(tq.ObelicsDocumentSettings.from_config({**section, "by_language": table}))
    for group in ("gopher_repetition", "fineweb"):
        document[group]["enabled"] = False
    quality = {k: (None if k.startswith(("min_", "max_")) else v) for k, v in document["gopher_quality"].items()}
    document["gopher_quality"] = {**quality, "by_language": table}
    return tq.DatatroveRules(tq.DocumentSettings.from_config(document))


GERMAN_TEXT = "\n\n".join(GERMAN)
ENGLISH_TEXT = "\n\n".join([ENGLISH, ENGLISH.replace("market", "fair"), ENGLISH.replace("river", "zorblat brook")])


@pytest.mark.parametrize("cutoff", CUTOFFS, ids=[c.name for c in CUTOFFS])
def test_no_rule_judges_a_language_by_another_languages_cut_off(cutoff):
    # English's cut-off drops every text; German has no entry: a German document is not judged, and says so.
    rule = only(cutoff, {"en": EXTREME[cutoff.key]})
    assert rule(TextItem(ENGLISH_TEXT, "en", n_images=1)).reason == cutoff.rule
    german = rule(TextItem(GERMAN_TEXT, "de", n_images=1))
    assert german.keep and cutoff.rule in german.skipped
    # German's own cut-off drops every text, English's keeps: each language is judged by its own.
    rule = only(cutoff, {"en": LENIENT[cutoff.key], "de": EXTREME[cutoff.key]})
    english = rule(TextItem(ENGLISH_TEXT, "en", n_images=1))
    assert english.keep and cutoff.rule not in english.skipped
    assert rule(TextItem(GERMAN_TEXT, "de", n_images=1)).reason == cutoff.rule


def test_every_language_dependent_rule_has_a_cut_off_and_a_shipped_english_one():
    assert set(LANGUAGE_RULES) == {"obelics_par_stopwords", "obelics_par_common_words", "obelics_stopwords",
                                   "obelics_common_words", "gopher_stop_words", "gopher_mean_word_length"}
    tables = {"paragraph": DEFAULTS["paragraph"], "obelics": DEFAULTS["document"]["obelics"],
              "gopher_quality": DEFAULTS["document"]["gopher_quality"]}
    for cutoff in CUTOFFS:
        assert tables[cutoff.table]["by_language"]["en"][cutoff.key] is not None, cutoff.name
        assert cutoff.key not in tables[cutoff.table]  # no cut-off outside the per-language table


def test_a_rule_reached_only_after_an_earlier_drop_is_not_counted_as_skipped():
    rules = tq.ParagraphRules(tq.ParagraphSettings.from_config(DEFAULTS["paragraph"]))
    assert rules(TextItem("eins zwei", "it")).skipped == ()  # dropped by the word count before any word-share rule
    assert rules(TextItem(GERMAN[0], "it")).skipped == ("obelics_par_stopwords", "obelics_par_common_words")


def test_table_keys_are_matched_as_documents_are_labelled():
    table = {"deu": {"min_stopwords": 0.99, "min_common_words": None}}  # ISO 639-3, as GlotLID users write it
    section = {**DEFAULTS["paragraph"], "by_language": table}
    rules = tq.ParagraphRules(tq.ParagraphSettings.from_config(section))
    assert rules(TextItem(GERMAN[0], "de")).reason == "obelics_par_stopwords"


def test_a_user_config_adds_a_language_to_a_table_but_no_unknown_key():
    from pipeline.config import ConfigError

    config = load_config(overrides=["filters.paragraph.by_language.sv={min_stopwords: 0.25, min_common_words: 0.7}"])
    assert config["filters"]["paragraph"]["by_language"]["sv"] == {"min_stopwords": 0.25, "min_common_words": 0.7}
    with pytest.raises(ConfigError, match=r"'filters.paragraph.by_language.sv': unknown keys \['min_stopword'\]"):
        load_config(overrides=["filters.paragraph.by_language.sv={min_stopword: 0.25, min_common_words: 0.7}"])
    with pytest.raises(ConfigError, match="unknown config key 'filters.paragraph.sv'"):
        load_config(overrides=["filters.paragraph.sv=0.3"])


# -- the shipped German cut-offs ----------------------------------------------------------------------------------


def document(paragraphs: list[str], url: str = "https://www.example.de/artikel.html") -> Document:
    nodes = [Node(text=paragraphs[0]), Node(image=Image("https://img.example.de/1.jpg"))]
    nodes += [Node(text="\n\n".join(paragraphs[1:]))] if paragraphs[1:] else []
    return Document(doc_id="0" * 20, url=url, nodes=nodes, warc_filename="t.warc.gz", warc_record_offset=0)


@pytest.fixture(scope="module")
def german_filters() -> DocumentFilters:
    """`m3w filter --set 'filters.language.languages=[de]'`: the shipped tables."""
    return DocumentFilters(FilterSettings.from_config(
        load_config(overrides=["filters.language.languages=[de]"])["filters"]))


def test_german_prose_passes_every_rule_with_germans_cut_offs(german_filters):
    result = german_filters(document(GERMAN))
    assert result.document is not None, result.verdict
    assert result.paragraph_drops == [] and not result.document_skips and not result.paragraph_skips


@pytest.mark.parametrize(("planted", "reason"), [
    (keywords(0), "obelics_par_stopwords"),
    (BOILERPLATE, "obelics_par_stopwords"),
    (machine_noise(1), "obelics_par_common_words"),
], ids=["keywords", "boilerplate", "machine_noise"])
def test_germans_cut_offs_remove_planted_junk_paragraphs(german_filters, planted, reason):
    result = german_filters(document([GERMAN[0], planted, *GERMAN[1:]]))
    assert [(why, text) for why, text, _ in result.paragraph_drops] == [(reason, planted)]
    assert result.document is not None and planted not in result.document.text


@pytest.mark.parametrize(("planted", "reason"), [
    ([" ".join(SEO_WORDS[i::5]) for i in range(5)], "obelics_stopwords"),
    ([machine_noise(seed) for seed in range(5)], "obelics_common_words"),
], ids=["keywords", "machine_noise"])
def test_germans_cut_offs_drop_documents_made_of_junk(planted, reason):
    """A document of nothing but junk, judged by the document rules (the paragraph rules switched off, as a page whose
    paragraphs each pass could still add up to one)."""
    filters = DocumentFilters(FilterSettings.from_config(load_config(overrides=[
        "filters.language.languages=[de]", "filters.paragraph.enabled=false",
        "filters.document.gopher_repetition.enabled=false", "filters.document.fineweb.enabled=false"])["filters"]))
    result = filters(document(planted))
    assert result.examined.metadata["language"] == "de" and result.verdict.reason == reason


def test_skipped_rules_are_counted_per_rule_and_language_and_balance(tmp_path):
    """`m3w filter` over every language: a language without cut-offs (Italian has word lists, no entry) is counted as
    info per rule and language, and in = out + drops still holds."""
    from pipeline.io.documents import parquet_bytes
    from pipeline.jobs.stages import run_filter

    italian = ["Il vecchio mulino si trova ai margini del paese, dove il fiume piega verso il bosco. Per più di un "
               "secolo ha macinato il grano che i contadini portavano dai campi vicini.",
               "Quando l'ultimo mugnaio è andato in pensione, l'edificio è rimasto vuoto per alcuni anni, finché un "
               "gruppo di vicini ha raccolto il denaro per riparare il tetto.",
               "Oggi i volontari spiegano ai visitatori come l'acqua veniva guidata nel canale e perché il mugnaio "
               "doveva controllare il livello del fiume durante le piene di primavera."]
    docs = [document(GERMAN), document(italian, url="https://www.example.it/mulino.html")]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.parquet").write_bytes(parquet_bytes(docs, False, "zstd"))
    config = load_config(overrides=["runner.direct_running_mode=in_memory", "filters.language.languages=[]"])
    report = run_filter([str(tmp_path / "in")], str(tmp_path / "out"), config)
    assert report["unbalanced"] == [] and report["broken_links"] == []
    documents, paragraphs = report["stages"]["filter"]["documents"], report["stages"]["filter_paragraphs"]["paragraphs"]
    assert documents["in"] == 2
    # The Italian document reaches the Gopher rules only if the OBELICS rules keep it: count what it reached.
    assert {name for name in documents["info"] if name.endswith("_it")} >= {
        skipped_name("obelics_stopwords", "it"), skipped_name("obelics_common_words", "it")}
    assert paragraphs["info"] == {skipped_name("obelics_par_stopwords", "it"): 3,
                                  skipped_name("obelics_par_common_words", "it"): 3}
    assert not [name for name in documents["info"] if name.endswith("_de")]  # German has its own cut-offs


# -- a second language end to end: the sample crawl's German pages -------------------------------------------------


def crawl_pages(crawl_dir, urls: set[str]):
    """The responses of `urls` in the crawl's WARC, as the reader hands them on."""
    from warcio.archiveiterator import ArchiveIterator

    from pipeline.read.crawl import Page

    pages = []
    with open(crawl_dir / "crawl.warc.gz", "rb") as handle:
        for record in ArchiveIterator(handle):
            url = record.rec_headers.get_header("WARC-Target-URI")
            if record.rec_type == "response" and url in urls:
                pages.append(Page(url=url, body=record.content_stream().read(), charset=None, source="crawl"))
    return pages


def test_the_sample_crawls_german_pages_are_judged_by_germans_cut_offs(small_sample_crawl):
    """Read from the WARC, extracted and filtered as `m3w build --set 'filters.language.languages=[de]'` does: every
    German page is kept by German's cut-offs, and the German news (German's own word statistics) would be dropped by
    English's (`obelics_common_words`), which is what m3w did before per-language cut-offs."""
    import json

    from pipeline.jobs.stages import extract_page

    truth = json.loads((small_sample_crawl / "ground_truth.json").read_text())
    german = {page["url"]: page for page in truth["pages"] if page["lang"] == "de"}
    assert sum("german_news" in page["tags"] for page in german.values()) == 3
    assert all(page["expected"]["filters"] == "language" for page in german.values())  # the demo's English run
    config = load_config(overrides=["extract.timeout_s=0", "filters.language.languages=[de]"])
    documents = {page.url: extract_page(page, config).document for page in crawl_pages(small_sample_crawl, set(german))}
    assert len(documents) == len(german) and all(doc is not None for doc in documents.values())
    own = DocumentFilters(FilterSettings.from_config(config["filters"]))
    english = copy.deepcopy(config["filters"])
    for table in (english["paragraph"], english["document"]["obelics"], english["document"]["gopher_quality"]):
        table["by_language"]["de"] = table["by_language"]["en"]
    before = DocumentFilters(FilterSettings.from_config(english))
    for url, doc in documents.items():
        result = own(doc)
        assert result.document is not None and result.examined.metadata["language"] == "de", (url, result.verdict)
        if "german_news" in german[url]["tags"]:
            assert before(doc).verdict.reason == "obelics_common_words", url


def test_the_filter_summary_names_the_rules_that_did_not_judge_a_language(capsys):
    from pipeline.commands import print_report_summary

    entry = {"in": 2, "out": 1, "dropped": {"language": 1}, "info": {"skipped_obelics_common_words_it": 1}}
    print_report_summary({"stages": {"filter": {"documents": entry}}})
    out = capsys.readouterr().out
    assert "not judged, no cut-off for the language (rule_language): obelics_common_words_it=1" in out
