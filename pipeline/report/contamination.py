"""The report's benchmark-contamination section: what `decontaminate` found, per benchmark file.

The images stage writes its matches into its own folder (so a redone stage replaces them and a resumed one
keeps them); the report puts `contamination.jsonl` beside itself, where a user looks, and summarises it.
"""

from __future__ import annotations

import html
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.core.files import write_atomically
from pipeline.decontaminate.audit import AUDIT_NAME, contamination_summary, read_audit


def add_contamination(report: dict[str, Any], output: str, stage_dir: str) -> None:
    """`report["contamination"]` and `OUTPUT/contamination.jsonl` from the stage's audit; without one (no
    benchmark configured) neither, and an earlier run's copy beside the report is removed."""
    source, target = FileSystems.join(stage_dir, AUDIT_NAME), FileSystems.join(output, AUDIT_NAME)
    if not FileSystems.exists(source):
        if FileSystems.exists(target):
            FileSystems.delete([target])
        return
    with FileSystems.open(source) as handle:
        write_atomically(target, handle.read())
    records = read_audit(target)
    report["contamination"] = {"audit": target, "matches": len(records),
                               "by_benchmark": contamination_summary(records)}


def render_html(section: dict[str, Any] | None) -> str:
    if not section:
        return ("<p class=muted>not checked: no benchmark configured (<code>decontaminate.images</code>, "
                "<code>decontaminate.texts</code>; docs/decontaminate.md)</p>")
    rows = "".join(
        f"<tr><td>{html.escape(benchmark)}</td><td>{found['items']:,}</td><td>{found['pictures']:,}</td>"
        f"<td>{found['paragraphs']:,}</td><td>{found['documents_dropped']:,}</td></tr>"
        for benchmark, found in section["by_benchmark"].items())
    table = ("<table><tr><th>benchmark file</th><th>its items found</th><th>pictures removed</th>"
             "<th>paragraphs removed</th><th>documents dropped</th></tr>" + rows + "</table>") if rows else \
        "<p>nothing found: no training picture or paragraph matched a benchmark</p>"
    return table + f"<p class=muted>every match: {html.escape(section['audit'])}</p>"
