"""A typo in a flag, a path that cannot be used and an empty result each end in one line and a non-zero exit."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

import pipeline.cli as cli
from pipeline.cli import main
from pipeline.commands import discover

WARC = "warc/warcfile.warc.gz"


def minimal_argv(name: str, tmp_path: Path) -> list[str]:
    """Arguments each command accepts (nothing needs to exist: the flag check comes first)."""
    out = str(tmp_path / "out")
    return {
        "demo": ["demo", "--output", out],
        "sample": ["sample", "--output", out],
        "build": ["build", "--input", "crawl.warc.gz", "--output", out],
        "extract": ["extract", "--input", "crawl.warc.gz", "--output", out],
        "filter": ["filter", "--input", "docs", "--output", out],
        "calibrate": ["calibrate", "--input", "docs", "--language", "de"],
        "dedup": ["dedup", "--input", "docs", "--output", out],
        "decontaminate": ["decontaminate", "--input", "docs", "--output", out],
        "download": ["download", "--input", "docs", "--output", out],
        "smoke": ["smoke", "shards"],
        "shard": ["shard", "--input", "docs", "--output", out],
        "export": ["export", "pairs", "--input", "docs", "--output", out],
        "inspect": ["inspect", "validate", "shards"],
        "imagehost": ["imagehost", "--root", "images"],
    }[name]


def stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("name", [module.NAME for module in discover()])
def test_every_command_refuses_a_mistyped_flag_before_it_runs(name, tmp_path, capsys, monkeypatch):
    module = {m.NAME: m for m in discover()}[name]
    monkeypatch.setattr(module, "run", lambda args, beam_args: pytest.fail("the command ran"))
    assert main([*minimal_argv(name, tmp_path), "--sett", "filters.language.threshold=0.9"]) == 2
    [line] = stderr_lines(capsys)
    if "--set" in cli.flags_of(cli.build_parser()[2][name]):
        assert line == "m3w: unknown flag --sett (did you mean --set?)"
    else:  # `m3w sample` has --seed, `m3w inspect` nothing close
        assert line.startswith("m3w: unknown flag --sett") and "--set?" not in line
    assert not (tmp_path / "out").exists()


def test_every_command_is_covered_by_the_flag_test(tmp_path):
    for module in discover():
        assert minimal_argv(module.NAME, tmp_path)[0] == module.NAME


def test_the_nearest_beam_option_is_suggested(tmp_path, capsys):
    assert main([*minimal_argv("extract", tmp_path), "--runer", "DataflowRunner"]) == 2
    assert stderr_lines(capsys) == ["m3w: unknown flag --runer (did you mean --runner?)"]


BEAM_OPTIONS = ["--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
                "--setup_file", "./setup.py", "--direct_num_workers", "4", "--temp_location", "gs://bucket/tmp",
                "--experiments=use_runner_v2", "--no_use_public_ips", "--worker_machine_type", "n2-standard-4"]


@pytest.mark.parametrize("name", ["build", "extract", "filter", "dedup", "decontaminate", "download", "shard", "export",
                                  "demo"])
def test_beam_pipeline_options_still_reach_beam(name, tmp_path, monkeypatch):
    module = {m.NAME: m for m in discover()}[name]
    received = []
    monkeypatch.setattr(module, "run", lambda args, beam_args: received.append(beam_args) or 0)
    assert main([*minimal_argv(name, tmp_path), *BEAM_OPTIONS]) == 0
    assert received == [BEAM_OPTIONS]


def test_a_command_without_a_pipeline_refuses_beam_options(tmp_path, capsys):
    assert main([*minimal_argv("inspect", tmp_path), "--runner", "DirectRunner"]) == 2
    assert stderr_lines(capsys) == ["m3w: unknown flag --runner"]


def test_a_beam_option_without_its_value_and_a_stray_word_are_refused(tmp_path, capsys):
    assert main([*minimal_argv("extract", tmp_path), "--runner"]) == 2
    assert stderr_lines(capsys) == ["m3w: argument --runner: expected one argument"]
    assert main([*minimal_argv("extract", tmp_path), "stray"]) == 2
    assert stderr_lines(capsys) == ["m3w: unexpected argument 'stray'"]


def test_debug_and_verbose_are_accepted_after_the_command(tmp_path, monkeypatch):
    module = {m.NAME: m for m in discover()}["extract"]
    seen = []
    monkeypatch.setattr(module, "run", lambda args, beam_args: seen.append((args.debug, args.verbose)) or 0)
    assert main([*minimal_argv("extract", tmp_path), "--debug"]) == 0
    assert main(["--verbose", *minimal_argv("extract", tmp_path)]) == 0
    assert seen == [(True, False), (False, True)]


# -- paths ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["build", "extract", "filter", "dedup", "decontaminate", "download", "shard",
                                  "export"])
def test_an_output_under_a_regular_file_is_one_line_naming_it(name, tmp_path, capsys, fixtures_dir):
    (tmp_path / "afile").write_text("not a folder")
    output = str(tmp_path / "afile" / "out")
    argv = [*minimal_argv(name, tmp_path)[:-1], output]
    argv[argv.index("--input") + 1] = str(fixtures_dir / WARC)
    assert main(argv) == 2
    assert stderr_lines(capsys) == [f"m3w: output {output}: cannot be created: {tmp_path / 'afile'} is a file"]


def test_debug_shows_the_traceback_of_an_environment_error(tmp_path, capsys, fixtures_dir):
    (tmp_path / "afile").write_text("not a folder")
    assert main(["extract", "--input", str(fixtures_dir / WARC), "--output", str(tmp_path / "afile" / "out"),
                 "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "UnusablePath" in err
    assert err.splitlines()[-1].startswith("m3w: output ")


def test_an_unwritable_or_unreadable_local_path_is_named(tmp_path, monkeypatch):
    """Tests run as root, who may write anywhere: os.access is what the check asks, so it answers here."""
    from pipeline.core.paths import UnusablePath, check_paths

    (tmp_path / "crawl.warc").write_text("")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(UnusablePath, match=f"^input {tmp_path / 'crawl.warc'}: not readable"):
        check_paths([str(tmp_path / "crawl.warc")], [], [], 1.0)
    with pytest.raises(UnusablePath, match=f"^output {tmp_path / 'new'}: cannot be created: {tmp_path} is not "):
        check_paths([], [str(tmp_path / "new")], [], 1.0)


def test_an_oserror_from_a_later_step_is_one_line_too(tmp_path, capsys, monkeypatch):
    module = {m.NAME: m for m in discover()}["extract"]

    def fails(args, beam_args):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "config.yaml"))

    monkeypatch.setattr(module, "run", fails)
    assert main(minimal_argv("extract", tmp_path)) == 2
    assert stderr_lines(capsys) == [f"m3w: OSError: [Errno 28] No space left on device: "
                                    f"'{tmp_path / 'out' / 'config.yaml'}' (--debug shows the traceback)"]


def test_a_glob_that_matches_nothing_is_named_once(tmp_path, capsys):
    pattern = str(tmp_path / "nothing" / "*.warc.gz")
    assert main(["extract", "--input", pattern, "--output", str(tmp_path / "out")]) == 2
    assert stderr_lines(capsys) == [f"m3w: input '{pattern}' matches no file"]


def test_a_scheme_without_a_filesystem_is_named_with_what_installs_it(tmp_path, capsys, monkeypatch):
    from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem

    # What Beam sees without the gcp extra: no filesystem class registers gs://.
    monkeypatch.setattr(GCSFileSystem, "scheme", classmethod(lambda cls: "gs-not-installed"))
    assert main(["extract", "--input", "gs://bucket/crawl/*.warc.gz", "--output", str(tmp_path / "out")]) == 2
    assert stderr_lines(capsys) == ["m3w: input gs://bucket/crawl/*.warc.gz: the filesystem for gs:// is not "
                                    "installed: pip install 'm3w[gcp]' (in a checkout: pip install -e '.[gcp]')"]
    assert main(["extract", "--input", "nosuch://bucket/x", "--output", str(tmp_path / "out")]) == 2
    assert stderr_lines(capsys) == ["m3w: input nosuch://bucket/x: no filesystem for nosuch:// (Beam's: local "
                                    "paths, gs://, s3://, azfs://, hdfs://)"]


class NoBucket(http.server.BaseHTTPRequestHandler):
    """A storage emulator on 127.0.0.1 that knows no bucket."""

    def do_GET(self):
        body = json.dumps({"error": {"code": 404, "message": "The specified bucket does not exist."}}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def anonymous_gcs(monkeypatch):
    """Beam's GCS client without looking for credentials (that lookup retries for 20 s offline)."""
    from apache_beam.internal.gcp import auth

    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)


def test_a_gs_bucket_that_does_not_exist_is_one_line_at_once(tmp_path, capsys, monkeypatch, anonymous_gcs):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoBucket)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    try:
        started = time.monotonic()
        assert main(["extract", "--input", "gs://nobucket/crawl/*.warc.gz", "--output", str(tmp_path / "o")]) == 2
        assert time.monotonic() - started < 10
    finally:
        server.shutdown()
    [line] = stderr_lines(capsys)
    assert line.startswith("m3w: input gs://nobucket/crawl/*.warc.gz: cannot be reached: NotFound: 404 GET "
                           f"http://127.0.0.1:{port}/storage/v1/b/nobucket/o?")
    assert line.endswith(": The specified bucket does not exist.")


def test_an_unreachable_gs_store_is_reported_within_the_timeout(tmp_path, capsys, monkeypatch, anonymous_gcs):
    with socket.socket() as closed:  # a port nothing listens on: every request is refused, Beam retries
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    assert main(["extract", "--input", str(tmp_path), "--output", "gs://bucket/out",
                 "--set", "runner.path_check_timeout_s=1"]) == 2
    assert time.monotonic() - started < 10
    assert stderr_lines(capsys) == ["m3w: output gs://bucket/out: no answer within 1 s (no network, no credentials "
                                    "or a slow store? runner.path_check_timeout_s sets the wait)"]


# -- empty results -----------------------------------------------------------------------------------

def test_an_extract_that_keeps_no_page_fails_naming_the_stage_and_reasons(tmp_path, capsys, fixtures_dir):
    """A real Common Crawl WARC whose 16 HTML pages are all off-language for a language list of one."""
    from pipeline.commands import exit_status

    output = tmp_path / "out"
    argv = ["extract", "--input", str(fixtures_dir / WARC), "--output", str(output),
            "--set", "filters.language.languages=[xx]"]
    assert main(argv) == 1
    assert stderr_lines(capsys)[-1] == ("m3w: the run wrote nothing from 50 records read: gate dropped every page "
                                        "(language 16); use --allow-empty if you expect an empty result")
    report = json.loads((output / "report.json").read_text())
    assert report["empty"].startswith("the run wrote nothing from 50 records read")
    assert report["broken_links"] == [] and report["unverified"] is None
    assert exit_status(report, allow_empty=True) == 0
    assert stderr_lines(capsys) == [f"m3w: {report['empty']}; allowed by --allow-empty"]


@pytest.mark.parametrize("name", ["build", "extract", "filter", "dedup", "decontaminate", "download", "shard",
                                  "export"])
def test_every_stage_command_takes_allow_empty(name, tmp_path):
    parser = cli.build_parser()[0]
    args, unknown = parser.parse_known_args([*minimal_argv(name, tmp_path), "--allow-empty"])
    assert args.allow_empty is True and unknown == []


@pytest.mark.slow
def test_a_build_whose_pictures_are_all_refused_fails_naming_why(small_sample_crawl, tmp_path, capsys):
    """The issue's local crawl built with the defaults: every picture is refused as `unsafe_address` (the host is
    127.0.0.1, nothing is fetched), every document loses its images, no sequence is written."""
    argv = ["build", "--input", str(small_sample_crawl / "crawl.warc.gz"), "--output", str(tmp_path / "build"),
            "--set", "download.rewrite_to=http://127.0.0.1:9", "--set", "download.from_archive=false",
            "--canaries", "0"]  # the sample crawl archives one planted picture: every picture must be fetched here
    assert main(argv) == 1
    last = stderr_lines(capsys)[-1]
    assert re.fullmatch(r"m3w: the run wrote nothing from \d+ records read: "
                        r"(read dropped every image \(no_archive \d+\) → )?download dropped every image "
                        r"\(unsafe_address \d+(, opted_out \d+)?\) and every document \(no_images \d+(, opted_out "
                        r"\d+)?\); use --allow-empty if you expect an empty result", last), last
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["stages"]["download"]["images"]["out"] == 0 and report["broken_links"] == []
    assert main([*argv, "--allow-empty"]) == 0  # every stage resumed, the same empty result accepted
    assert stderr_lines(capsys)[-1] == f"m3w: {report['empty']}; allowed by --allow-empty"
