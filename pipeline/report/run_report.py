"""The run report: report.json plus a self-contained report.html a person reads at a glance.

The HTML has no scripts and no external assets (charts are inline SVG, sample images are data URIs),
so it opens anywhere, from a bucket download as well as from a laptop.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.core import stages as registry
from pipeline.core.files import write_atomically, write_json
from pipeline.io.documents import parquet_files, stage_dir
from pipeline.report.canaries import render_html as render_canaries
from pipeline.report.contamination import add_contamination
from pipeline.report.contamination import render_html as render_contamination
from schemas.shards import MANIFEST_NAME, manifest_summary


def _get(table: dict[str, Any], stage: str, unit: str, kind: str) -> int | None:
    entry = table.get(stage, {}).get(unit)
    return None if entry is None else int(entry[kind])


def funnel(table: dict[str, Any]) -> list[dict[str, Any]]:
    steps = []
    for label, stage, unit, kind in registry.funnel():
        value = _get(table, stage, unit, kind)
        if value is not None:
            steps.append({"step": label, "stage": stage, "count": value})
    return steps


def _sample_documents(stage_dir: str, limit: int = 4) -> list[dict[str, Any]]:
    """A few documents with their images (thumbnails) from the images stage, deterministic choice."""
    from pipeline.io.documents import read_documents

    samples: list[dict[str, Any]] = []
    for path in parquet_files(stage_dir):
        for doc in read_documents([path]):
            nodes = []
            for node in doc.nodes:
                if node.image is not None:
                    nodes.append({"image": node.image.url, "thumb": _thumbnail(node.image.data)})
                else:
                    nodes.append({"text": node.text[:600]})
            samples.append({"url": doc.url, "language": doc.metadata.get("language"), "nodes": nodes})
            if len(samples) >= limit:
                return samples
    return samples


def _thumbnail(data: bytes | None) -> str | None:
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((160, 160))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=70)
    except Exception:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _read_json(path: str) -> dict[str, Any] | None:
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def enrich_report(report: dict[str, Any], ctx: Any) -> None:
    """Add the funnel, distributions, shard manifest summary and sample documents."""
    table = report["stages"]
    report["funnel"] = funnel(table)
    images_dir = ctx.stage_dir("images")
    report["summary"] = _read_json(FileSystems.join(images_dir, "summary.json")) or {}
    manifest = _read_json(FileSystems.join(ctx.stage_dir("shards"), MANIFEST_NAME))
    if manifest:
        report["shards"] = manifest_summary(manifest)
    report["dedup_clusters"] = {k: v for stage in ("dedup_near", "dedup_images")
                                for k, v in table.get(stage, {}).get("clusters", {}).get("info", {}).items()}
    report["samples"] = build_samples(ctx.output)
    add_contamination(report, ctx.output, images_dir)
    add_canaries(report, ctx)


def add_canaries(report: dict[str, Any], ctx: Any) -> None:
    """The canaries' section (pipeline/report/canaries.py); a canary lost inside or between stages fails the
    build like a lost document of the user's (named `canary <stage/unit>`)."""
    from pipeline.canaries.riding import canary_config
    from pipeline.report.canaries import canary_report

    order = registry.names()
    ran = [order.index(stage) for stage in report["stages"] if stage in order]
    last = order[max(ran)] if ran else None
    section = report["canaries"] = canary_report(ctx.canary_counts, ctx.config, canary_config(ctx.config)[1], last)
    report["unbalanced"] = [*report["unbalanced"], *(f"canary {item}" for item in section["unbalanced"])]
    report["broken_links"] = [*report["broken_links"], *(f"canary {item}" for item in section["broken_links"])]


def build_samples(output: str) -> list[dict[str, Any]]:
    """The sample documents of a build directory, read again at each rendering (report.json leaves them out:
    thumbnails are bulky)."""

    images_dir = stage_dir(output, "images")
    return _sample_documents(images_dir) if FileSystems.exists(images_dir) else []


def write_report(report: dict[str, Any], output: str) -> None:
    write_json(FileSystems.join(output, "report.json"), {k: v for k, v in report.items() if k != "samples"})
    write_atomically(FileSystems.join(output, "report.html"), render_html(report).encode("utf-8"))


def add_smoke_verdict(output: str, verdict: dict[str, Any]) -> None:
    """Attach the smoke trainer's verdict to an existing report and re-render it."""
    path = FileSystems.join(output, "report.json")
    report = _read_json(path) or {}
    report["smoke"] = verdict
    write_report({**report, "samples": build_samples(output)}, output)


# -- rendering ----------------------------------------------------------------------------------

def _bars(items: list[tuple[str, int]], colour: str = "#3b82f6", width: int = 520) -> str:
    if not items:
        return "<p class=muted>nothing counted</p>"
    top = max(v for _, v in items) or 1
    row, label_w = 22, 230
    parts = [f'<svg width="{label_w + width + 70}" height="{row * len(items) + 4}" role="img">']
    for i, (label, value) in enumerate(items):
        y = i * row
        bar = max(1, int(width * value / top)) if value else 0
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{html.escape(str(label))}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bar}" height="{row - 6}" fill="{colour}"/>'
                     f'<text x="{label_w + bar + 6}" y="{y + 15}">{value:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _stage_tables(table: dict[str, Any]) -> str:
    rows = []
    for stage, units in table.items():
        for unit, entry in units.items():
            if not (entry["in"] or entry["out"] or entry["dropped"]):
                continue  # an info-only unit (cluster sizes, edges): shown in its own section
            drops = sorted(entry["dropped"].items(), key=lambda kv: -kv[1])
            ok = "✔" if entry["balanced"] else "✘ does not balance"
            rows.append(
                f"<tr><td>{html.escape(stage)}</td><td>{html.escape(unit)}</td><td>{entry['in']:,}</td>"
                f"<td>{entry['out']:,}</td><td>{sum(entry['dropped'].values()):,}</td><td>{ok}</td></tr>"
            )
            if drops:
                rows.append(f'<tr class=drops><td colspan=6>{_bars(drops, "#ef4444", 360)}</td></tr>')
    return ("<table><tr><th>stage</th><th>unit</th><th>in</th><th>out</th><th>dropped</th>"
            "<th>in = out + Σ drops</th></tr>" + "".join(rows) + "</table>")


def _samples(samples: list[dict[str, Any]]) -> str:
    out = []
    for sample in samples:
        parts = [f"<div class=doc><div class=url>{html.escape(sample['url'])} "
                 f"<span class=muted>{html.escape(str(sample.get('language') or ''))}</span></div>"]
        for node in sample["nodes"]:
            if "text" in node:
                parts.append(f"<p>{html.escape(node['text'])}</p>")
            elif node.get("thumb"):
                parts.append(f'<img src="{node["thumb"]}" title="{html.escape(node["image"])}" alt="">')
        parts.append("</div>")
        out.append("".join(parts))
    return "".join(out) or "<p class=muted>no documents</p>"


def _shards(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "<p class=muted>no shards written</p>"
    rows = "".join(f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items())
    return f"<table>{rows}</table>"


def _smoke(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "<p class=muted>not run (run <code>m3w smoke</code> on the shards)</p>"
    status = verdict["status"]
    badge = f'<span class="badge {"pass" if status == "pass" else "fail"}">{html.escape(status.upper())}</span>'
    checks = verdict.get("checks", {})
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'✔' if (c.get('passed') if isinstance(c, dict) else c) else '✘'}"
        f"</td><td>{html.escape(json.dumps(c, default=str)[:300])}</td></tr>"
        for name, c in checks.items()
    )
    return f"<p>{badge} {html.escape(str(verdict.get('summary', '')))}</p><table>{rows}</table>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#111;max-width:1100px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
tr.drops td{border-bottom:1px solid #ddd;padding-left:40px}
svg text{font-size:12px;font-family:system-ui,sans-serif}.muted{color:#777}
.doc{border:1px solid #ddd;border-radius:6px;padding:10px;margin:10px 0}.doc img{max-height:160px;margin:4px}
.doc p{margin:4px 0;font-size:14px}.url{font-weight:600;font-size:13px}
.badge{padding:2px 8px;border-radius:4px;color:#fff;font-weight:700}.pass{background:#16a34a}.fail{background:#dc2626}
.cols{display:flex;gap:40px;flex-wrap:wrap}
"""


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def render_html(report: dict[str, Any]) -> str:
    table = report.get("stages", {})
    summary = report.get("summary", {})
    status = ("<span class='badge pass'>counts balance</span>" if not report.get("unbalanced")
              else f"<span class='badge fail'>unbalanced: {html.escape(', '.join(report['unbalanced']))}</span>")
    status += (" <span class='badge pass'>nothing lost between stages</span>" if not report.get("broken_links")
               else " <span class='badge fail'>lost between stages: "
               f"{html.escape('; '.join(report['broken_links']))}</span>")
    if report.get("unverified"):
        status += f" <span class='badge fail'>cannot verify: {html.escape(str(report['unverified']))}</span>"
    if report.get("empty"):
        status += f" <span class='badge fail'>empty result: {html.escape(str(report['empty']))}</span>"
    image_rows = [(f"{stage}: {reason}", n) for stage, units in table.items()
                  for reason, n in units.get("images", {}).get("dropped", {}).items()]
    sections = [
        f"<h1>m3w run report</h1><p class=muted>{html.escape(str(report.get('output', '')))} · {status}</p>",
        "<h2>Funnel</h2>" + _bars([(s["step"], s["count"]) for s in report.get("funnel", [])], "#2563eb"),
        "<h2>Stages and drop reasons</h2>" + _stage_tables(table),
        "<h2>Images</h2><div class=cols><div><h3>dropped, by stage and reason</h3>"
        + _bars(sorted(image_rows, key=lambda kv: -kv[1]), "#f59e0b", 300)
        + "</div><div><h3>images per document</h3>"
        + _bars(sorted(((k, v) for k, v in summary.get("images_per_document", {}).items()),
                       key=lambda kv: int(kv[0])), "#10b981", 300) + "</div></div>",
        "<h2>Languages and domains</h2><div class=cols><div>"
        + _bars(_by_count(summary.get("languages", {})), "#8b5cf6", 300) + "</div><div>"
        + _bars(_by_count(summary.get("domains", {}))[:15], "#0ea5e9", 300) + "</div></div>",
        "<h2>Dedup clusters</h2>" + _bars(sorted(report.get("dedup_clusters", {}).items()), "#64748b", 300),
        "<h2>Benchmark contamination</h2>" + render_contamination(report.get("contamination")),
        "<h2>Training shards</h2>" + _shards(report.get("shards")),
        "<h2>Alignment canaries</h2>" + render_canaries(report.get("canaries")),
        "<h2>Smoke-training verdict</h2>" + _smoke(report.get("smoke")),
        "<h2>Sample documents</h2>" + _samples(report.get("samples", [])),
        "<h2>Timings</h2>" + _bars([(k, int(v)) for k, v in report.get("timings_s", {}).items()], "#94a3b8", 300)
        + "<p class=muted>seconds per stage</p>",
    ]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>m3w run report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")
