"""`m3w calibrate`: a language's cut-offs for the rules whose statistic depends on the language, from documents.

Reads OBELICS Parquet documents (an `m3w extract` output: pages of the language, as many as you have), keeps those
language ID labels `--language` (at `filters.language.threshold` or more), measures each rule's statistic on them
and places the language's cut-off where the reference language's sits in its own distribution (docs/filters.md,
"Calibration"). Prints the placement and the YAML to use with `--config`, and writes that YAML to `--output`.

For the reference language itself (`filters.calibration.reference_language`, en) it measures where the configured
cut-offs sit instead: the reference every other language is placed against (m3w ships English's,
filters/wordlists/calibration.en.yaml); `--reference FILE` uses such a file of your own.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

NAME = "calibrate"
ORDER = 25
HELP = "documents of one language → that language's cut-offs of the word-share rules (YAML for --config)"
PIPELINE_OPTIONS = False  # no Beam pipeline: every flag it does not know is refused
HALVES = ("calibration", "evaluation", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.commands import add_config_flags

    parser.add_argument("--input", action="append", required=True,
                        help="Parquet documents: an `m3w extract` output directory, a directory of .parquet files "
                             "or a glob, local or any Beam filesystem (repeatable)")
    parser.add_argument("--language", required=True, help="the language to calibrate, as language ID labels it (de)")
    parser.add_argument("--half", choices=HALVES, default="all",
                        help="only the documents of one half of the input, by a hash of their URL (calibrate on one, "
                             "check on the other: benchmarks/filter_languages.py); default: all")
    parser.add_argument("--reference", help="where the reference language's cut-offs sit in its distribution, as "
                                            "`m3w calibrate --language en --output FILE` writes it (default: m3w's)")
    parser.add_argument("--output", help="YAML file to write (the --config fragment; for the reference language its "
                                         "positions)")
    add_config_flags(parser)


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from filters.calibration import measure_reference
    from filters.language import iso639_1, normalize_language
    from pipeline.filter.transforms import FilterSettings
    from pipeline.io.documents import document_files
    from pipeline.settings import load_config

    filters = FilterSettings.from_config(load_config(args.config, args.set)["filters"], "filters")
    lang = iso639_1(normalize_language(args.language)[0])
    reference_lang = iso639_1(normalize_language(filters.calibration.reference_language)[0])
    sample, read = read_sample(document_files(args.input), lang, args.half, filters)
    print(f"m3w calibrate: {lang}, {len(sample.documents)} documents and {sample.paragraphs} paragraphs "
          f"({read} documents read{'' if args.half == 'all' else f', {args.half} half'})")
    command = " ".join(["m3w calibrate", *(f"--input {path}" for path in args.input), f"--language {args.language}",
                        *([f"--half {args.half}"] if args.half != "all" else []),
                        *([f"--reference {args.reference}"] if args.reference else []),
                        *([f"--config {args.config}"] if args.config else []),
                        *(f"--set '{item}'" for item in args.set)])
    if lang == reference_lang:
        positions = measure_reference(sample, filters.paragraph, filters.document)
        print(positions_table(positions, lang))
        text = reference_yaml(positions, sample, command)
    else:
        reference = load_reference(args.reference, reference_lang)
        check_reference(reference, filters, reference_lang, args.reference)
        from filters.calibration import calibrate

        calibration = calibrate(sample, reference["positions"], filters.paragraph, filters.document,
                                filters.calibration)
        print(calibration_table(calibration, reference))
        text = calibration_yaml(calibration, command)
        if all(placed.value is None for placed in calibration.placed.values()):
            print(text)
            print(f"m3w calibrate: no cut-off placed for {lang}: too few documents of it (see the table)",
                  file=sys.stderr)
            return 1
    print(text)
    if args.output:
        from pipeline.core.files import write_atomically

        write_atomically(args.output, text.encode("utf-8"))
        print(f"written to {args.output}")
    return 0


def read_sample(paths: list[str], lang: str, half: str, filters: Any) -> tuple[Any, int]:
    """The documents of `paths` language ID labels `lang` (at the filters' threshold), of `half` → (sample, read)."""
    from filters.calibration import Sample, half_of
    from filters.language import LanguageIdentifier
    from pipeline.io.documents import iter_rows
    from schemas.document import row_to_document

    identifier = LanguageIdentifier(filters.language.model, filters.language.top_k)
    texts, read = [], 0
    for path in paths:
        for row in iter_rows(path):
            doc = row_to_document(row)
            read += 1
            if half != "all" and half_of(doc.url) != half:
                continue
            prediction = identifier.predict(doc.text)
            if prediction.language == lang and prediction.score >= filters.language.threshold:
                texts.append(doc.text)
    return Sample.of(lang, texts), read


def reference_path(lang: str) -> str:
    from importlib import resources

    return str(resources.files("filters.wordlists").joinpath(f"calibration.{lang}.yaml"))


def load_reference(path: str | None, lang: str) -> dict[str, Any]:
    """A reference file (`m3w calibrate --language <reference> --output FILE`): its language and positions."""
    from apache_beam.io.filesystems import FileSystems

    from filters.calibration import Position
    from pipeline.config import ConfigError, load_yaml

    path = path or reference_path(lang)
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"no reference positions at {path}: write them with "
                                f"`m3w calibrate --input DOCS --language {lang} --output {path}`")
    with FileSystems.open(path) as handle:
        data = load_yaml(handle.read().decode("utf-8"))
    if not isinstance(data, dict) or data.get("language") != lang or not isinstance(data.get("positions"), dict):
        raise ConfigError(f"{path} holds no positions of the reference language {lang!r} "
                          "(as `m3w calibrate --language {lang} --output FILE` writes them)")
    positions = {name: Position.from_config(fields, f"{path}: positions.{name}")
                 for name, fields in data["positions"].items()}
    return {**data, "path": path, "positions": positions}


def check_reference(reference: dict[str, Any], filters: Any, lang: str, given: str | None) -> None:
    """The positions must have been measured at the cut-offs the config gives the reference language now."""
    from filters.calibration import by_language_tables, configured
    from pipeline.config import ConfigError

    now = configured(by_language_tables(filters.paragraph, filters.document), lang)
    for name, position in reference["positions"].items():
        if now.get(name) != position.cutoff:
            raise ConfigError(
                f"{reference['path']} was measured at {lang}'s cut-off {name} = {position.cutoff}, the config gives "
                f"{now.get(name)}: measure the reference again with `m3w calibrate --input {lang.upper()}_DOCS "
                f"--language {lang} --output FILE` and pass it as --reference FILE")


def _share(position: Any) -> str:
    return f"{100 * position.dropped:.1f}% of {position.items}"


def positions_table(positions: dict[str, Any], lang: str) -> str:
    from filters.calibration import CUTOFFS

    rows = [f"| cut-off | rule | {lang} cut-off | {lang} drops | median | interquartile range |",
            "|---|---|---|---|---|---|"]
    for cutoff in CUTOFFS:
        position = positions.get(cutoff.name)
        if position is None:
            rows.append(f"| {cutoff.name} | {cutoff.rule} | n/a | | | |")
            continue
        rows.append(f"| {cutoff.name} | {cutoff.rule} | {position.cutoff:g} | {_share(position)} | "
                    f"{position.median:.3f} | {position.iqr:.3f} |")
    return "\n".join(rows)


def calibration_table(calibration: Any, reference: dict[str, Any]) -> str:
    from filters.calibration import CUTOFFS

    ref, lang = reference["language"], calibration.language
    rows = [f"| cut-off | rule | {ref} | {ref} drops | {lang} | {lang} drops | placed by |",
            "|---|---|---|---|---|---|---|"]
    for cutoff in CUTOFFS:
        position, placed = reference["positions"].get(cutoff.name), calibration.placed[cutoff.name]
        theirs = (f"{position.cutoff:g} | {_share(position)}" if position is not None else "n/a |")
        ours = f"{placed.value:g} | {_share(placed.position)}" if placed.value is not None else "null |"
        rows.append(f"| {cutoff.name} | {cutoff.rule} | {theirs} | {ours} | {placed.method} |")
    return "\n".join(rows)


def calibration_yaml(calibration: Any, command: str) -> str:
    """The language's `by_language` entries as a --config file."""
    from pipeline.config import dump_config

    entries = calibration.entries()
    fragment = {"filters": {"paragraph": {"by_language": {calibration.language: entries["paragraph"]}},
                            "document": {"obelics": {"by_language": {calibration.language: entries["obelics"]}},
                                         "gopher_quality": {"by_language": {
                                             calibration.language: entries["gopher_quality"]}}}}}
    return (f"# {command}\n# {calibration.language}: {calibration.documents} documents, {calibration.paragraphs} "
            f"paragraphs; use with --config (docs/filters.md)\n" + dump_config(fragment))


def reference_yaml(positions: dict[str, Any], sample: Any, command: str) -> str:
    import dataclasses

    from pipeline.config import dump_config

    data = {"language": sample.language, "documents": len(sample.documents), "paragraphs": sample.paragraphs,
            "positions": {name: dataclasses.asdict(position) for name, position in positions.items()}}
    return (f"# Where {sample.language}'s cut-offs sit in its own distribution: what `m3w calibrate` places every "
            f"other language against\n# (docs/filters.md).\n# {command}\n" + dump_config(data))
