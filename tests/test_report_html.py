"""The run report as a person sees it: rendered by headless Chromium, charts and sample images visible."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
from PIL import Image

from pipeline.accounting import stage_table
from pipeline.report import _thumbnail, funnel, render_html


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
