"""The filters on real pages (trafilatura-cache fixtures) and on the generated sample crawl, end to end:
read → gate → extract → filter, every page's fate checked, every count balanced."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from filters.language import LanguageIdentifier, page_text
from pipeline.io.documents import read_documents
from pipeline.jobs.stages import extract_page
from pipeline.read.crawl import Page
from pipeline.read.decode import decode_html
from pipeline.settings import load_config

# Verified by reading each page's text (not by asking a model): the article language of each fixture page.
VERIFIED = {
    "en": ["theguardian.com.academics", "nationalgeographic.co.uk.goats", "stackoverflow.com.rust",
           "pcgamer.com.skyrim", "threatpost.com.android", "vancouversun.com.microsoft", "dw.com.colonial"],
    "de": ["spiegel.de.albtraum", "zeit.de.zugverkehr", "heise.de.lithium", "netzpolitik.org.abmahnungen",
           "chip.de.tests", "brigitte.de.ikigai"],
    "fr": ["franceculture.fr.idees", "laviedesidees.fr.evaluation", "soundofscience.fr.1927", "psl.eu.luniversite",
           "sauvonsluniversite.com.spip"],
}
# English pages that extraction turns into documents (they have content images), German and French ones for the
# English-only run: each must end up kept (English) or dropped with reason `language` (at the gate or the filter).
RUN_PAGES = {
    "en": ["nationalgeographic.co.uk.goats", "stackoverflow.com.rust", "pcgamer.com.skyrim",
           "threatpost.com.android", "vancouversun.com.microsoft", "github.blog.spiceland", "phys.org.tool",
           "luxuriousmagazine.com.polo"],
    "de": ["netzpolitik.org.abmahnungen", "chip.de.tests", "brigitte.de.ikigai", "cnet.de.schutz"],
    "fr": ["psl.eu.luniversite", "sauvonsluniversite.com.spip", "laviedesidees.fr.evaluation"],
}


def cache_page(fixtures_dir: Path, name: str) -> bytes:
    return (fixtures_dir / "trafilatura-cache" / f"{name}.html").read_bytes()


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


@pytest.mark.parametrize(("lang", "name"), [(lang, name) for lang, names in VERIFIED.items() for name in names])
def test_language_of_verified_real_pages(fixtures_dir, identifier, lang, name):
    body = cache_page(fixtures_dir, name)
    # The gate's rough page text ...
    rough = identifier.predict(page_text(decode_html(body)[0], 2000))
    assert rough.language == lang, rough
    # ... and the extracted main content, where extraction yields a document.
    extracted = extract_page(Page(url=f"https://{name}/", body=body, charset=None, source="t"),
                             load_config(overrides=["extract.timeout_s=0", "extract.require_images=false"]))
    if extracted.document is not None:
        prediction = identifier.predict(extracted.document.text)
        assert prediction.language == lang and prediction.score >= 0.65, prediction


def write_warc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        for url, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))


def extract_and_filter(inputs: list[str], output: Path, *overrides: str) -> dict:
    """read → gate → extract → filter → Parquet as one Beam pipeline (as `m3w build` runs them), audit on."""
    from pipeline.filter.transforms import FILTER_STAGES, FilterDocuments, FilterSettings
    from pipeline.io.documents import OutputSettings, WriteDocuments
    from pipeline.jobs.runner import RunnerSettings, make_pipeline
    from pipeline.jobs.stages import EXTRACT_STAGES, extract_documents, finish_report

    config = load_config(overrides=["runner.direct_running_mode=in_memory", "extract.timeout_s=0",
                                    "output.audit_drops=true", *overrides])
    runner = RunnerSettings.from_config(config["runner"], "runner")
    pipeline = make_pipeline([], runner)
    docs = pipeline | "Extract documents" >> extract_documents(inputs, config, str(output))
    docs = docs | "Filter" >> FilterDocuments(filters=FilterSettings.from_config(config["filters"]),
                                              circuit_breaker=runner.circuit_breaker, audit_dir=str(output))
    docs | "Write" >> WriteDocuments(str(output / "documents"), OutputSettings.from_config(config["output"], "output"))
    result = pipeline.run()
    result.wait_until_finish()
    return finish_report(result, str(output), EXTRACT_STAGES + FILTER_STAGES, time.time())


def audit(output: Path) -> dict[str, tuple[str, str]]:
    """URL → (stage, reason) of every page or document dropped at the gate, in extraction or by the filters."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted((output / "dropped").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            item = record["item"]
            if record["stage"] == "filter_paragraphs":
                continue
            out[item if isinstance(item, str) else item["url"]] = (record["stage"], record["reason"])
    return out


def kept_urls(output: Path) -> set[str]:
    return {d.url for d in read_documents(sorted(str(p) for p in (output / "documents").glob("*.parquet")))}


def test_english_only_run_on_real_pages(fixtures_dir, tmp_path):
    pages = [(f"https://{name}/", cache_page(fixtures_dir, name)) for names in RUN_PAGES.values() for name in names]
    write_warc(tmp_path / "mixed.warc.gz", pages)
    report = extract_and_filter([str(tmp_path / "mixed.warc.gz")], tmp_path / "out")
    assert report["unbalanced"] == []
    kept, dropped = kept_urls(tmp_path / "out"), audit(tmp_path / "out")
    for name in RUN_PAGES["en"]:
        assert f"https://{name}/" in kept, dropped.get(f"https://{name}/")
    for name in RUN_PAGES["de"] + RUN_PAGES["fr"]:
        stage, reason = dropped[f"https://{name}/"]
        assert reason == "language" and stage in ("gate", "filter"), (name, stage, reason)
    stages = report["stages"]
    # Most foreign pages never reach trafilatura: the gate saw they could not pass.
    assert stages["gate"]["pages"]["dropped"]["language"] >= 5
    assert stages["filter"]["documents"]["out"] == len(RUN_PAGES["en"])
    assert all(d.metadata["language"] == "en" for d in read_documents(
        sorted(str(p) for p in (tmp_path / "out" / "documents").glob("*.parquet"))))


@pytest.mark.slow
def test_sample_crawl_pages_meet_their_expected_filter_fate(small_sample_crawl, tmp_path):
    truth = json.loads((small_sample_crawl / "ground_truth.json").read_text())
    report = extract_and_filter([str(small_sample_crawl / "crawl.warc.gz")], tmp_path / "out")
    assert report["unbalanced"] == []
    kept, dropped = kept_urls(tmp_path / "out"), audit(tmp_path / "out")
    expected_reasons: dict[str, int] = {}
    checked = 0
    for page in truth["pages"]:
        expected = (page.get("expected") or {}).get("filters")
        if expected is None:  # never reaches the filters (not HTML, or dropped by extraction)
            continue
        checked += 1
        url = page["url"]
        if expected == "keep":
            assert url in kept, f"false drop: {page['kind']} {url} {dropped.get(url)}"
        else:
            assert url not in kept and dropped.get(url, ("", ""))[1] == expected, (page["kind"], url, dropped.get(url))
            expected_reasons[expected] = expected_reasons.get(expected, 0) + 1
    assert checked >= 40 and set(expected_reasons) == {"language", "spam", "flagged_words", "url_blocklist"}
    # The report shows the per-filter drops: the gate's and the filter's together are exactly the planted pages.
    stages = report["stages"]
    gate, docs = stages["gate"]["pages"]["dropped"], stages["filter"]["documents"]["dropped"]
    for reason, n in expected_reasons.items():
        assert gate.get(reason, 0) + docs.get(reason, 0) == n, (reason, gate, docs)
    assert set(docs) <= set(expected_reasons)  # nothing else dropped a document
    assert stages["filter_paragraphs"]["paragraphs"]["in"] > 0
