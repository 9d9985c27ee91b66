"""`m3w export`: documents with downloaded images → the layouts that other trainers already read.

- `mmc4` (`pipeline/export/mmc4.py`): one JSON per document in MMC4's layout, as OpenFlamingo's
  `open_flamingo/train/data.py` (`get_mmc4_dataset`, `preprocess_interleaved`) reads it;
- `pairs` (`pipeline/export/pairs.py`): image-text pairs in img2dataset's / LAION's webdataset layout
  (`jpg`, `txt`, `json`), the text taken from the image's caption, alt text or adjacent sentence under
  configurable rules (`export.pairs` in `pipeline/defaults.yaml`).

Both write webdataset tars named like img2dataset's (`00000.tar`, `00001.tar`, ...) so a brace pattern
names them all, `sizes.json` (samples per shard: open_clip's and OpenFlamingo's `get_dataset_size` read it)
and, last, `manifest.json` (counts, sha256 and the brace pattern). The Beam job is in `job.py`; the
longer notes for each consumer are in docs/export.md.
"""

from __future__ import annotations

from schemas.document import Image


def image_bytes(image: Image) -> bytes | None:
    """The encoded bytes of a downloaded image, or None when it has none.

    Every exporter reads image bytes through this one function, so a change in how documents carry their
    downloaded images is adapted here alone. Documents on disk carry them inline (`image_bytes`): inside a
    build they travel as image-store references (`Image.stored`, pipeline/images/store.py) that the final
    writers resolve, so a document read back with a reference and no bytes counts as `no_bytes`.
    """
    return image.data or None


def picture_info(data: bytes) -> tuple[int, int, str]:
    """(width, height, format) of encoded image bytes, fully decoded so a truncated file fails here
    (raises OSError / ValueError / Image.DecompressionBombError) and never in a consumer's loader."""
    import io

    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(data)) as picture:
        picture.load()
        return picture.width, picture.height, str(picture.format or "").lower()
