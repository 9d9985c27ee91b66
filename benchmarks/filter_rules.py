"""Document filter cost relative to extraction, and what the cheap language gate saves on a mixed-language WARC.

    python -m benchmarks.filter_rules [--repeat 1] [--rounds 2] [--tiny]

(a) On the real fixture pages (article-benchmark + trafilatura-cache; English, German, French...), in one
    process: extraction time per page (`extract_page`, trafilatura), the gate's time per page, and the
    document filters' time per extracted document with every language admitted (so every rule runs on every
    document), by stage: language ID, safety, paragraph rules, document rules.
(b) `m3w extract` (read → gate → extract, one core: in-memory runner, extraction in-process) on a WARC built
    from the same pages (in a temp dir), with the gate off and on: time, pages extracted, pages gated.

Times are CPU seconds of this process (`time.process_time`, best of `--rounds`), so other work on the
machine does not distort them; everything measured runs in this process. `--tiny`: the first 12 fixture pages,
one round (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/filter_rules.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._fixture_warc import fixture_pages, write_fixture_warc

TINY_PAGES = 12  # fixture pages of a `--tiny` run


def _timed(fn, rounds: int):
    """(best CPU seconds over `rounds` runs, the last result)."""
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.process_time()
        result = fn()
        best = min(best, time.process_time() - started)
    return best, result


def per_item_costs(pages, rounds: int) -> dict:
    from filters.base import TextItem
    from pipeline.filter.transforms import DocumentFilters, FilterSettings, PageGate
    from pipeline.jobs.stages import extract_page
    from pipeline.read.crawl import Page
    from pipeline.settings import load_config

    config = load_config(overrides=["extract.timeout_s=0", "filters.language.languages=[]"])
    raw = [Page(url=url, body=body, charset=None, source="bench") for url, body in pages]
    defaults = load_config()
    gate = PageGate(filters=FilterSettings.from_config(defaults["filters"], "filters"),
                    max_replacement_ratio=defaults["read"]["max_replacement_ratio"])
    filters = DocumentFilters(FilterSettings.from_config(config["filters"], "filters"))
    extract_page(raw[0], config)  # warm imports
    t_extract, extracted = _timed(lambda: [extract_page(page, config).document for page in raw], rounds)
    docs = [d for d in extracted if d is not None]
    t_gate, verdicts = _timed(lambda: [gate(page) for page in raw], rounds)
    gated = [page for page, verdict in zip(raw, verdicts) if not verdict.keep]
    t_gated_extract, _ = _timed(lambda: [extract_page(page, config) for page in gated], rounds)
    filters(docs[0])  # warm the word lists
    t_filter, results = _timed(lambda: [filters(d) for d in docs], rounds)
    stages = {"language": 0.0, "safety": 0.0, "paragraphs": 0.0, "document": 0.0}
    before = filters.rule_stats()
    for doc in docs:  # the same work, stage by stage (one round)
        t0 = time.process_time()
        lang = filters.language(TextItem(text=doc.text)).scores["language"]
        t1 = time.process_time()
        item = TextItem(text=doc.text, lang=lang, url=doc.url, n_images=len(doc.images))
        filters.blocklist(item)
        filters.text_safety(item)
        t2 = time.process_time()
        for node in doc.nodes:
            for paragraph in (node.text or "").split("\n\n") if node.image is None else ():
                filters.paragraph_rules(TextItem(text=paragraph, lang=lang, url=doc.url))
        t3 = time.process_time()
        filters.quality(item)
        t4 = time.process_time()
        for key, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[key] += seconds
    # What each rule drops when it alone judges every document (each rule counts its own outcomes).
    rule_drops = {name: counts - before[name] for name, counts in filters.rule_stats().items()}
    return {"pages": len(raw), "docs": len(docs), "kept": sum(r.document is not None for r in results),
            "rule_drops": rule_drops,
            "gated": len(gated), "t_extract": t_extract, "t_gate": t_gate, "t_gated_extract": t_gated_extract,
            "t_filter": t_filter, "stages": stages, "words": statistics.mean(len(d.text.split()) for d in docs)}


def extract_run(warc: Path, out: Path, gate: bool, rounds: int) -> tuple[float, dict]:
    from pipeline.jobs.stages import run_extract
    from pipeline.settings import load_config

    config = load_config(overrides=["runner.direct_running_mode=in_memory", "extract.timeout_s=0",
                                    f"filters.gate.enabled={str(gate).lower()}"])
    return _timed(lambda: run_extract([str(warc)], str(out), config), rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="times each fixture page appears in the WARC")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each measurement (the best counts)")
    parser.add_argument("--tiny", action="store_true", help=f"the first {TINY_PAGES} fixture pages, one round")
    args = parser.parse_args()
    limit = None
    if args.tiny:
        args.repeat, args.rounds, limit = 1, 1, TINY_PAGES
    pages = fixture_pages(limit)
    costs = per_item_costs(pages, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        warc = Path(tmp) / "mixed.warc.gz"
        n = write_fixture_warc(warc, args.repeat, limit)
        extract_run(warc, Path(tmp) / "warm", True, 1)  # warm imports, model and blocklist
        t_off, off = extract_run(warc, Path(tmp) / "off", False, args.rounds)
        t_on, on = extract_run(warc, Path(tmp) / "on", True, args.rounds)

    ms = 1000.0
    per_page_extract = costs["t_extract"] / costs["pages"] * ms
    per_doc_filter = costs["t_filter"] / costs["docs"] * ms
    print(f"command: python -m benchmarks.filter_rules --repeat {args.repeat} --rounds {args.rounds}"
          f"{' --tiny' if args.tiny else ''}   (CPU time, 1 core)")
    print(f"(a) {costs['pages']} real pages -> {costs['docs']} documents (mean {costs['words']:.0f} words), "
          f"{costs['kept']} kept by all rules with every language admitted")
    print(f"    extraction (trafilatura + images)   : {per_page_extract:6.1f} ms per page")
    print(f"    gate (blocklist + language on text) : {costs['t_gate'] / costs['pages'] * ms:6.1f} ms per page "
          f"= {costs['t_gate'] / costs['t_extract']:.0%} of extraction")
    print(f"    document filters, all rules         : {per_doc_filter:6.1f} ms per document "
          f"= {per_doc_filter / per_page_extract:.0%} of one page's extraction")
    per_input_page = costs["t_filter"] / costs["pages"] * ms
    print(f"    ... per input page (only pages that became documents are filtered): {per_input_page:.1f} ms "
          f"= {per_input_page / per_page_extract:.0%} of extraction")
    for stage, seconds in costs["stages"].items():
        print(f"      {stage:<10}: {seconds / costs['docs'] * ms:5.1f} ms per document")
    print("    each rule alone on every document (paragraph rules: on every paragraph), dropped / judged:")
    for name, counts in costs["rule_drops"].items():
        reasons = ", ".join(f"{key.removeprefix('dropped/')} {n}" for key, n in sorted(counts.items())
                            if key.startswith("dropped/"))
        print(f"      {name:<16}: {counts['dropped']} / {counts['dropped'] + counts['kept']}"
              + (f" ({reasons})" if reasons else ""))
    print(f"    English-only gate: {costs['gated']} of {costs['pages']} pages gated, whose extraction would cost "
          f"{costs['t_gated_extract']:.1f} s = {costs['t_gated_extract'] / costs['t_extract']:.0%} of extracting "
          f"all pages, for {costs['t_gate']:.1f} s of gate")
    gate = on["stages"]["gate"]["pages"]
    extracted_off, extracted_on = off["stages"]["extract"]["pages"]["in"], on["stages"]["extract"]["pages"]["in"]
    print(f"(b) m3w extract, {n} pages of a mixed-language WARC, English-only config:")
    print(f"    gate off: {t_off:6.1f} s, {extracted_off} pages extracted, "
          f"{off['stages']['extract']['pages']['out']} documents")
    print(f"    gate on : {t_on:6.1f} s, {extracted_on} pages extracted, "
          f"{on['stages']['extract']['pages']['out']} documents; gate dropped {gate['dropped']}")
    print(f"    saving  : {100 * (1 - t_on / t_off):.0f}% of the job's time "
          f"({extracted_off - extracted_on} pages never reached trafilatura)")


if __name__ == "__main__":
    main()
