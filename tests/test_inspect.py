"""`m3w inspect`: validate catches each corruption with a precise message; stats, show and html tell the truth;
the html view, opened in a headless browser, shows the images."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from pipeline.cli import main as m3w
from pipeline.inspect.html import write_html
from pipeline.inspect.show import show
from pipeline.inspect.stats import compute_stats
from pipeline.inspect.validate import validate
from schemas.shards import (
    SpecialTokens,
    iter_samples,
    iter_tar_groups,
    npy_array,
    npy_bytes,
    read_manifest,
    sha256_bytes,
    tar_bytes,
)
from tests.test_shards_helpers import MARKER_BACKGROUND, MARKER_DISC, sample_documents, write_documents

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    write_documents(sample_documents(), root / "in")
    overrides = ["runner.direct_running_mode=in_memory", "shards.bpe_vocab_size=600", "shards.seq_len=96",
                 "shards.target_shard_bytes=400000"]
    code = m3w(["shard", "--input", str(root / "in"), "--output", str(root / "out"),
                *(arg for item in overrides for arg in ("--set", item))])
    assert code == 0, "the `m3w shard` command succeeds"
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["unbalanced"] == [] and report["shards"]["samples"] > 0
    return root / "out"


@pytest.fixture
def corrupt(shards, tmp_path):
    """A fresh copy of the shard set and a function that rewrites one sample in it."""
    out = tmp_path / "copy"
    shutil.copytree(shards, out)

    def rewrite(key: str, change: Callable[[dict[str, bytes]], dict[str, bytes]], fix_manifest: bool = True) -> str:
        manifest = json.loads((out / "manifest.json").read_text())
        for entry in manifest["shards"]:
            path = out / entry["file"]
            groups = list(iter_tar_groups(str(path)))
            if any(k == key for k, _ in groups):
                data = tar_bytes([(k, change(dict(m)) if k == key else m) for k, m in groups])
                path.write_bytes(data)
                if fix_manifest:  # isolate the sample-level problem from the (also wrong) shard checksum
                    entry.update(sha256=sha256_bytes(data), bytes=len(data))
                    (out / "manifest.json").write_text(json.dumps(manifest))
                return str(path)
        raise AssertionError(f"no sample {key}")

    return out, rewrite


def pick(shards: Path, min_images: int = 1, image_not_first: bool = False):
    special = SpecialTokens.from_manifest(read_manifest(str(shards)))
    for sample in iter_samples(str(shards)):
        if len(sample.image_bytes) >= min_images and (not image_not_first or sample.input_ids[0] != special.image):
            return sample, special
    raise AssertionError("no such sample")


def messages(result) -> list[str]:
    return [str(p) for p in result.problems]


def only_problems_of(result, shard: str, key: str) -> list[str]:
    assert not result.ok
    assert all(p.shard == shard and p.key == key for p in result.problems), messages(result)
    return [p.message for p in result.problems]


def set_array(members: dict[str, bytes], name: str, array: np.ndarray) -> None:
    members[name] = npy_bytes(array, npy_array(members[name]).dtype)


def test_built_shards_validate_clean_from_every_entry_point(shards):
    for source in (shards, shards / "manifest.json", shards / "shards", next((shards / "shards").glob("*.tar"))):
        result = validate(str(source))
        assert result.ok, messages(result)
        assert result.samples > 0
    assert validate(str(shards)).samples == read_manifest(str(shards))["total_samples"]


def test_relative_paths_name_the_same_files(shards, monkeypatch):
    monkeypatch.chdir(shards.parent)
    for source in ("out", "out/manifest.json", next(Path("out/shards").glob("*.tar")).as_posix()):
        result = validate(source)
        assert result.ok, messages(result)


def test_phi_shifted_by_one_is_rejected(corrupt):
    out, rewrite = corrupt
    sample, _ = pick(out)

    def shift(members):
        set_array(members, "phi.npy", np.concatenate([[0], npy_array(members["phi.npy"])[:-1]]))
        return members

    shard = rewrite(sample.key, shift)
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    assert any(m.startswith("phi disagrees with the tokens at") for m in problems), problems


def test_exclusive_phi_at_the_image_position_is_rejected(corrupt):
    out, rewrite = corrupt
    sample, special = pick(out)

    def exclusive(members):
        ids, phi = npy_array(members["input_ids.npy"]), npy_array(members["phi.npy"]).copy()
        phi[ids == special.image] -= 1
        set_array(members, "phi.npy", phi)
        return members

    shard = rewrite(sample.key, exclusive)
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    position = int(np.flatnonzero(sample.input_ids == special.image)[0])
    assert f"phi disagrees with the tokens at {int((sample.input_ids == special.image).sum())} position(s), " \
           f"first at {position} (token)" in problems[0], problems


def test_swapped_image_slots_are_rejected(corrupt):
    out, rewrite = corrupt
    sample, _ = pick(out, min_images=2)

    def swap(members):
        members["img0.jpg"], members["img1.jpg"] = members["img1.jpg"], members["img0.jpg"]
        return members

    shard = rewrite(sample.key, swap)
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    assert "image slot 0: holds the image recorded for slot 1 (slots swapped or reordered)" in problems
    assert "image slot 1: holds the image recorded for slot 0 (slots swapped or reordered)" in problems


def test_dropped_token_is_rejected(corrupt):
    out, rewrite = corrupt
    sample, special = pick(out, image_not_first=True)

    def drop_first(members):
        ids = npy_array(members["input_ids.npy"])
        set_array(members, "input_ids.npy", ids[1:])
        return members

    shard = rewrite(sample.key, drop_first)
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    assert "input_ids: shape (95,), expected (96,)" in problems


def test_dropped_token_with_the_array_repadded_is_rejected(corrupt):
    """The subtler corruption: a token removed and a <pad> appended, so every length still agrees."""
    out, rewrite = corrupt
    sample, special = pick(out, image_not_first=True)

    def drop_and_pad(members):
        ids = npy_array(members["input_ids.npy"])
        set_array(members, "input_ids.npy", np.concatenate([ids[1:], [special.pad]]))
        return members

    shard = rewrite(sample.key, drop_and_pad)
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    assert any(m.startswith("phi disagrees with the tokens") for m in problems), problems
    assert any("<pad> at position" in m and "inside the real tokens" in m for m in problems), problems


def test_changed_checksum_is_rejected(corrupt):
    out, _ = corrupt
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = validate(str(out))
    assert messages(result) == [f"{out / manifest['shards'][0]['file']}: -: "
                                f"sha256 differs from the manifest (shard altered or truncated)"]


def test_altered_shard_without_manifest_update_is_rejected(corrupt):
    out, rewrite = corrupt
    sample, _ = pick(out)
    shard = rewrite(sample.key, lambda members: {**members, "json": members["json"].replace(b'"url"', b'"url" ')},
                    fix_manifest=False)
    assert validate(str(out)).problems and any(
        p.shard == shard and "sha256 differs from the manifest" in p.message for p in validate(str(out)).problems)


def test_more_image_tokens_than_slots_is_rejected(corrupt):
    out, rewrite = corrupt
    sample, _ = pick(out, min_images=2)
    shard = rewrite(sample.key, lambda members: {k: v for k, v in members.items() if k != "img1.jpg"})
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    n = len(sample.image_bytes)
    assert f"{n} <image> token(s) but {n - 1} filled image slot(s)" in problems


def test_wrong_image_size_is_rejected(corrupt):
    out, rewrite = corrupt
    sample, _ = pick(out)
    small = io.BytesIO()
    PILImage.new("RGB", (100, 80), (10, 200, 30)).save(small, format="JPEG")

    def replace(members):
        meta = json.loads(members["json"])
        meta["image_sha256"][0] = sha256_bytes(small.getvalue())
        return {**members, "img0.jpg": small.getvalue(), "json": json.dumps(meta).encode()}

    shard = rewrite(sample.key, replace)
    problems = only_problems_of(validate(str(out)), shard, sample.key)
    assert problems == ["image slot 0: decodes to 80x100, expected 320x320"]


def test_duplicate_key_across_shards_is_rejected(corrupt):
    out, _ = corrupt
    manifest = json.loads((out / "manifest.json").read_text())
    first, second = (out / e["file"] for e in manifest["shards"][:2])
    key, members = next(iter_tar_groups(str(first)))
    data = tar_bytes([*iter_tar_groups(str(second)), (key, members)])
    second.write_bytes(data)
    entry = manifest["shards"][1]
    entry.update(sha256=sha256_bytes(data), bytes=len(data), samples=entry["samples"] + 1)
    manifest["total_samples"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert messages(validate(str(out))) == [f"{second}: {key}: key also in shard {first} (keys must be unique)"]


def test_sample_without_target_and_wrong_counts_are_rejected(corrupt):
    out, rewrite = corrupt
    sample, special = pick(out, image_not_first=True)

    def single_token(members):
        ids = np.full(96, special.pad, dtype=np.int32)
        ids[0] = sample.input_ids[0]
        mask = np.zeros(96, dtype=np.uint8)
        mask[0] = 1
        set_array(members, "input_ids.npy", ids)
        set_array(members, "attention_mask.npy", mask)
        set_array(members, "phi.npy", np.zeros(96))
        set_array(members, "phi_next.npy", np.zeros(96))
        meta = json.loads(members["json"])
        meta.update(n_tokens=1, n_targets=0, n_images=0, image_urls=[], image_sha256=[])
        members = {k: v for k, v in members.items() if not k.startswith("img")}
        members["json"] = json.dumps(meta).encode()
        return members

    shard = rewrite(sample.key, single_token)
    assert only_problems_of(validate(str(out)), shard, sample.key) == [
        "no loss target (a sequence without targets must not be emitted)"]
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][0]["samples"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert any("sample(s) in the shard, the manifest says" in m for m in messages(validate(str(out))))
    assert any("total_samples" in m for m in messages(validate(str(out))))


def test_altered_tokenizer_is_rejected(corrupt):
    out, _ = corrupt
    (out / "tokenizer.json").write_text((out / "tokenizer.json").read_text().replace('"<EOC>"', '"<EOX>"'))
    found = messages(validate(str(out)))
    assert any("tokenizer sha256 differs from the manifest" in m for m in found)
    assert any("special token eoc '<EOC>' has id None" in m for m in found)


def test_cli_validate_exit_codes_and_messages(shards, corrupt, capsys):
    assert m3w(["inspect", "validate", str(shards), "--no-images"]) == 0
    assert "OK — " in capsys.readouterr().out
    out, rewrite = corrupt
    sample, _ = pick(out)
    shard = rewrite(sample.key, lambda m: {**m, "phi_next.npy": npy_bytes(np.zeros(96), np.int16)})
    assert m3w(["inspect", "validate", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{shard}: {sample.key}: phi_next disagrees with the tokens" in captured.out
    assert "INVALID: 1 problem(s)" in captured.err
    assert m3w(["inspect", "validate", str(out / "nowhere")]) == 2


def test_stats_match_an_independent_count(shards, capsys):
    stats = compute_stats(str(shards))
    samples = list(iter_samples(str(shards)))
    real = sum(int(s.attention_mask.sum()) for s in samples)
    covered = sum(int((s.phi[s.attention_mask.astype(bool)] > 0).sum()) for s in samples)
    assert stats["sequences"] == len(samples) and stats["real_tokens"] == real
    assert stats["phi_coverage"] == round(covered / real, 4) and 0 < stats["phi_coverage"] < 1
    assert stats["images"] == sum(len(s.image_bytes) for s in samples)
    assert sum(stats["images_per_sequence"].values()) == len(samples)
    assert max(int(n) for n in stats["images_per_sequence"]) <= 5
    assert set(stats["languages"]) == {"en", "fr", "de"} and "marker.test" in stats["top_domains"]
    assert stats["documents"] == read_manifest(str(shards))["total_documents"]
    assert m3w(["inspect", "stats", str(shards)]) == 0
    table = capsys.readouterr().out
    assert "phi coverage (real tokens that see an image)" in table and f"{100 * stats['phi_coverage']:.1f}%" in table


def test_show_prints_text_with_image_markers_and_phi_under_each_token(shards):
    sample = next(s for s in iter_samples(str(shards)) if s.metadata["domain"] == "marker.test")
    text = show(str(shards), key=sample.key, width=100)
    assert f"[<image> #1 {sample.metadata['image_urls'][0]}]" in text
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("token") and "<image#1>" in line)
    column = lines[row].index("<image#1>") + len("<image#1>") - 1  # labels and numbers end in one column
    assert lines[row + 1].startswith("     phi") and lines[row + 1][column] == "1"
    assert lines[row + 2].startswith("phi_next") and lines[row + 2][column] == "1"
    previous = lines[row].index("<EOC>") + len("<EOC>") - 1  # the <EOC> before the image sees nothing yet
    assert lines[row + 1][previous] == "0" and lines[row + 2][previous] == "1"


def test_html_embeds_every_image_where_its_token_stands(shards, tmp_path):
    sample = next(s for s in iter_samples(str(shards)) if len(s.image_bytes) >= 2)
    page = tmp_path / "page.html"
    assert write_html(str(shards), str(page), key=sample.key) == 1
    html = page.read_text()
    assert html.count('src="data:image/jpeg;base64,') == len(sample.image_bytes)
    assert html.index("&lt;image&gt; #1") < html.index("&lt;image&gt; #2")
    files_page = tmp_path / "files.html"
    write_html(str(shards), str(files_page), key=sample.key, image_files=True)
    linked = sorted(p.name for p in (tmp_path / "files_files").iterdir())
    assert linked == [f"{sample.key}.img{i}.jpg" for i in range(len(sample.image_bytes))]
    assert all(f'src="files_files/{name}"' in files_page.read_text() for name in linked)


def _colour_pixels(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> int:
    return int((np.abs(pixels.astype(int) - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_html_view_in_a_headless_browser_shows_the_images(shards, tmp_path):
    """Chromium renders the page; the screenshot must contain the marker image's magenta and cyan
    (colours that appear nowhere else on the page), so the images really loaded and were drawn."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is required for this test (Debian package chromium)"
    sample = next(s for s in iter_samples(str(shards)) if s.metadata["domain"] == "marker.test")
    page, shot = tmp_path / "page.html", tmp_path / "shot.png"
    write_html(str(shards), str(page), key=sample.key)
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(PILImage.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    magenta, cyan = _colour_pixels(pixels, MARKER_BACKGROUND), _colour_pixels(pixels, MARKER_DISC)
    # The marker is drawn 240 px wide: about 57,600 px, a quarter-ish of it the cyan disc.
    assert magenta > 10_000 and cyan > 5_000, (magenta, cyan)
    # A page whose image sources are broken shows neither colour: the check above can fail.
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("data:image/jpeg;base64,", "data:image/jpeg;base64,AAAA"))
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={tmp_path / 'broken.png'}", "--window-size=1200,1600", broken.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    broken_pixels = np.asarray(PILImage.open(tmp_path / "broken.png").convert("RGB"))
    assert _colour_pixels(broken_pixels, MARKER_BACKGROUND) < 100
