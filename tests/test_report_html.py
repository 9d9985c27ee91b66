"""The run report as a person sees it: rendered by headless Chromium, charts and sample images visible."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
from PIL import Image

from pipeline.core.accounting import stage_table
from pipeline.io.documents import parquet_bytes
from pipeline.report.run_report import _thumbnail, add_smoke_verdict, funnel, render_html, write_report
from schemas.document import Document, Node
from schemas.document import Image as DocImage


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_report_renders_funnel_and_sample_images_in_chromium(tmp_path):
    counts = {"read|records|in": 10, "read|records|out": 8, "read|records|drop|not_response": 2,
              "extract|pages|in": 8, "extract|pages|out": 5, "extract|pages|drop|no_images": 3,
              "shard|sequences|in": 7, "shard|sequences|out": 7}
    table = stage_table(counts, ["read", "extract", "shard"])
    report = {"output": "out", "stages": table, "unbalanced": [], "funnel": funnel(table),
              "samples": [{"url": "https://a.example/", "language": "en",
                           "nodes": [{"text": "Before the picture."},
                                     {"image": "https://a.example/x.jpg", "thumb": _thumbnail(_jpeg((0, 200, 0)))}]}]}
    page = tmp_path / "report.html"
    page.write_text(render_html(report))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is required (make system-deps)"
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1800",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)

    def share(rgb: tuple[int, int, int], tolerance: int = 30) -> float:
        return float((np.abs(pixels - np.array(rgb)).max(axis=1) <= tolerance).mean())

    assert share((37, 99, 235)) > 0.001  # the funnel's bars (#2563eb)
    assert share((239, 68, 68)) > 0.0005  # drop-reason bars (#ef4444)
    assert share((0, 200, 0), 40) > 0.002  # the sample document's image, loaded from its data URI


def test_adding_the_smoke_verdict_keeps_the_sample_documents(tmp_path):
    """The demo re-renders the build's report with the verdict; the sample documents and their images stay."""
    images = tmp_path / "stages" / "images"
    images.mkdir(parents=True)
    doc = Document(doc_id="d1", url="https://a.example/page", nodes=[
        Node(text="Before the picture."), Node(image=DocImage(url="https://a.example/x.jpg", data=_jpeg((0, 200, 0))))])
    (images / "part-00000.parquet").write_bytes(parquet_bytes([doc], with_bytes=True, compression="zstd"))
    table = stage_table({"shard|sequences|in": 1, "shard|sequences|out": 1}, ["shard"])
    write_report({"output": str(tmp_path), "stages": table, "unbalanced": [], "funnel": funnel(table),
                  "samples": []}, str(tmp_path))
    add_smoke_verdict(str(tmp_path), {"status": "inconclusive", "passed": False, "summary": "too few canaries",
                                      "checks": {}})
    page = (tmp_path / "report.html").read_text()
    assert "https://a.example/page" in page and page.count("data:image/jpeg;base64,") == 1
    assert ">INCONCLUSIVE</span> too few canaries" in page
    assert "samples" not in (tmp_path / "report.json").read_text()


def test_an_empty_or_unverified_run_is_not_shown_as_sound():
    table = stage_table({"shard|sequences|in": 0, "shard|sequences|out": 0}, ["shard"])
    sound = render_html({"output": "out", "stages": table, "unbalanced": [], "funnel": []})
    assert "empty result" not in sound and "cannot verify" not in sound
    page = render_html({"output": "out", "stages": table, "unbalanced": [], "funnel": [],
                        "empty": "the run wrote nothing from 36 documents: download dropped every image",
                        "unverified": "the runner returned no metrics"})
    assert "<span class='badge fail'>empty result: the run wrote nothing from 36 documents" in page
    assert "<span class='badge fail'>cannot verify: the runner returned no metrics</span>" in page
