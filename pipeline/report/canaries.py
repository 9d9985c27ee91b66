"""The canaries' part of a build's report: their funnel through every stage, what dropped any and the setting
that decided it, so a verdict without enough canaries is explained instead of a bare "inconclusive".

The canaries' stages count under `canary:<stage>|...` (pipeline/jobs/canaries.py); `canary_report` turns those
counters into `report.json`'s `canaries` section, and `manifest_note` into what the shard set's manifest tells
the smoke trainer (`train_smoke`) about them.
"""

from __future__ import annotations

import html
from typing import Any

from pipeline.canaries.riding import STAGES
from pipeline.core import stages as registry
from pipeline.core.accounting import broken_links, unbalanced
from pipeline.core.counts import stage_table

# The funnel's columns: what each counted unit is, for the canaries.
COLUMNS = ("pages", "documents", "pictures", "sequences")
UNIT_COLUMN = {"records": "pages", "pages": "pages", "documents": "documents", "images": "pictures",
               "sequences": "sequences", "paragraphs": "paragraphs"}  # paragraphs: a class-word note removed
# The canary WARC's request and warcinfo records: read, and rightly not pages.
EXPECTED_DROPS = {("read", "records", "not_response")}

# The setting behind a drop reason: (stage, reason or reason prefix ending in "_", setting); "*" is any stage.
SETTINGS = (
    ("gate", "language", "filters.language and filters.gate.language"),
    ("filter", "language", "filters.language"),
    ("*", "url_blocklist", "filters.safety.url_blocklist"),
    ("*", "flagged_words", "filters.safety.flagged_words"),
    ("*", "spam", "filters.safety.spam"),
    ("*", "obelics_par_", "filters.paragraph"),
    ("*", "obelics_", "filters.document.obelics"),
    ("*", "gopher_dup_", "filters.document.gopher_repetition"),
    ("*", "gopher_top_", "filters.document.gopher_repetition"),
    ("*", "gopher_", "filters.document.gopher_quality"),
    ("*", "fineweb_", "filters.document.fineweb"),
    ("filter", "no_text", "filters.paragraph (every paragraph removed)"),
    ("read", "too_large", "read.max_html_bytes"),
    ("read", "empty", "read.min_html_bytes"),
    ("extract", "no_img_tag", "extract.require_img_tag"),
    ("extract", "no_images", "extract.require_images and image_nodes"),
    ("extract", "no_text", "extract.min_text_chars"),
    ("extract", "tiny_declared", "image_nodes.min_declared_side"),
    ("extract", "url_pattern", "image_nodes.blocked_url_patterns"),
    ("extract", "bad_format", "image_nodes.allowed_formats"),
    ("extract", "url_too_long", "image_nodes.max_url_chars"),
    ("extract", "tiny_in_url", "image_nodes.min_declared_side, url_sizes and url_size_params"),
    ("extract", "teaser_link", "image_nodes.place.teaser_links and teaser_link_share"),
    ("extract", "overlaid", "image_nodes.place.overlay_labels"),
    ("extract", "in_", "image_nodes.place"),
    ("extract", "timeout", "extract.timeout_s"),
    ("download", "too_large", "download.max_bytes"),
    ("download", "opted_out_header", "download.disallowed_header_directives"),
    ("download", "opted_out", "download.page_opt_out"),
    ("image_filter", "min_side", "image_filters.min_side"),
    ("image_filter", "aspect_ratio", "image_filters.min_aspect_ratio and max_aspect_ratio"),
    ("image_filter", "format", "image_filters.allowed_formats"),
    ("image_filter", "too_many_pixels", "image_filters.max_pixels"),
    ("image_filter", "nsfw", "image_filters.nsfw"),
    ("image_filter", "in_nsfw_document", "image_filters.nsfw"),
    ("shard", "too_few_images", "shards.min_images_per_sequence"),
)


def setting_of(stage: str, reason: str) -> str | None:
    """The config key (or group) that decides drops of `reason` at `stage`, when one does."""
    for where, name, setting in SETTINGS:
        if where in ("*", stage) and (reason == name or (name.endswith("_") and reason.startswith(name))):
            return setting
    return None


def exempt_stages(config: dict[str, Any]) -> list[str]:
    """The stages of the config's document flow the canaries skip (every dedup stage among them)."""
    return [name for name, _ in registry.running(registry.document_flow(), config) if name not in STAGES]


def funnel(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage the canaries went through, in flow order: what came out of it (pages, documents, pictures,
    sequences, as it counts them) and what it dropped, by unit and reason."""
    rows = []
    for name in registry.names():
        units = table.get(name)
        if not units:
            continue
        row: dict[str, Any] = {"stage": name}
        dropped: dict[str, dict[str, int]] = {}
        for unit, entry in units.items():
            column = "documents" if (name, unit) == ("extract", "pages") else UNIT_COLUMN.get(unit)
            if column is None:
                continue
            if column in COLUMNS:
                row[column] = entry["out"]
            drops = {reason: n for reason, n in entry["dropped"].items() if (name, unit, reason) not in EXPECTED_DROPS}
            if drops:
                dropped[column] = drops
        if len(row) > 1 or dropped:  # a side unit (paragraphs) is a line only when it lost some
            rows.append({**row, "dropped": dropped})
    return rows


def losses(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Every drop of a canary page, document, picture or sequence, most first (then paragraphs: a title or
    a note removed leaves its document), with the setting behind it."""
    out = [{"stage": row["stage"], "unit": column, "reason": reason, "count": n,
            "setting": setting_of(row["stage"], reason)}
           for row in funnel(table) for column, drops in row["dropped"].items() for reason, n in drops.items()]
    return sorted(out, key=lambda loss: (loss["unit"] == "paragraphs", -loss["count"], loss["stage"], loss["unit"],
                                         loss["reason"]))


def describe(loss: dict[str, Any]) -> str:
    """"filter dropped 380 canary documents (gopher_word_count: filters.document.gopher_quality)"."""
    behind = f": {loss['setting']}" if loss["setting"] else ""
    unit = loss["unit"] if loss["count"] != 1 else loss["unit"].removesuffix("s")
    return f"{loss['stage']} dropped {loss['count']} canary {unit} ({loss['reason']}{behind})"


def canary_report(counts: dict[str, int], config: dict[str, Any], exemptions: list[str],
                  last_job_stage: str | None) -> dict[str, Any]:
    """`report.json`'s `canaries`: settings, exemptions, the stages they skip, the funnel, the losses, and their
    own balance and continuity (a canary lost between stages is a pipeline fault like any other)."""
    canaries = config["canaries"]
    table = stage_table(counts, registry.names())
    skipped = exempt_stages(config)
    flow = [(name, unit) for name, unit in registry.running(registry.document_flow(), config) if name in STAGES]
    if last_job_stage is not None:
        order = registry.names()
        flow = [(name, unit) for name, unit in flow if order.index(name) <= order.index(last_job_stage)]
    lost = losses(table)
    written = table.get("shard", {}).get("sequences", {}).get("out", 0)
    return {
        "pages": canaries["pages"], "classes": list(canaries["classes"]), "seed": canaries["seed"],
        "exemptions": exemptions, "exempt_stages": skipped,
        "stages": table, "funnel": funnel(table), "lost": lost,
        "unbalanced": unbalanced(table), "broken_links": broken_links(table, flow) if counts else [],
        "sequences": written, "summary": summary(canaries["pages"], written, lost),
    }


def summary(pages: int, sequences: int, lost: list[dict[str, Any]]) -> str:
    """One line: what the smoke verdict can expect of the canaries, and what took them when they are gone."""
    if not pages:
        return ("no alignment canaries (canaries.pages: 0, `m3w build --canaries 0`): `m3w smoke` on these shards "
                "cannot give a strict verdict")
    main = "; ".join(describe(loss) for loss in lost[:3] if loss["unit"] != "paragraphs")
    if not sequences:
        return f"none of the {pages} canary pages reached the shards: {main or 'no stage counted a drop'}"
    return f"{pages} canary pages → {sequences} canary sequences" + (f"; {main}" if main else "")


def manifest_note(report: dict[str, Any] | None, pages: int) -> dict[str, Any]:
    """What the shard set's manifest says about its canaries before the shard stage (the writer adds its own
    counts): how many pages the build asked for, what it changed for them, and what dropped any page, document
    or picture so far."""
    if report is None:
        return {"pages": pages, "exemptions": [], "lost": []}
    return {"pages": pages, "exemptions": report["exemptions"],
            "lost": [{**loss, "text": describe(loss)} for loss in report["lost"] if loss["unit"] != "paragraphs"]}


def render_html(section: dict[str, Any] | None) -> str:
    """The report page's canary section: the funnel table, the losses and the exemptions."""
    if not section:
        return "<p class=muted>no canary counts (a build from before canaries rode along)</p>"
    head = f"<p>{html.escape(section['summary'])}</p>"
    if section["exemptions"] or section["exempt_stages"]:
        notes = [*section["exemptions"], "stages they skip (a canary is nobody's duplicate): "
                 + ", ".join(section["exempt_stages"])]
        head += "<ul>" + "".join(f"<li>{html.escape(note)}</li>" for note in notes) + "</ul>"
    rows = []
    for row in section["funnel"]:
        cells = "".join(f"<td>{row[c]:,}</td>" if c in row else "<td class=muted>–</td>" for c in COLUMNS)
        drops = "; ".join(f"{column}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
                          for column, reasons in row["dropped"].items())
        rows.append(f"<tr><td>{html.escape(row['stage'])}</td>{cells}<td>{html.escape(drops)}</td></tr>")
    table = ("<table><tr><th>stage</th>" + "".join(f"<th>{c}</th>" for c in COLUMNS) + "<th>dropped</th></tr>"
             + "".join(rows) + "</table>")
    lost = "".join(f"<li>{html.escape(describe(loss))}</li>" for loss in section["lost"])
    problems = section["unbalanced"] + section["broken_links"]
    badge = (f"<p><span class='badge fail'>canary counts: {html.escape('; '.join(problems))}</span></p>"
             if problems else "")
    return head + badge + table + (f"<h3>what dropped canaries</h3><ul>{lost}</ul>" if lost else "")
