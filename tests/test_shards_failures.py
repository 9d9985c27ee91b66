"""Image errors that are not about the image stop the run; only the decoder refusing an image's own bytes is a
counted drop (issue 14, part 4: shard_sink's fitting, imagehash's lazy scipy import)."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import apache_beam as beam
import pytest
from PIL import Image as PILImage

from pipeline.cli import main as m3w
from pipeline.core.failures import BreakerSettings, SystematicFailure
from pipeline.dedup.images import DedupImages, ImageDedupSettings, _HashImages
from pipeline.dedup.keys import image_phash
from pipeline.jobs.runner import RunnerSettings, make_pipeline
from pipeline.settings import load_config
from tests.test_shards_helpers import make_document, write_documents

REPO = Path(__file__).resolve().parents[1]

FAILING_FITTER = textwrap.dedent("""
    import sys
    import pipeline.shards.writer

    def fit_image(*args, **kwargs):
        raise MemoryError("the resampler ran out of memory")  # a failure of the fitter, not of any image

    pipeline.shards.writer.fit_image = fit_image
    from pipeline.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_failing_image_fitter_makes_m3w_shard_exit_non_zero_naming_it(tmp_path):
    write_documents([make_document(i, n_images=2) for i in range(4)], tmp_path / "in")
    process = subprocess.run([sys.executable, "-c", FAILING_FITTER, "shard", "--input", str(tmp_path / "in"),
                              "--output", str(tmp_path / "out"), "--set", "shards.bpe_vocab_size=300"],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode != 0
    assert "MemoryError: the resampler ran out of memory" in process.stderr
    assert not (tmp_path / "out" / "manifest.json").exists(), "no shard set may be marked complete"


def test_nearly_every_image_undecodable_stops_m3w_shard(tmp_path, capsys):
    garbage = lambda k: b"\x89PNG\r\n\x1a\n" + bytes(64)  # noqa: E731 - a header and no picture
    write_documents([make_document(i, n_images=2, image_source=garbage) for i in range(30)], tmp_path / "in")
    code = m3w(["shard", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                "--set", "shards.bpe_vocab_size=300"])
    assert code == 1
    assert "shard: 50 of 50 items failed with UndecodableImage" in capsys.readouterr().err


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 48), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_phash_with_a_broken_scipy_raises_instead_of_calling_the_image_undecodable(monkeypatch):
    with pytest.raises(ValueError, match="undecodable image"):
        image_phash(b"not a picture", 8)  # the image's fault: the caller counts a drop
    monkeypatch.setitem(sys.modules, "scipy.fftpack", None)  # `import scipy.fftpack` now fails
    with pytest.raises(ImportError, match="scipy.fftpack"):
        image_phash(_png(), 8)


def test_a_broken_scipy_stops_image_dedup_in_the_driver_and_in_the_workers(monkeypatch):
    config = load_config(overrides=["runner.direct_running_mode=in_memory"])
    breaker = BreakerSettings.from_config(config["runner"]["circuit_breaker"], "runner.circuit_breaker")
    hasher = _HashImages(8, 4, None, breaker)
    hasher.setup()  # loaded while scipy was fine; it breaks afterwards (a worker whose environment changed)
    doc = make_document(1, n_images=1, image_source=lambda k: _png())
    monkeypatch.setitem(sys.modules, "scipy.fftpack", None)
    with pytest.raises(ImportError):
        list(hasher.process(doc))  # never an `undecodable` drop
    with pytest.raises(SystematicFailure, match=r"cannot load imagehash \(pHash, with scipy\): ModuleNotFoundError"):
        settings = ImageDedupSettings.from_config(config["dedup"]["images"], "dedup.images")
        make_pipeline([], RunnerSettings.from_config(config["runner"], "runner")) | beam.Create([doc]) | DedupImages(
            settings, breaker)
