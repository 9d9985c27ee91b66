"""Stage outputs cannot go stale (issue 23, item 5): a stage command clears its own earlier output (recognised by
`_M3W_OUTPUT.json`), refuses a folder holding anything else unless `--overwrite`, never clears an input, and
`m3w download` keeps its work folder (its cache) across runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.cli import main as m3w
from pipeline.core.outputs import MARKER, OutputInUse, claim_output
from pipeline.sampledata.imagehost import ImageHost
from tests.test_shards_helpers import make_document, write_documents

WARC = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "warc" / "warcfile.warc.gz"
FAST = ["runner.direct_running_mode=in_memory", "runner.direct_num_workers=1"]
# The synthetic documents are random words: without these rules they all reach the output.
KEEP_DOCUMENTS = ["filters.language.enabled=false", "filters.paragraph.enabled=false",
                  "filters.document.obelics.enabled=false", "filters.document.gopher_quality.enabled=false",
                  "filters.document.gopher_repetition.enabled=false", "filters.document.fineweb.enabled=false"]
COMMANDS = ("extract", "filter", "dedup", "decontaminate", "download", "shard", "export")


def files_under(root: Path) -> dict[str, Path]:
    return {str(path.relative_to(root)): path for path in sorted(root.rglob("*")) if path.is_file()}


def marked(folder: Path, command: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"command": command}))
    return folder


# --------------------------------------------------------------------------------------------------
# claim_output: the rules
# --------------------------------------------------------------------------------------------------
def test_a_new_folder_is_claimed_with_a_marker_naming_the_command(tmp_path):
    claim_output(str(tmp_path / "new" / "out"), "filter")
    marker = json.loads((tmp_path / "new" / "out" / MARKER).read_text())
    assert marker["command"] == "filter" and marker["m3w_version"]


def test_a_rerun_clears_everything_of_its_earlier_output_but_what_it_keeps(tmp_path):
    out = marked(tmp_path / "out", "download")
    for name in ("documents/docs-00000-of-00004.parquet", "report.json", "dropped/x.jsonl",
                 "work/download/shards/s.done.json", "work/download/images/ab/cd", "work/other/tmp"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"earlier run")
    claim_output(str(out), "download", keep=[str(out / "work" / "download")])
    assert sorted(files_under(out)) == [MARKER, "work/download/images/ab/cd", "work/download/shards/s.done.json"]
    assert json.loads((out / MARKER).read_text())["command"] == "download"


def test_a_folder_holding_only_the_kept_cache_or_empty_folders_needs_no_overwrite(tmp_path):
    (tmp_path / "out" / "work" / "download" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "work" / "download" / "shards" / "s.done.json").write_text("{}")
    (tmp_path / "out" / "empty").mkdir()
    claim_output(str(tmp_path / "out"), "download", keep=[str(tmp_path / "out" / "work" / "download")])
    assert (tmp_path / "out" / "work" / "download" / "shards" / "s.done.json").exists()


def test_a_folder_no_command_wrote_is_refused_untouched_and_named_in_one_line(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputInUse) as refused:
        claim_output(str(tmp_path / "out"), "extract")
    message = str(refused.value)
    assert "\n" not in message and "notes.txt" in message and "--overwrite" in message
    assert sorted(files_under(tmp_path / "out")) == ["notes.txt"]


def test_another_commands_output_is_refused_naming_that_command(tmp_path):
    out = marked(tmp_path / "out", "extract")
    (out / "report.json").write_text("{}")
    with pytest.raises(OutputInUse, match="holds `m3w extract` output: choose an empty or new folder for `m3w filter`"):
        claim_output(str(out), "filter")
    assert (out / "report.json").exists()


def test_overwrite_clears_a_foreign_folder(tmp_path):
    out = marked(tmp_path / "out", "extract")
    (out / "documents").mkdir()
    (out / "documents" / "docs-00000-of-00001.parquet").write_bytes(b"x")
    claim_output(str(out), "shard", overwrite=True)
    assert sorted(files_under(out)) == [MARKER]
    assert json.loads((out / MARKER).read_text())["command"] == "shard"


def test_an_input_inside_the_folder_is_never_cleared_not_even_with_overwrite(tmp_path):
    out = marked(tmp_path / "out", "filter")
    (out / "documents").mkdir()
    (out / "documents" / "docs-00000-of-00001.parquet").write_bytes(b"input")
    for reads in ([str(out / "documents" / "docs-00000-of-00001.parquet")], [str(out / "documents" / "*.parquet")],
                  [str(out)]):
        with pytest.raises(OutputInUse, match="lies inside output"):
            claim_output(str(out), "filter", overwrite=True, reads=reads)
    assert (out / "documents" / "docs-00000-of-00001.parquet").read_bytes() == b"input"
    claim_output(str(out), "filter", reads=[str(tmp_path / "elsewhere" / "*.parquet")])  # outside: cleared
    assert sorted(files_under(out)) == [MARKER]


def test_an_input_in_the_kept_work_folder_may_stay(tmp_path):
    out = marked(tmp_path / "out", "download")
    (out / "work").mkdir()
    (out / "work" / "docs.parquet").write_bytes(b"input")
    (out / "report.json").write_text("{}")
    claim_output(str(out), "download", keep=[str(out / "work")], reads=[str(out / "work" / "docs.parquet")])
    assert sorted(files_under(out)) == [MARKER, "work/docs.parquet"]


# --------------------------------------------------------------------------------------------------
# Every stage command, through `m3w`
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    """Eight documents with two pictures each, bytes included: input of every command after extract."""
    folder = tmp_path_factory.mktemp("docs")
    write_documents([make_document(i, n_images=2, words_per_text=60) for i in range(8)], folder)
    return folder


@pytest.fixture(scope="module")
def image_host():
    with ImageHost() as host:
        yield host


def command_line(command: str, documents: Path, out: Path, host: ImageHost | None, *settings: str) -> list[str]:
    """`m3w COMMAND` over the test input with small, fast settings plus `settings`."""
    args = [command, "mmc4"] if command == "export" else [command]
    args += ["--input", str(WARC if command == "extract" else documents), "--output", str(out)]
    overrides = [*FAST, *KEEP_DOCUMENTS, "shards.bpe_vocab_size=300", "image_filters.nsfw.enabled=false"]
    if command == "download":
        overrides += ["download.allow_loopback=true", f"download.rewrite_to={host.base_url if host else ''}"]
    for item in [*overrides, *settings]:
        args += ["--set", item]
    return args


@pytest.mark.parametrize("command", COMMANDS)
def test_every_stage_command_refuses_a_foreign_folder_in_one_line_with_exit_2(command, documents, tmp_path,
                                                                            capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert m3w(command_line(command, documents, tmp_path / "out", None)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"m3w: output {tmp_path / 'out'} is not empty") and "\n" not in err
    assert sorted(files_under(tmp_path / "out")) == ["notes.txt"]


# Per command: a setting whose first value writes files the second does not (shard counts).
RESHARD = {
    "extract": ("output.doc_shards=4", "output.doc_shards=2"),
    "filter": ("output.doc_shards=4", "output.doc_shards=2"),
    "dedup": ("output.doc_shards=4", "output.doc_shards=2"),
    "download": ("output.doc_shards=4", "output.doc_shards=2"),
    "shard": ("shards.num_shards=3", "shards.num_shards=1"),
    "export": ("export.num_shards=3", "export.num_shards=1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(RESHARD))  # decontaminate clears as they do (run_job): not rerun here
def test_rerunning_a_stage_command_leaves_no_file_of_the_earlier_run(command, documents, image_host, tmp_path):
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "foreign.bin").write_bytes(b"not m3w's")
    first, second = RESHARD[command]
    assert m3w([*command_line(command, documents, out, image_host, first), "--overwrite"]) == 0
    assert not (out / "old").exists()  # --overwrite cleared the foreign folder
    earlier = files_under(out)
    cache = {name for name in earlier if name.startswith("work/download/")}
    assert (command == "download") == bool(cache)

    started = time.time()
    time.sleep(0.2)  # file times come from a coarser clock than time.time()
    assert m3w(command_line(command, documents, out, image_host, second)) == 0
    now = files_under(out)
    assert set(earlier) - set(now) - cache, "the second run writes fewer files: the test would prove nothing"
    stale = [name for name, path in now.items() if name not in cache and path.stat().st_mtime < started + 0.1]
    assert stale == []
    assert cache <= set(now)  # m3w download's finished URL shards and images survive: its cache
    if command == "download":
        report = json.loads((out / "report.json").read_text())
        assert report["stages"]["download"]["urls"]["info"]["shards_reused"] >= 1
