"""Image checks after download (filters/images.py), the NSFW rule (filters/nsfw.py) and the local image host."""

from __future__ import annotations

import dataclasses
import http.client
import io

import imagehash
import pytest
from PIL import Image

from filters.base import ImageItem
from filters.images import ImageFilterSettings, ImageRules, looks_like_text
from filters.nsfw import NsfwRule, NsfwScorer
from pipeline.sampledata.imagehost import FAILURE_KINDS, FAILURE_REASONS, ImageHost, bomb_png, generated_picture
from pipeline.settings import load_config

SETTINGS = ImageFilterSettings.from_config(load_config()["image_filters"])


@pytest.fixture(scope="module")
def rules() -> ImageRules:
    return ImageRules(SETTINGS)


def encoded(width: int, height: int, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def reason(data: bytes | None, rules: ImageRules) -> str:
    item = ImageItem(url="https://host.example/a.jpg", data=data)
    verdict = rules(item)
    if verdict.keep:
        assert item.picture.tile == []  # kept: the item's picture is decoded, ready for the caller
    return verdict.reason or "keep"


def test_min_side_at_and_around_the_threshold(rules):
    side = rules.min_side
    assert reason(encoded(side, side), rules) == "keep"
    assert reason(encoded(side - 1, side), rules) == "min_side"
    assert reason(encoded(side, side - 1), rules) == "min_side"


def test_aspect_ratio_bounds_are_inclusive(rules):
    h = 200
    assert reason(encoded(int(h * rules.max_aspect_ratio), h), rules) == "keep"
    assert reason(encoded(int(h * rules.max_aspect_ratio) + 1, h), rules) == "aspect_ratio"
    w = 200
    assert reason(encoded(w, int(w / rules.min_aspect_ratio)), rules) == "keep"
    assert reason(encoded(w, int(w / rules.min_aspect_ratio) + 1), rules) == "aspect_ratio"


def test_formats_are_judged_by_the_decoded_bytes(rules):
    for fmt in ("JPEG", "PNG", "WEBP"):
        verdict = rules(ImageItem(data=encoded(300, 300, fmt)))
        assert verdict.keep, fmt
        assert verdict.scores["original_format"] == {"JPEG": "jpeg"}.get(fmt, fmt.lower())
        assert verdict.scores["original_width"] == 300
    assert reason(encoded(300, 300, "GIF"), rules) == "format"
    assert reason(encoded(300, 300, "BMP"), rules) == "format"


def test_pixel_cap_refuses_before_decoding(rules):
    assert reason(bomb_png(100_000, 100_000), rules) == "too_many_pixels"  # Pillow's own bomb limit
    small_cap = ImageRules(dataclasses.replace(SETTINGS, max_pixels=300 * 300))
    assert reason(encoded(300, 300), small_cap) == "keep"
    assert reason(encoded(301, 300), small_cap) == "too_many_pixels"
    # A header that passes Pillow's limit but not ours, with no pixel data at all: refused, not decoded.
    assert reason(bomb_png(9000, 9000), small_cap) == "too_many_pixels"


def test_broken_bytes_get_precise_reasons(rules):
    good = encoded(400, 300)
    assert reason(good[: len(good) // 2], rules) == "decode_error"  # truncated: the header parses, pixels do not
    assert reason(b"\x00\x01garbage" * 50, rules) == "decode_error"
    assert reason(b"<!doctype html><html><body>nope</body></html>", rules) == "not_an_image"
    assert reason(b"", rules) == "empty_body"
    assert reason(None, rules) == "empty_body"
    assert looks_like_text(b'{"error": "missing"}') and not looks_like_text(good)


def test_header_only_mode_judges_without_decoding(rules):
    good = encoded(400, 300)
    header_only = ImageRules(SETTINGS, decode=False)
    item = ImageItem(data=good[: len(good) // 2])
    verdict = header_only(item)
    assert verdict.keep and item.picture.size == (400, 300)  # truncation is left to the caller's decoder
    assert item.picture.tile != []  # opened, not decoded
    assert header_only(ImageItem(data=encoded(100, 300))).reason == "min_side"
    assert header_only(ImageItem(data=bomb_png())).reason == "too_many_pixels"


def test_image_settings_are_exactly_their_sections():
    from filters.image_nodes import ImageNodeSettings

    config = load_config()
    assert dataclasses.asdict(SETTINGS) == config["image_filters"]
    assert dataclasses.asdict(ImageNodeSettings.from_config(config["image_nodes"])) == config["image_nodes"]


def test_invalid_aspect_config_is_a_clear_error():
    with pytest.raises(ValueError, match="aspect"):
        ImageRules(dataclasses.replace(SETTINGS, min_aspect_ratio=3.0, max_aspect_ratio=2.0))


def test_nsfw_rule_threshold_is_inclusive():
    rule = NsfwRule(SETTINGS.nsfw)
    threshold = SETTINGS.nsfw.threshold
    assert rule(ImageItem(nsfw_score=threshold)).reason == "nsfw"
    assert rule(ImageItem(nsfw_score=threshold - 1e-4)).keep
    assert rule(ImageItem(nsfw_score=0.3)).scores == {"nsfw_score": 0.3}
    assert rule.stats == {"kept": 2, "dropped": 1, "dropped/nsfw": 1}
    with pytest.raises(ValueError, match="nsfw_score"):
        rule(ImageItem(url="https://host.example/a.jpg"))  # a caller that forgot to score is a code error


def test_nsfw_scorer_runs_offline_from_the_wheel_and_is_deterministic():
    scorer = NsfwScorer(batch_size=2)
    pictures = [generated_picture(f"/nsfw/{i}.jpg") for i in range(3)]
    first, second = scorer.scores(pictures), scorer.scores(pictures)
    assert first == second
    assert all(0.0 <= s <= 1.0 for s in first)
    assert len(set(first)) == 3  # different pictures, different scores: the model really looks at them
    mixed = scorer.scores([pictures[0], b"not an image", pictures[2]])
    assert mixed == [first[0], None, first[2]]  # one unreadable picture costs the others nothing


def test_generated_pictures_are_deterministic_and_perceptually_distinct():
    a1, a2 = generated_picture("/h/a.jpg"), generated_picture("/h/a.jpg")
    assert a1.tobytes() == a2.tobytes()
    hashes = [imagehash.phash(generated_picture(f"/h/{i}.jpg")) for i in range(40)]
    distances = [x - y for i, x in enumerate(hashes) for y in hashes[i + 1:]]
    assert min(distances) >= 10
    assert generated_picture("/h/b.jpg", (123, 77)).size == (123, 77)


def test_host_routes(tmp_path):
    (tmp_path / "img.site.test" / "a").mkdir(parents=True)
    on_disk = encoded(200, 200, "PNG")
    (tmp_path / "img.site.test" / "a" / "b.png").write_bytes(on_disk)
    host = ImageHost(tmp_path, timeout_sleep_s=0.3)
    assert host.response_for("/img.site.test/a/b.png").body == on_disk
    escaped = host.response_for("/img.site.test/../../etc/passwd")  # outside the root: a picture, never the file
    assert escaped.headers[0][1].startswith("image/") and b"root:" not in escaped.body
    generated = host.response_for("/img.site.test/other.webp")
    assert Image.open(io.BytesIO(generated.body)).format == "WEBP"
    dup1 = host.response_for("/x.test/dup/same/1.jpg").body
    assert dup1 == host.response_for("/y.test/dup/same/2.jpg").body
    assert dup1 != host.response_for("/y.test/dup/other/2.jpg").body
    sized = host.response_for("/x.test/size/151x90/p.jpg")
    assert Image.open(io.BytesIO(sized.body)).size == (151, 90)
    assert host.response_for("/x.test/fail/404/a.jpg").status == 404
    assert host.response_for("/x.test/fail/500/a.jpg").status == 500
    assert host.response_for("/x.test/fail/timeout/a.jpg").delay_s == 0.3
    assert dict(host.response_for("/x.test/fail/noai/a.jpg").headers)["X-Robots-Tag"] == "noai"
    assert dict(host.response_for("/x.test/fail/wrong_type/a.jpg").headers)["Content-Type"].startswith("text/html")
    assert set(FAILURE_REASONS) == set(FAILURE_KINDS)


def test_host_serves_over_http_and_records_requests(tmp_path):
    with ImageHost(timeout_sleep_s=0.2) as host:
        assert host.base_url.startswith("http://127.0.0.1:")
        conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=5)
        conn.request("GET", "/img.example.com/a.jpg?w=3", headers={"User-Agent": "probe/1"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and response.getheader("Content-Type") == "image/jpeg"
        assert Image.open(io.BytesIO(body)).format == "JPEG"
        conn.request("GET", "/img.example.com/fail/bomb/a.png")
        assert conn.getresponse().read() == bomb_png()
        records = host.requests
        assert [r.target for r in records] == ["/img.example.com/a.jpg?w=3", "/img.example.com/fail/bomb/a.png"]
        assert records[0].user_agent == "probe/1" and records[0].client == "127.0.0.1"
        expected = f"{host.base_url}/img.example.com:8443/a/b.jpg?x=1"
        assert host.url_for("https://img.example.com:8443/a/b.jpg?x=1") == expected
    assert host._server is None
