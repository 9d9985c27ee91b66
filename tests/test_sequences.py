"""The sequence builder against the contract: property-based over random documents, plus worked examples."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from pipeline.config import load_defaults
from pipeline.shards.sequences import (
    SpecialIds,
    WindowConfig,
    build_sequences,
    build_windows,
    drop_reason,
    fit_image,
    token_stream,
)
from pipeline.shards.settings import ShardSettings
from schemas.shards import compute_phi, loss_target_mask

SPECIAL = SpecialIds(image=2, eoc=3, eos=1, pad=0)
DEFAULT_WINDOWING = WindowConfig.from_config(ShardSettings.from_config(load_defaults()["shards"], "shards"))
TEXT_IDS = st.integers(min_value=4, max_value=60)


def windowing(**changes) -> WindowConfig:
    """The defaults' window settings with `changes` (checked again, as the config's are)."""
    return dataclasses.replace(DEFAULT_WINDOWING, **changes)


def naive_phi(ids: np.ndarray, mask: np.ndarray, image: int) -> tuple[list[int], list[int]]:
    """The contract's definition, position by position, written independently of compute_phi."""
    real = [i for i in range(len(ids)) if mask[i]]
    images = [i for i in real if ids[i] == image]
    phi, phi_next = [], []
    for position in range(len(ids)):
        if not mask[position]:
            phi.append(0)
            phi_next.append(0)
            continue
        before = [n for n, p in enumerate(images, start=1) if p <= position]
        after = [n for n, p in enumerate(images, start=1) if p >= position]
        phi.append(before[-1] if before else 0)
        phi_next.append(after[0] if after else 0)
    return phi, phi_next


# A document: text chunks (token lists, possibly empty) and images (marked by None), in any order.
documents = st.lists(st.one_of(st.lists(TEXT_IDS, max_size=40), st.none()), min_size=0, max_size=14)
configs = st.builds(WindowConfig, seq_len=st.integers(2, 80), max_images=st.integers(1, 6),
                    random_window=st.just(False), seed=st.integers(0, 3))


def to_parts(doc: list) -> list:
    parts, image = [], 0
    for item in doc:
        if item is None:
            parts.append(image)
            image += 1
        else:
            parts.append(item)
    return parts


def check_window_arrays(window, config: WindowConfig) -> None:
    ids, mask = window.input_ids, window.attention_mask
    assert ids.shape == mask.shape == window.phi.shape == window.phi_next.shape == (config.seq_len,)
    n = window.n_tokens
    assert mask[:n].all() and not mask[n:].any(), "right padding: a prefix of real tokens"
    assert (ids[n:] == SPECIAL.pad).all() and not (ids[:n] == SPECIAL.pad).any()
    phi, phi_next = naive_phi(ids, mask, SPECIAL.image)
    assert window.phi.tolist() == phi
    assert window.phi_next.tolist() == phi_next
    recomputed = compute_phi(ids, SPECIAL.image, mask)
    assert (recomputed[0] == window.phi).all() and (recomputed[1] == window.phi_next).all()
    assert (np.diff(window.phi[:n].astype(int)) >= 0).all(), "phi is non-decreasing over real tokens"
    image_tokens = int((ids[:n] == SPECIAL.image).sum())
    assert image_tokens == len(window.image_indices) <= config.max_images
    assert window.phi.max(initial=0) == image_tokens
    assert window.n_targets == int(loss_target_mask(ids, mask, SPECIAL.image, SPECIAL.pad).sum())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, config=configs)
def test_chunked_windows_keep_the_contract_and_lose_no_text(doc, config):
    parts = to_parts(doc)
    ids, image_at = token_stream(parts, SPECIAL)
    windows = build_windows(ids, image_at, config, SPECIAL, "doc")

    # The windows tile the stream exactly: nothing lost, nothing repeated.
    assert np.concatenate([w.tokens for w in windows]).tolist() == ids.tolist()
    assert [w.token_start for w in windows] == np.cumsum([0] + [w.n_tokens for w in windows[:-1]]).tolist()
    # Every image lands in exactly one window, in document order.
    assert [i for w in windows for i in w.image_indices] == list(range(sum(1 for p in parts if isinstance(p, int))))
    image_positions = set(np.flatnonzero(ids == SPECIAL.image).tolist())
    for previous, window in zip([None, *windows], windows):
        check_window_arrays(window, config)
        assert 1 <= window.n_tokens <= config.seq_len
        assert window.starts_at_boundary == (window.token_start == 0 or window.token_start in image_positions)
        if not window.starts_at_boundary:
            # Only a chunk longer than L may continue mid-chunk: the previous window was full and had no
            # chunk boundary inside to end at.
            assert previous.n_tokens == config.seq_len
            inside = [p for p in image_positions if previous.token_start < p < window.token_start]
            assert not inside
        reason = drop_reason(window, config)
        if reason == "no_target":
            # The only windows without a target are single tokens (their one token is predicted by nothing).
            assert window.n_tokens == 1 or all(t in (SPECIAL.image,) for t in window.tokens[1:])


@settings(max_examples=200, deadline=None)
@given(doc=documents, config=configs)
def test_token_stream_places_image_and_eoc_tokens_per_contract(doc, config):
    parts = to_parts(doc)
    ids, image_at = token_stream(parts, SPECIAL)
    tokens = ids.tolist()
    assert tokens[-2:] == [SPECIAL.eoc, SPECIAL.eos]
    assert tokens.count(SPECIAL.image) == sum(isinstance(p, int) for p in parts)
    for position in np.flatnonzero(ids == SPECIAL.image):
        assert position == 0 or tokens[position - 1] == SPECIAL.eoc
    # <EOC> appears exactly before each non-initial image and once at the end.
    n_images = tokens.count(SPECIAL.image)
    assert tokens.count(SPECIAL.eoc) == n_images - (tokens[0] == SPECIAL.image) + 1
    # The text tokens are the document's, in order.
    text = [t for p in parts if not isinstance(p, int) for t in p]
    assert [t for t in tokens if t not in (SPECIAL.image, SPECIAL.eoc, SPECIAL.eos)] == text
    assert [int(i) for i in image_at[image_at >= 0]] == list(range(n_images))


@settings(max_examples=200, deadline=None)
@given(doc=documents, seq_len=st.integers(2, 60), max_images=st.integers(1, 4), seed=st.integers(0, 1000),
       doc_id=st.text(min_size=1, max_size=12))
def test_random_window_is_a_seeded_contiguous_window_with_the_first_n_images(doc, seq_len, max_images, seed, doc_id):
    config = windowing(seq_len=seq_len, max_images=max_images, random_window=True, seed=seed)
    ids, image_at = token_stream(to_parts(doc), SPECIAL)
    (window,) = build_windows(ids, image_at, config, SPECIAL, doc_id)
    (again,) = build_windows(ids, image_at, config, SPECIAL, doc_id)
    assert window.token_start == again.token_start and (window.input_ids == again.input_ids).all()
    check_window_arrays(window, config)

    raw = ids[window.token_start:window.token_start + seq_len].tolist()
    assert window.token_start + len(raw) == len(ids) or len(raw) == seq_len
    raw_images = [int(i) for i in image_at[window.token_start:window.token_start + seq_len] if i >= 0]
    assert window.image_indices == raw_images[:max_images], "the first N images of the window are kept"
    # The kept tokens are the raw window minus exactly one <EOC><image> pair per dropped image.
    dropped = len(raw_images) - len(window.image_indices)
    assert window.n_tokens == len(raw) - 2 * dropped
    kept = iter(window.tokens.tolist())
    expected = next(kept, None)
    for token in raw:  # kept tokens form a subsequence of the raw window
        if token == expected:
            expected = next(kept, None)
    assert expected is None


def test_the_contracts_example_stream_and_phi():
    # T0 <EOC> <image> T1 <EOC> <image> T2 <EOC> <eos>
    ids, _ = token_stream([[10, 11], 0, [12], 1, [13]], SPECIAL)
    assert ids.tolist() == [10, 11, 3, 2, 12, 3, 2, 13, 3, 1]
    window, = build_windows(ids, np.where(ids == 2, 0, -1), windowing(seq_len=12), SPECIAL, "d")
    assert window.phi.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 0]
    assert window.phi_next.tolist() == [1, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0]
    targets = loss_target_mask(window.input_ids, window.attention_mask, 2, 0)
    # Targets: every real token after the first except <image>; <EOC> and <eos> are targets.
    assert targets.tolist() == [False, True, True, False, True, True, False, True, True, True, False, False]


def test_image_first_document_has_no_leading_eoc():
    ids, _ = token_stream([0, [10, 11], 1], SPECIAL)
    assert ids.tolist() == [2, 10, 11, 3, 2, 3, 1]


def test_long_text_window_ends_before_an_image_so_the_next_starts_with_it():
    # 6 text tokens, image, 6 text tokens: with L=10 the first window ends at the image's <EOC>.
    ids, image_at = token_stream([[10] * 6, 0, [11] * 6], SPECIAL)
    windows = build_windows(ids, image_at, windowing(seq_len=10), SPECIAL, "d")
    assert [w.tokens.tolist() for w in windows] == [[10] * 6 + [3], [2] + [11] * 6 + [3, 1]]
    assert [w.starts_at_boundary for w in windows] == [True, True]
    assert windows[1].phi[:9].tolist() == [1] * 9


def test_more_than_n_images_start_a_new_window():
    ids, image_at = token_stream([[10], 0, [11], 1, [12], 2, [13]], SPECIAL)
    windows = build_windows(ids, image_at, windowing(seq_len=50, max_images=2), SPECIAL, "d")
    assert [w.image_indices for w in windows] == [[0, 1], [2]]
    assert windows[1].tokens[0] == SPECIAL.image


def test_random_window_seed_depends_on_doc_id_and_config_seed_only():
    ids, image_at = token_stream([list(range(10, 60)) * 4], SPECIAL)
    def start(seed, doc_id):
        return build_windows(ids, image_at, windowing(seq_len=16, random_window=True, seed=seed), SPECIAL,
                             doc_id)[0].token_start
    starts = {start(0, f"doc{i}") for i in range(20)}
    assert len(starts) > 5, "different documents get different windows"
    assert start(0, "doc1") == start(0, "doc1")
    assert [start(1, f"doc{i}") for i in range(20)] != [start(0, f"doc{i}") for i in range(20)]


def test_sequences_without_target_or_with_too_few_images_are_counted_not_emitted():
    kept, drops = build_sequences([[10] * 3], windowing(seq_len=8, min_images_per_sequence=1), SPECIAL, "d")
    assert kept == [] and drops == {"too_few_images": 1}
    # A stream of 9 tokens in windows of 8 leaves a lone <eos>: nothing predicts it inside its window.
    kept, drops = build_sequences([[10] * 7], windowing(seq_len=8), SPECIAL, "d")
    assert len(kept) == 1 and drops == {"no_target": 1}


def test_window_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="seq_len"):
        windowing(seq_len=1)
    with pytest.raises(ValueError, match="max_images"):
        windowing(max_images=0)


def _png(width: int, height: int) -> bytes:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)  # left half red, right half black
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("mode", ["center_crop", "pad", "stretch"])
@pytest.mark.parametrize("image_format", ["jpeg", "webp"])
def test_fit_image_gives_exactly_the_slot_size(mode, image_format):
    data = fit_image(_png(640, 320), (96, 128), mode, image_format, 90)
    with PILImage.open(io.BytesIO(data)) as image:
        assert image.size == (128, 96) and image.format == {"jpeg": "JPEG", "webp": "WEBP"}[image_format]
        pixels = np.asarray(image.convert("RGB")).astype(int)
    if mode == "pad":  # 2:1 source in a 4:3 slot: black bands above and below
        assert pixels[:4].max() < 16 and pixels[-4:].max() < 16
    else:  # no bands: the red half is visible from top to bottom
        assert pixels[:4, :10, 0].min() > 200 and pixels[-4:, :10, 0].min() > 200


def test_fit_image_keeps_bytes_already_at_size_and_rejects_garbage():
    once = fit_image(_png(200, 100), (64, 64), "center_crop", "jpeg", 90)
    assert fit_image(once, (64, 64), "center_crop", "jpeg", 90) == once
    assert fit_image(_png(200, 100), (64, 64), "center_crop", "jpeg", 90) == once, "deterministic encoding"
    with pytest.raises(OSError):  # PIL's UnidentifiedImageError
        fit_image(b"not an image", (64, 64), "center_crop", "jpeg", 90)
    with pytest.raises(ValueError, match="resize mode"):
        fit_image(once, (64, 64), "squash", "jpeg", 90)


def test_fit_image_honours_exif_orientation():
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)  # stored: left half red
    exif = PILImage.Exif()
    exif[0x0112] = 6  # displayed rotated 90° clockwise: the red half ends up on top
    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, format="JPEG", exif=exif.tobytes(), quality=95)
    fitted = np.asarray(PILImage.open(io.BytesIO(fit_image(out.getvalue(), (64, 64), "stretch", "jpeg", 95))))
    assert fitted[:24, :, 0].mean() > 200 and fitted[40:, :, 0].mean() < 40
