"""Pictures for the sample crawl: real photographs, generated images, logos, icons and pixels.

Photographs come from `skimage.data` (scikit-image ships them in its wheel; the ones used here are
public domain / CC0), cropped, flipped and resized per use so each URL is perceptually distinct.
Generated images are smooth random colour fields with shapes. Everything is encoded without
timestamps or other varying metadata, so the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import random
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# skimage.data photographs bundled in the wheel (no download). Grey ones are turned into RGB.
PHOTO_SOURCES = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "camera",
    "moon", "clock", "coins", "grass", "gravel", "brick", "cell", "motorcycle", "colorwheel",
)

JPEG_QUALITY = 85
MIN_SIDE = 200
MAX_SIDE = 640
SOURCE_MAX_SIDE = 800  # bundled photos are scaled down once to this, so crops are cheap to make


@cache
def load_photo(name: str) -> Image.Image:
    """One bundled scikit-image photograph as an RGB PIL image."""
    import skimage.data

    if name == "motorcycle":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, name)()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(1e-9, float(array.max() - array.min()))).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    image = Image.fromarray(array[..., :3], "RGB")
    return fit(image, SOURCE_MAX_SIDE) if max(image.size) > SOURCE_MAX_SIDE else image


def fit(image: Image.Image, long_side: int) -> Image.Image:
    """Resize so the longer side is `long_side`, keeping the aspect ratio."""
    w, h = image.size
    scale = long_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)


def photo_variant(name: str, rng: random.Random, long_side: int | None = None) -> Image.Image:
    """A crop of a bundled photo: random window (aspect 0.6–1.7), optional mirror, resized to ≤640 px.

    The short side stays ≥ 200 px and the aspect ratio within 0.5–2, so the image passes the
    image filters unless a caller shapes it otherwise on purpose.
    """
    photo = load_photo(name)
    w, h = photo.size
    for _ in range(20):
        aspect = rng.uniform(0.6, 1.7)
        crop_h = rng.uniform(0.55, 1.0) * h
        crop_w = crop_h * aspect
        if crop_w <= w:
            break
    else:
        crop_w, crop_h = w, h
    x0 = rng.uniform(0, w - crop_w)
    y0 = rng.uniform(0, h - crop_h)
    image = photo.crop((round(x0), round(y0), round(x0 + crop_w), round(y0 + crop_h)))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return fit_within(image, long_side or rng.randint(320, 480))


def fit_within(image: Image.Image, long_side: int) -> Image.Image:
    """Resize to `long_side`, or larger where needed to keep the short side at least MIN_SIDE."""
    image = fit(image, long_side)
    if min(image.size) < MIN_SIDE:
        image = fit(image, round(long_side * MIN_SIDE / min(image.size)) + 1)
    return image


def generated_image(rng: random.Random, width: int, height: int) -> Image.Image:
    """Abstract picture: smooth random colour field, a few shapes, fine noise (perceptually unique)."""
    nprng = np.random.default_rng(rng.getrandbits(63))
    grid = (rng.randint(2, 6), rng.randint(2, 6))
    coarse = nprng.uniform(0, 255, size=(grid[1], grid[0], 3))
    half = (max(1, width // 2), max(1, height // 2))  # drawn and blurred at half size: cheap, and soft anyway
    image = Image.fromarray(coarse.astype(np.uint8), "RGB").resize(half, Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.uniform(-0.2, 1.0) * half[0], rng.uniform(-0.2, 1.0) * half[1]
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * half[0], y0 + rng.uniform(0.1, 0.6) * half[1]
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 1.5))).resize((width, height), Image.BILINEAR)
    noise = nprng.integers(-1, 2, size=(height, width, 1), dtype=np.int16) * 3
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8), "RGB")


def logo_image(rng: random.Random, text: str, width: int = 180, height: int = 56) -> Image.Image:
    """A site mark: a coloured plate of its own, a circle and the site's initials."""
    image = generated_image(rng, width, height)
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 6, height - 6, height - 6), fill=(255, 255, 255))
    draw.text((height + 4, height // 2 - 6), text, fill=(255, 255, 255))
    return image


def brand_mark(rng: random.Random, size: int = 320) -> Image.Image:
    """A large square site emblem that pages put inside their content (an image shared by many pages)."""
    colour = tuple(rng.randint(20, 200) for _ in range(3))
    image = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.15, size * 0.15, size * 0.85, size * 0.85), outline=(255, 255, 255), width=size // 16)
    triangle = [(size * 0.5, size * 0.25), (size * 0.75, size * 0.7), (size * 0.25, size * 0.7)]
    draw.polygon(triangle, fill=(255, 255, 255))
    return image


def icon_image(rng: random.Random, size: int = 32) -> Image.Image:
    """A small square glyph: a rounded frame over a picture of its own (no two icons alike)."""
    image = generated_image(rng, size, size)
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    ImageDraw.Draw(image).rounded_rectangle((1, 1, size - 2, size - 2), radius=size // 4, outline=colour, width=2)
    return image


def encode(image: Image.Image, fmt: str, quality: int = JPEG_QUALITY) -> bytes:
    """Deterministic bytes: no EXIF, no timestamps; same pixels → same file."""
    out = io.BytesIO()
    fmt = fmt.lower()
    if fmt in ("jpg", "jpeg"):
        image.convert("RGB").save(out, "JPEG", quality=quality, optimize=False, progressive=False)
    elif fmt == "png":
        image.save(out, "PNG", optimize=False, compress_level=6)
    elif fmt == "webp":
        image.convert("RGB").save(out, "WEBP", quality=quality, method=4)
    elif fmt == "gif":
        image.convert("P").save(out, "GIF")
    else:
        raise ValueError(f"unsupported format {fmt}")
    return out.getvalue()


def pixel_gif() -> bytes:
    """A 1x1 transparent-looking tracking pixel."""
    return encode(Image.new("RGB", (1, 1), (255, 255, 255)), "gif")
