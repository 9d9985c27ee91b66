"""Issue 25's headline on Mozilla Readability's 130 labelled pages (`python -m benchmarks.readability` scores them
the same way, beside bare trafilatura): the content pictures a careful reader keeps are kept, few of the kept
pictures are not the reader's, they stand in the reader's order, and the text is the reader's."""

from __future__ import annotations

import pytest

from benchmarks.readability import evaluate, load_labels, m3w_extractor, page_names, run_pages


@pytest.mark.slow
def test_readability_pictures_and_text_hold():
    names = page_names()
    assert len(names) == 130
    labels = {name: load_labels(name) for name in names}
    assert sum(len(label.content) for label in labels.values()) == 371  # issue 25's content pictures
    outputs, _ = run_pages(names, m3w_extractor())
    summary, pages = evaluate(names, {"m3w": outputs}, labels, keeper="m3w")["m3w"]
    misses = {name: score.missed for name, score in pages.items() if score.missed}
    extras = {name: score.extras for name, score in pages.items() if score.extras}
    # issue 25's goals; bare trafilatura's recall on these pages is 0.709 (pinned 2.3.1: benchmarks.readability
    # prints it beside m3w's), so recall >= 0.85 is also its "at least 0.10 above bare trafilatura's"
    assert summary.recall >= 0.85, misses
    assert summary.precision >= 0.92, extras
    assert summary.precision_pictured >= 0.94
    assert summary.order >= 0.99
    assert summary.text_precision >= 0.95 and summary.text_recall >= 0.90
