"""The document filters as a whole (order, switches, paragraph cleaning, metadata) and as Beam jobs
(`m3w filter`: counts balance per reason, audit output, determinism, the CLI)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from pipeline.config import ConfigError
from pipeline.core.failures import BreakerSettings
from pipeline.filter.transforms import DocumentFilters, FilterSettings
from pipeline.io.documents import document_files, parquet_bytes, read_documents
from pipeline.jobs.stages import run_filter
from pipeline.settings import load_config
from schemas.document import Document, Image, Node

# Hand-written for these tests: ordinary English prose that passes every default rule.
PARAGRAPHS = [
    "The old mill stands at the edge of the village, where the river bends towards the forest. For more than a "
    "century it ground the wheat that farmers brought in from the surrounding fields, and many families still "
    "remember the sound of its wheel.",
    "When the last miller retired, the building was left empty for several years. A group of neighbours decided "
    "that it should not fall apart, so they raised money, repaired the roof and opened the doors to visitors every "
    "weekend in summer.",
    "Inside, you can see the original stones and the wooden gears that turned them. Volunteers explain how the water "
    "was guided into the channel and why the miller had to watch the level of the river so carefully during the "
    "spring floods.",
    "The small café next to the mill serves bread baked with flour from the restored stones. It is not cheap, but "
    "the loaves are good, and the money helps to pay for the work that still has to be done on the walls and the "
    "old bridge.",
    "If you plan to visit, come early in the morning, before the coach parties arrive. The path along the river is "
    "quiet at that hour, and with a little luck you will see herons fishing in the shallow water below the weir.",
]
GERMAN = ("Die alte Mühle steht am Rand des Dorfes, wo der Fluss zum Wald hin abbiegt. Mehr als hundert Jahre lang "
          "mahlte sie das Korn, das die Bauern von den umliegenden Feldern brachten, und viele Familien erinnern sich "
          "noch an das Geräusch ihres Rades.")
JUNK = "Home | About us | Contact | Login"


def image(n: int) -> Node:
    return Node(image=Image(f"https://img.example.org/{n}.jpg", alt=f"photo {n}"))


def article(url: str = "https://www.example.org/mill.html", paragraphs: list[str] | None = None,
            images: int = 2, doc_id: str | None = None) -> Document:
    paras = list(PARAGRAPHS if paragraphs is None else paragraphs)
    nodes: list[Node] = [Node(text=paras[0])]
    for i in range(images):
        nodes.append(image(i))
        chunk = paras[1 + 2 * i: 3 + 2 * i]
        if chunk:
            nodes.append(Node(text="\n\n".join(chunk)))
    doc_id = doc_id or f"{abs(hash(url)) % 10**12:012x}aaaaaaaa"
    return Document(doc_id=doc_id, url=url, nodes=nodes, warc_filename="test.warc.gz", warc_record_offset=0)


def config(*overrides: str):
    return load_config(overrides=["runner.direct_running_mode=in_memory", *overrides])


def settings(*overrides: str) -> FilterSettings:
    return FilterSettings.from_config(config(*overrides)["filters"])


def document_filters(*overrides: str) -> DocumentFilters:
    return DocumentFilters(settings(*overrides))


BREAKER = BreakerSettings.from_config(config()["runner"]["circuit_breaker"])


@pytest.fixture(scope="module")
def filters() -> DocumentFilters:
    return document_filters()


def test_filter_settings_are_exactly_the_filters_section():
    section = config()["filters"]
    typed = dataclasses.asdict(FilterSettings.from_config(section, "filters"))
    assert json.loads(json.dumps(typed)) == section  # the [n, share] pairs are tuples there
    broken = copy.deepcopy(section)
    broken["paragraph"]["min_word"] = broken["paragraph"].pop("min_words")
    expected = r"'filters.paragraph': unknown keys \['min_word'\], missing keys \['min_words'\]"
    with pytest.raises(ConfigError, match=expected):
        FilterSettings.from_config(broken, "filters")


def test_good_article_is_kept_with_its_language_and_scores(filters):
    result = filters(article())
    doc = result.document
    assert doc is not None, result.verdict
    assert doc.metadata["language"] == "en" and doc.metadata["language_score"] > 0.9
    scores = doc.metadata["filter_scores"]
    assert scores["flagged_words"] == 0 and scores["spam"] == 0 and scores["images"] == 2
    assert 0.35 <= scores["stopwords"] and scores["common_words"] >= 0.9
    assert result.paragraphs_in == 5 and result.paragraph_drops == []
    assert [n.image is not None for n in doc.nodes] == [False, True, False, True, False]


def with_text(doc: Document, extra: str) -> Document:
    doc.nodes[0] = Node(text=doc.nodes[0].text + "\n\n" + extra)
    return doc


PROFANE = "What the shit, this fucking machine is a piece of crap and the damn bitch of a boss will not fix it."
SPAM = "Buy now cheap watches best price! Click here, free shipping, order now, lowest price online, buy now. " * 3


@pytest.mark.parametrize(("doc", "reason", "switch"), [
    (article(paragraphs=[GERMAN, GERMAN + " Eins.", GERMAN + " Zwei."], images=1), "language",
     "filters.language.enabled=false"),
    (article(url="https://www.00sex.com/mill.html"), "url_blocklist", "filters.safety.url_blocklist.enabled=false"),
    (with_text(article(), PROFANE + " " + PROFANE), "flagged_words", "filters.safety.flagged_words.enabled=false"),
    (with_text(article(), SPAM), "spam", "filters.safety.spam.enabled=false"),
    (article(images=0), "obelics_image_count", "filters.document.obelics.enabled=false"),
    (article(paragraphs=PARAGRAPHS[:1], images=1), "gopher_word_count",
     "filters.document.gopher_quality.enabled=false"),
])
def test_each_filter_drops_with_its_reason_and_can_be_switched_off(filters, doc, reason, switch):
    assert filters(copy.deepcopy(doc)).verdict.reason == reason
    assert document_filters(switch)(copy.deepcopy(doc)).verdict.reason != reason


def test_language_label_is_kept_when_language_filtering_is_off():
    doc = article(paragraphs=[GERMAN, GERMAN + " Eins.", GERMAN + " Zwei."], images=1)
    result = document_filters("filters.language.enabled=false")(doc)
    assert result.examined.metadata["language"] == "de"
    assert "language" not in doc.metadata  # the input document is never changed


def test_other_target_languages():
    doc = article(paragraphs=[GERMAN, GERMAN.replace("alte", "neue"), GERMAN.replace("Dorfes", "Ortes")], images=1)
    german_only = document_filters("filters.language.languages=[de]")
    result = german_only(doc)
    assert result.verdict.reason != "language" and result.examined.metadata["language"] == "de"
    assert german_only(article()).verdict.reason == "language"


def test_failing_paragraphs_are_removed_and_the_document_stays(filters):
    doc = article()
    doc.nodes.insert(0, Node(text=JUNK))
    doc.nodes[3] = Node(text=doc.nodes[3].text + "\n\nShare this:\n\nok")
    result = filters(doc)
    kept = result.document
    assert kept is not None
    assert sorted(reason for reason, _, _ in result.paragraph_drops) == [
        "obelics_par_special_chars", "obelics_par_word_count", "obelics_par_word_count"]
    assert result.paragraphs_in == 8
    assert JUNK not in kept.text and "Share this" not in kept.text
    assert kept.nodes[0].text == PARAGRAPHS[0]  # the junk node merged away, images still in place
    assert [n.image is not None for n in kept.nodes] == [False, True, False, True, False]
    untouched = document_filters("filters.paragraph.enabled=false")(copy.deepcopy(doc))
    assert untouched.paragraphs_in == 0 and JUNK in untouched.document.text


def test_safety_judges_the_whole_text_before_paragraph_cleaning(filters):
    # Each profane paragraph would be removed by the paragraph rules; the page as a whole is dropped instead.
    doc = article(paragraphs=PARAGRAPHS[:3] + [PROFANE, PROFANE + " Really."], images=2)
    assert filters(doc).verdict.reason == "flagged_words"


def test_a_broken_document_is_a_counted_drop_not_a_crash(tmp_path):
    broken = article(doc_id="0" * 20)
    broken.url = None  # e.g. a Parquet row written by another tool without a URL
    _, report = filter_run(tmp_path, [broken, article(url="https://www.example.org/b.html", doc_id="1" * 20)])
    assert report["unbalanced"] == []
    assert report["stages"]["filter"]["documents"]["dropped"] == {"filter_error": 1}
    assert report["stages"]["filter"]["documents"]["out"] == 1


# -- Beam job -----------------------------------------------------------------------------------------


def write_docs(directory, docs: list[Document]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "docs-00000-of-00001.parquet").write_bytes(parquet_bytes(docs, False, "zstd"))


def sample_docs() -> list[Document]:
    docs = [article(url=f"https://www.example.org/good{i}.html", doc_id=f"{i:02d}" + "0" * 18) for i in range(3)]
    docs.append(article(url="https://de.example.org/muehle.html", doc_id="10" + "0" * 18,
                        paragraphs=[GERMAN, GERMAN + " Eins.", GERMAN + " Zwei."], images=1))
    docs.append(with_text(article(url="https://shop.example.org/deals.html", doc_id="11" + "0" * 18), SPAM))
    docs.append(with_text(article(url="https://forum.example.org/t.html", doc_id="12" + "0" * 18), PROFANE * 2))
    docs.append(article(url="https://www.00sex.com/p.html", doc_id="13" + "0" * 18))
    junk = article(url="https://www.example.org/junk.html", doc_id="14" + "0" * 18)
    junk.nodes.insert(0, Node(text=JUNK))
    docs.append(junk)
    return docs


def filter_run(tmp_path, docs, *overrides, name="out"):
    write_docs(tmp_path / "in" / "documents", docs)
    out = tmp_path / name
    report = run_filter([str(tmp_path / "in")], str(out), config(*overrides))
    return out, report


def test_filter_job_counts_every_document_and_paragraph_by_reason(tmp_path):
    out, report = filter_run(tmp_path, sample_docs())
    stages = report["stages"]
    assert report["unbalanced"] == []
    docs = stages["filter"]["documents"]
    assert (docs["in"], docs["out"]) == (8, 4)
    assert docs["dropped"] == {"flagged_words": 1, "language": 1, "spam": 1, "url_blocklist": 1}
    assert stages["filter"]["images"]["in"] == 15 and stages["filter"]["images"]["dropped"]["language"] == 1
    paragraphs = stages["filter_paragraphs"]["paragraphs"]
    assert paragraphs["in"] == 4 * 5 + 1 and paragraphs["dropped"] == {"obelics_par_special_chars": 1}
    kept = read_documents(sorted(str(p) for p in (out / "documents").glob("*.parquet")))
    assert sorted(d.url for d in kept) == ["https://www.example.org/good0.html", "https://www.example.org/good1.html",
                                           "https://www.example.org/good2.html", "https://www.example.org/junk.html"]
    assert all(d.metadata["language"] == "en" and "filter_scores" in d.metadata for d in kept)
    assert (out / "config.yaml").exists() and json.loads((out / "report.json").read_text())["stages"] == stages
    assert not (out / "dropped").exists()  # the audit is off by default


def test_audit_writes_dropped_documents_and_paragraphs_with_their_reason(tmp_path):
    out, _ = filter_run(tmp_path, sample_docs(), "output.audit_drops=true")
    lines = [json.loads(line) for path in sorted((out / "dropped").glob("filter-*.jsonl"))
             for line in path.read_text().splitlines()]
    by_reason = {(r["stage"], r["reason"]): r for r in lines}
    assert set(by_reason) == {("filter", "language"), ("filter", "spam"), ("filter", "flagged_words"),
                              ("filter", "url_blocklist"), ("filter_paragraphs", "obelics_par_special_chars")}
    assert by_reason[("filter", "spam")]["item"]["url"] == "https://shop.example.org/deals.html"
    assert json.loads(by_reason[("filter", "language")]["detail"])["language"] == "de"
    assert by_reason[("filter_paragraphs", "obelics_par_special_chars")]["item"]["paragraph"] == JUNK


def test_filter_cli(tmp_path, capsys):
    from pipeline.cli import main

    write_docs(tmp_path / "in", sample_docs()[:4])
    code = main(["filter", "--input", str(tmp_path / "in" / "*.parquet"), "--output", str(tmp_path / "out"),
                 "--set", "runner.direct_running_mode=in_memory", "--set", "filters.language.languages=[en, de]"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"written to {tmp_path / 'out'}" in printed and "filter_paragraphs" in printed
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stages"]["filter"]["documents"]["in"] == 4
    assert "language" not in report["stages"]["filter"]["documents"]["dropped"]  # German is a target now
    assert main(["filter", "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o2")]) == 2


def test_document_files_accepts_extract_outputs_directories_and_globs(tmp_path):
    write_docs(tmp_path / "run" / "documents", sample_docs()[:1])
    write_docs(tmp_path / "flat", sample_docs()[:1])
    name = "docs-00000-of-00001.parquet"
    assert document_files([str(tmp_path / "run")]) == [str(tmp_path / "run" / "documents" / name)]
    assert document_files([str(tmp_path / "flat")]) == [str(tmp_path / "flat" / name)]
    assert len(document_files([str(tmp_path / "*" / "*.parquet"), str(tmp_path / "flat")])) == 1
    with pytest.raises(FileNotFoundError, match="matches no Parquet"):
        document_files([str(tmp_path / "empty")])


def test_same_input_gives_identical_output(tmp_path):
    one, _ = filter_run(tmp_path, sample_docs(), name="one")
    two, _ = filter_run(tmp_path, list(reversed(sample_docs())), name="two")
    files = sorted(p.name for p in (one / "documents").glob("*.parquet"))
    assert len(files) == 4
    for name in files:
        assert (one / "documents" / name).read_bytes() == (two / "documents" / name).read_bytes()


def test_dofns_survive_beams_pickling_and_set_up_on_the_worker():
    """What a remote worker does: unpickle the DoFn (Beam's pickler), then setup() loads model and lists."""
    from apache_beam.internal import pickler

    from pipeline.filter.transforms import FilterDoFn, GateDoFn
    from pipeline.read.crawl import Page

    max_replacement_ratio = config()["read"]["max_replacement_ratio"]
    gate = pickler.loads(pickler.dumps(GateDoFn(filters=settings(), max_replacement_ratio=max_replacement_ratio,
                                                circuit_breaker=BREAKER)))
    gate.setup()
    german = Page(url="https://de.example/a", body=f"<html><body><p>{GERMAN}</p></body></html>".encode(),
                  charset="utf-8", source="t")
    assert list(gate.process(german)) == []
    doc_filter = pickler.loads(pickler.dumps(FilterDoFn(filters=settings(), circuit_breaker=BREAKER)))
    doc_filter.setup()
    assert [d.url for d in doc_filter.process(article())] == ["https://www.example.org/mill.html"]


def test_gate_stage_counts_and_audits_pages(tmp_path):
    import apache_beam as beam

    from pipeline.core.accounting import query_counts, stage_table
    from pipeline.filter.transforms import GatePages
    from pipeline.jobs.runner import RunnerSettings, make_pipeline
    from pipeline.read.crawl import Page

    def page(url: str, text: str) -> Page:
        return Page(url=url, body=f"<html><body><p>{text}</p><img src=a.jpg></body></html>".encode(),
                    charset="utf-8", source="t")

    pages = [page("https://en.example/1", " ".join(PARAGRAPHS)), page("https://de.example/2", GERMAN * 2),
             page("https://www.00sex.com/3", " ".join(PARAGRAPHS)), page("https://de.example/4", "Kurz.")]
    cfg = config("output.audit_drops=true")
    pipeline = make_pipeline([], RunnerSettings.from_config(cfg["runner"], "runner"))
    gate = GatePages(filters=settings(), max_replacement_ratio=cfg["read"]["max_replacement_ratio"],
                     circuit_breaker=BREAKER, audit_dir=str(tmp_path))
    kept = pipeline | beam.Create(pages) | gate
    kept | beam.Map(lambda p: p.url) | beam.io.WriteToText(str(tmp_path / "kept"))
    result = pipeline.run()
    result.wait_until_finish()
    gate = stage_table(query_counts(result))["gate"]["pages"]
    assert (gate["in"], gate["out"], gate["balanced"]) == (4, 2, True)
    assert gate["dropped"] == {"language": 1, "url_blocklist": 1}
    assert gate["info"] == {"not_judged_too_little_text": 1}
    kept_urls = sorted("".join(p.read_text() for p in tmp_path.glob("kept*")).split())
    assert kept_urls == ["https://de.example/4", "https://en.example/1"]
    audit = [json.loads(line) for path in (tmp_path / "dropped").glob("gate-*.jsonl")
             for line in path.read_text().splitlines()]
    assert sorted((r["item"], r["reason"]) for r in audit) == [("https://de.example/2", "language"),
                                                               ("https://www.00sex.com/3", "url_blocklist")]
