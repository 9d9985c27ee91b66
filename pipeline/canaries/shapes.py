"""Alignment canaries: generated pictures whose class decides the word that follows them.

A canary page is an ordinary-looking English article; after each canary image the next paragraph
starts with the image's class word ("Circle. ..."). A small conv net learns the eight classes
easily, so a model trained on correctly aligned data predicts that word far better with the true
image than with a shuffled one. That gap is the trainer's strict verdict (`train_smoke`).

Each variant draws its shape with its own colour, position, scale, rotation and a random
low-frequency background with noise, so no two canary images are perceptual duplicates.
"""

from __future__ import annotations

import math
import random
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw

CANARY_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "stripes", "dots")
CANARY_PAGE_HOST = "canary.sample-web.test"  # the sample crawl's canary site (its pictures on the image host)
CANARY_IMAGE_HOST = "img.sample-web.test"
CANARY_IMAGE_PREFIX = "/canary/"
RIDING_HOST = "canaries.m3w.test"  # the canaries `m3w build` adds: pages and pictures (`.test` is reserved, RFC 2606)
CANARY_SIZE = 256  # pixels of a canary picture's side as pages carry it
CANARY_FLAG = "canary"  # the metadata key that marks a build's canary documents between its stages
CANARY_GROUP = "canary"  # their stages' counters: `canary:<stage>|<unit>|...` (pipeline.core.accounting.counted_apart)


def is_canary(doc: Any) -> bool:
    """True for a document a build marked as a canary (`metadata.canary`): it goes to the canary shards."""
    return bool(doc.metadata.get(CANARY_FLAG))


def is_canary_url(url: str) -> bool:
    """True for canary pages and canary images (the trainer reports on them separately)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if host in (CANARY_PAGE_HOST, RIDING_HOST):
        return True
    return host == CANARY_IMAGE_HOST and parts.path.startswith(CANARY_IMAGE_PREFIX)


# The words of the short note after each canary picture: English function words alternating with a few nouns,
# so that at least 40% of a note of four or more words (class word included) are stop words and the note passes
# the paragraph filters (OBELICS's stop-word share), while most of what a model has to predict near the picture
# is its class.
NOTE_FUNCTION_WORDS = ("the", "a", "about", "this", "one", "of", "our", "by", "for", "we", "at", "again", "and",
                       "its", "on", "with", "some", "is", "here", "in")
NOTE_CONTENT_WORDS = ("small", "note", "figure", "shows", "study", "notes", "drawn", "hand", "class", "today",
                      "look", "shape", "colour", "paper", "care", "page", "book", "reader", "sketch")


def canary_note(rng: random.Random, low: int, high: int) -> str:
    """A sentence of `low`..`high` words, function words and nouns in turn, none twice ("The sketch of paper.")."""
    count = rng.randint(low, high)
    function_words = rng.sample(NOTE_FUNCTION_WORDS, (count + 1) // 2)
    content_words = rng.sample(NOTE_CONTENT_WORDS, count // 2)
    words = [function_words[k // 2] if k % 2 == 0 else content_words[k // 2] for k in range(count)]
    return " ".join(words).capitalize() + "."


def canary_paragraph(cls: str, rng: random.Random, low: int, high: int) -> str:
    """The paragraph after a canary picture: its class word, then a note ("Circle. The sketch of paper.")."""
    return f"{cls.capitalize()}. {canary_note(rng, low, high)}"


def canary_class_of_text(text: str) -> str | None:
    """The class word a text starts with ("Circle. The ..." → "circle"), or None."""
    first = text.strip().split(maxsplit=1)[0] if text.strip() else ""
    word = first.strip(".,;:!?").lower()
    return word if word in CANARY_CLASSES else None


def _background(rng: random.Random, size: int) -> Image.Image:
    """Smooth random colour field plus fine noise: different low frequencies for every variant."""
    nprng = np.random.default_rng(rng.getrandbits(63))
    grid = rng.randint(2, 5)
    base = np.array([rng.randint(30, 225) for _ in range(3)], dtype=np.float32)
    coarse = base + nprng.normal(0, 22, size=(grid, grid, 3))
    field = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB").resize((size, size), Image.BICUBIC)
    grain = nprng.normal(0, rng.uniform(4, 9), size=(size // 8, size // 8, 3)) + 128
    grain = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8), "RGB").resize((size, size), Image.BILINEAR)
    pixels = np.asarray(field, dtype=np.int16) + np.asarray(grain, dtype=np.int16) - 128
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _contrasting_colour(rng: random.Random, background: Image.Image) -> tuple[int, int, int]:
    """A saturated colour whose brightness differs clearly from the background's mean."""
    mean = float(np.asarray(background, dtype=np.float32).mean())
    for _ in range(50):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if abs(sum(colour) / 3 - mean) > 100 and max(colour) - min(colour) > 60:
            return colour
    return (255, 255, 255) if mean < 128 else (0, 0, 0)


def _rotate(points, centre, angle):
    cx, cy = centre
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in points]


def render_canary(cls: str, variant: int, size: int = CANARY_SIZE) -> Image.Image:
    """An RGB picture of class `cls`; the same (cls, variant, size) always gives the same pixels."""
    if cls not in CANARY_CLASSES:
        raise ValueError(f"unknown canary class {cls!r}; expected one of {CANARY_CLASSES}")
    rng = random.Random(f"m3w-canary:{cls}:{variant}:{size}")
    image = _background(rng, size)
    colour = _contrasting_colour(rng, image)
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.25, 0.4)
    margin = radius + size * 0.04
    cx, cy = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
    angle = rng.uniform(0, 2 * math.pi)
    if cls == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif cls == "ring":
        width = max(4, int(radius * rng.uniform(0.2, 0.35)))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=colour, width=width)
    elif cls == "square":
        half = radius * 0.85
        corners = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
        draw.polygon(_rotate(corners, (cx, cy), rng.uniform(-0.3, 0.3)), fill=colour)
    elif cls == "triangle":
        corners = [angle + k * 2 * math.pi / 3 for k in range(3)]
        points = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in corners]
        draw.polygon(points, fill=colour)
    elif cls == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * 0.42
            points.append((cx + r * math.cos(angle + k * math.pi / 5), cy + r * math.sin(angle + k * math.pi / 5)))
        draw.polygon(points, fill=colour)
    elif cls == "cross":
        arm = radius * rng.uniform(0.25, 0.35)
        bars = ([(cx - radius, cy - arm), (cx + radius, cy - arm), (cx + radius, cy + arm), (cx - radius, cy + arm)],
                [(cx - arm, cy - radius), (cx + arm, cy - radius), (cx + arm, cy + radius), (cx - arm, cy + radius)])
        tilt = rng.uniform(-0.35, 0.35)
        for bar in bars:
            draw.polygon(_rotate(bar, (cx, cy), tilt), fill=colour)
    elif cls == "stripes":
        count = rng.randint(3, 5)
        gap = 2 * radius / (2 * count - 1)
        tilt = rng.uniform(0, math.pi)
        for k in range(count):
            x0 = cx - radius + 2 * k * gap
            bar = [(x0, cy - radius), (x0 + gap, cy - radius), (x0 + gap, cy + radius), (x0, cy + radius)]
            draw.polygon(_rotate(bar, (cx, cy), tilt), fill=colour)
    elif cls == "dots":
        count = rng.randint(5, 9)
        dot = radius * rng.uniform(0.14, 0.2)
        for _ in range(count):
            dx, dy = rng.uniform(-radius, radius), rng.uniform(-radius, radius)
            draw.ellipse((cx + dx - dot, cy + dy - dot, cx + dx + dot, cy + dy + dot), fill=colour)
    return image
