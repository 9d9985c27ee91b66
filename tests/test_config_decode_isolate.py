"""Config merging, charset decoding and the per-page timeout worker."""

from __future__ import annotations

import dataclasses
import time

import pytest

from pipeline.config import ConfigError, Section, dump_config, load_defaults, parse_override
from pipeline.extract.isolate import IsolatedWorker, WorkerTimeout
from pipeline.read.decode import decode_html, replacement_ratio
from pipeline.settings import load_config


def test_override_parses_yaml_values():
    assert parse_override("a.b=0.8") == {"a": {"b": 0.8}}
    assert parse_override("a=[x, y]") == {"a": ["x", "y"]}


def test_user_yaml_and_overrides_stack(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("read:\n  max_html_bytes: 1000\nimage_nodes:\n  min_declared_side: 99\n")
    config = load_config(str(user), ["image_nodes.min_declared_side=120"])
    assert config["read"]["max_html_bytes"] == 1000
    assert config["image_nodes"]["min_declared_side"] == 120
    assert config["extract"] == load_defaults()["extract"]


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'read.max_htm_bytes'"):
        load_config(overrides=["read.max_htm_bytes=1"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(overrides=["read=3"])


def test_dump_round_trips():
    import yaml

    config = load_config()
    assert yaml.safe_load(dump_config(config)) == config


def test_declared_charset_is_used():
    body = "<p>Grüße aus Köln</p>".encode("iso-8859-1")
    assert decode_html(body, "iso-8859-1") == ("<p>Grüße aus Köln</p>", "header")


def test_meta_charset_then_detection():
    body = '<meta charset="windows-1252"><p>caf\xe9</p>'.encode("cp1252")
    assert decode_html(body)[0].endswith("café</p>")
    text, how = decode_html("<p>naïve résumé façade</p>".encode("cp1252") * 20)
    assert how == "detected" and "résumé" in text


def test_wrong_declared_charset_falls_back():
    text, how = decode_html("<p>ok ü</p>".encode(), "no-such-charset")
    assert (text, how) == ("<p>ok ü</p>", "utf-8")


def test_replacement_ratio_flags_binary():
    assert replacement_ratio("abc") == 0
    assert replacement_ratio("a\ufffd\x00b") == 0.5


def _sleep_then_echo(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _boom() -> None:
    raise ValueError("bad page")


def _fail_to_start() -> None:
    raise ImportError("no module named 'lxml_html_clean' (simulated broken install)")


def test_isolated_worker_times_out_and_recovers():
    worker = IsolatedWorker(_sleep_then_echo, timeout_s=2.0)
    try:
        worker.start()  # start-up (spawn, imports) is waited for separately, never against the 2 s
        assert worker.call(0.0) == 0.0
        first_child = worker.pid
        started = time.monotonic()
        with pytest.raises(WorkerTimeout):
            worker.call(60.0)
        assert 2.0 <= time.monotonic() - started < 10
        assert worker.call(0.01) == 0.01  # a fresh child serves the next item
        assert worker.pid != first_child
    finally:
        worker.close()


def test_isolated_worker_raises_the_childs_exception_type():
    worker = IsolatedWorker(_boom, timeout_s=10)
    try:
        with pytest.raises(ValueError, match="bad page") as caught:
            worker.call()
        assert any("raised in the isolated worker" in note for note in caught.value.__notes__)
        with pytest.raises(ValueError, match="bad page"):  # the same child keeps serving
            worker.call()
    finally:
        worker.close()


def test_isolated_worker_that_cannot_start_says_why():
    worker = IsolatedWorker(_boom, timeout_s=10, init=_fail_to_start)
    try:
        with pytest.raises(ImportError, match="lxml_html_clean"):
            worker.start()
    finally:
        worker.close()


@dataclasses.dataclass(frozen=True)
class Breaker(Section):
    min_items: int
    max_failure_share: float


@dataclasses.dataclass(frozen=True)
class Runner(Section):
    direct_running_mode: str
    direct_num_workers: int
    circuit_breaker: Breaker


RUNNER = {"direct_running_mode": "in_memory", "direct_num_workers": 2,
          "circuit_breaker": {"min_items": 50, "max_failure_share": 0.9}}


def test_a_typed_section_takes_exactly_its_keys_and_converts_nested_sections():
    runner = Runner.from_config(RUNNER, "runner")
    assert runner.circuit_breaker == Breaker(min_items=50, max_failure_share=0.9)
    with pytest.raises(ConfigError, match=r"'runner': unknown keys \['extra'\], missing keys \[\]"):
        Runner.from_config({**RUNNER, "extra": 1}, "runner")
    with pytest.raises(ConfigError, match=r"'runner.circuit_breaker': unknown keys \[\], missing keys \['min_items'\]"):
        Runner.from_config({**RUNNER, "circuit_breaker": {"max_failure_share": 0.9}}, "runner")
