"""Document-level dedup on Beam: URLs, exact copies, boilerplate paragraphs, over-used image URLs."""

from __future__ import annotations

import apache_beam as beam
import pytest

from pipeline.core.accounting import query_counts, stage_table, unbalanced
from pipeline.dedup import DedupDocuments, DedupExact, DedupParagraphs, DedupSettings, DedupUrls, DropFrequentImageUrls
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from schemas.document import Document, Image, Node
from tests.test_dedup_components import Collect, collected


def dedup(config: dict) -> DedupSettings:
    return DedupSettings.from_config(config["dedup"], "dedup")


def doc(doc_id: str, url: str, *nodes: str, date: str = "2024-01-01T00:00:00Z") -> Document:
    """Nodes: plain strings are text, strings starting with `img:` are image URLs."""
    return Document(doc_id=doc_id, url=url, warc_date=date,
                    nodes=[Node(image=Image(url=n[4:])) if n.startswith("img:") else Node(text=n) for n in nodes])


@pytest.fixture
def run(fast_config, tmp_path):
    runs = iter(range(100))

    def run_transform(transform, docs: list[Document]) -> tuple[dict[str, Document], dict]:
        out = tmp_path / f"run{next(runs)}"
        pipeline = make_pipeline([], RunnerSettings.from_config(fast_config["runner"], "runner"))
        pipeline | beam.Create(docs) | transform | Collect(out)
        result = pipeline.run()
        result.wait_until_finish()
        table = stage_table(query_counts(result))
        assert unbalanced(table) == []
        kept = collected(out)
        assert len({d.doc_id for d in kept}) == len(kept)
        return {d.doc_id: d for d in kept}, table

    return run_transform


def test_url_dedup_keeps_the_newest_crawl_per_normalised_url(fast_config, run):
    docs = [
        doc("a1", "https://Site.test/page?utm_source=mail", "v1", date="2024-01-01T00:00:00Z"),
        doc("z9", "https://site.test:443/page#top", "v3", date="2024-05-01T00:00:00+00:00"),
        doc("m5", "http://site.test/page", "v2", date="2024-03-01T00:00:00Z"),  # http = https by default
        doc("b2", "https://site.test/tie", "x", date="2024-02-02T00:00:00Z"),
        doc("b1", "https://site.test/tie", "y", date="2024-02-02T00:00:00Z"),  # same date: lowest doc_id
        doc("c1", "https://site.test/dated", "old", date="2020-01-01T00:00:00Z"),
        doc("c0", "https://site.test/dated", "undated", date=""),  # unknown dates lose
        doc("c2", "https://site.test/dated", "bad", date="yesterday"),
        doc("d1", "https://site.test/page?id=2", "another page"),
        doc("e1", "http://[broken/page", "unparsable url"),
        doc("tz", "https://site.test/tz", "earlier", date="2024-06-01T10:00:00+02:00"),  # 08:00 UTC
        doc("ty", "https://site.test/tz", "later", date="2024-06-01T09:00:00Z"),
    ]
    kept, table = run(DedupUrls(dedup(fast_config).url), docs)
    assert sorted(kept) == ["b1", "c1", "d1", "e1", "ty", "z9"]
    assert table["dedup_url"]["documents"] == {"in": 12, "out": 6, "dropped": {"duplicate_url": 6}, "info": {},
                                               "balanced": True}
    fast_config["dedup"]["url"]["ignore_scheme"] = False
    kept, _ = run(DedupUrls(dedup(fast_config).url), docs[:3])
    assert sorted(kept) == ["m5", "z9"]


def test_exact_dedup_needs_the_same_text_and_the_same_images(fast_config, run):
    docs = [
        doc("n2", "https://a.test/1", "Hello  World.\n\nSecond paragraph.", "img:https://i.test/1.jpg",
            date="2024-03-01T00:00:00Z"),
        doc("n1", "https://b.test/1", "hello world.\n\nsecond PARAGRAPH.", "img:https://i.test/1.jpg?utm_source=x",
            date="2024-04-01T00:00:00Z"),
        doc("n3", "https://c.test/1", "Hello World.\n\nSecond paragraph.", "img:https://i.test/1.jpg",
            date="2024-02-01T00:00:00Z"),  # crawled first: the one kept
        doc("o1", "https://d.test/1", "Hello World.\n\nSecond paragraph.", "img:https://i.test/2.jpg"),
        doc("p1", "https://e.test/1", "Hello World.\n\nSecond paragraph.", "img:https://i.test/1.jpg",
            "img:https://i.test/2.jpg"),
        doc("p2", "https://f.test/1", "Hello World.\n\nSecond paragraph.", "img:https://i.test/2.jpg",
            "img:https://i.test/1.jpg"),  # the same images in another order: not the same document
        doc("q1", "https://g.test/1", "Hello World!\n\nSecond paragraph.", "img:https://i.test/1.jpg"),
    ]
    kept, table = run(DedupExact(dedup(fast_config).exact, dedup(fast_config).url), docs)
    assert sorted(kept) == ["n3", "o1", "p1", "p2", "q1"]
    assert table["dedup_exact"]["documents"]["dropped"] == {"exact_duplicate": 2}


def test_boilerplate_paragraphs_are_removed_within_a_domain(fast_config, run):
    notice = "We use cookies to count our readers."
    shared_by_three = "A paragraph quoted on exactly three pages."
    docs = [doc(f"a{i}", f"https://www.a.test/{i}", f"Story {i} starts here.\n\n{notice}", "img:https://i.test/x.jpg",
                f"Story {i} ends here." + (f"\n\n{shared_by_three}" if i < 3 else ""), f"{notice}")
            for i in range(5)]
    docs.append(doc("a9", "https://a.test/only-notice", notice))  # nothing left: dropped
    docs += [doc(f"b{i}", f"https://b.test/{i}", f"Other site {i}.\n\n{notice}") for i in range(2)]
    fast_config["dedup"]["paragraphs"]["max_docs_per_paragraph"] = 3
    kept, table = run(DedupParagraphs(dedup(fast_config).paragraphs), docs)
    assert sorted(kept) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1"]
    assert [n.text or n.image.url for n in kept["a0"].nodes] == [
        "Story 0 starts here.", "https://i.test/x.jpg", f"Story 0 ends here.\n\n{shared_by_three}"]
    assert kept["a4"].texts == ["Story 4 starts here.", "Story 4 ends here."]
    assert kept["b0"].texts == [f"Other site 0.\n\n{notice}"]  # two documents on b.test: under the bar
    stage = table["dedup_paragraphs"]
    assert stage["paragraphs"]["dropped"] == {"boilerplate": 11}  # 5 docs x 2 notices + the notice-only doc
    assert stage["paragraphs"]["in"] == 5 * 4 + 3 + 1 + 2 * 2
    assert stage["documents"]["dropped"] == {"no_text": 1}


def test_image_urls_in_more_than_ten_documents_are_removed(fast_config, run):
    docs = [doc(f"d{i:02d}", f"https://s.test/{i}", f"text {i}", f"img:https://cdn.test/logo.png?utm_campaign={i}",
                f"img:https://cdn.test/photo{i}.jpg", *(["img:https://cdn.test/ten.jpg"] if i < 10 else []))
            for i in range(12)]
    docs.append(doc("only-logo", "https://s.test/x", "text", "img:https://cdn.test/logo.png"))
    docs.append(doc("no-images", "https://s.test/y", "text only"))
    kept, table = run(DropFrequentImageUrls(dedup(fast_config).image_urls, dedup(fast_config).url), docs)
    assert "only-logo" not in kept and "no-images" in kept  # a document without images to begin with stays
    assert [i.url for i in kept["d00"].images] == ["https://cdn.test/photo0.jpg", "https://cdn.test/ten.jpg"]
    assert [i.url for i in kept["d11"].images] == ["https://cdn.test/photo11.jpg"]
    stage = table["dedup_image_urls"]
    assert stage["images"]["dropped"] == {"frequent_url": 13} and stage["images"]["out"] == 22
    assert stage["documents"]["dropped"] == {"no_images": 1}
    assert stage["images"]["info"] == {"frequent_urls_distinct": 1}


def test_dedup_documents_chains_the_steps_and_each_can_be_switched_off(fast_config, run):
    docs = [doc("a", "https://s.test/1", "Same text here.", "img:https://i.test/1.jpg", date="2024-01-01T00:00:00Z"),
            doc("b", "https://s.test/1", "Newer text here.", "img:https://i.test/1.jpg", date="2024-02-01T00:00:00Z"),
            doc("c", "https://s.test/2", "Newer text here.", "img:https://i.test/1.jpg", date="2024-03-01T00:00:00Z")]
    fast_config["dedup"]["near"]["max_rounds"] = 3
    kept, table = run(DedupDocuments(dedup(fast_config)), docs)
    assert sorted(kept) == ["b"]  # a: older crawl of b's URL; c: exact copy of b crawled later
    assert [s for s in table if s.startswith("dedup")] == ["dedup_exact", "dedup_near", "dedup_paragraphs",
                                                           "dedup_url"]
    for step in ("url", "exact", "near", "paragraphs"):
        fast_config["dedup"][step]["enabled"] = False
    kept, table = run(DedupDocuments(dedup(fast_config)), docs)
    assert sorted(kept) == ["a", "b", "c"] and not table
