"""A WARC written by a real crawler: real article pages served on 127.0.0.1, crawled by GNU wget.

The article-benchmark pages (../shared/fixtures) are served with every `<img>` pointed at a local picture (a
crop of one of scikit-image's photographs, distinct per tag), every third one also with a `srcset` whose
large variant the server does not have (the crawl then holds only `src`, as crawls usually do); `<base href>`
is removed so the local URLs resolve. `wget --warc-file --page-requisites` fetches the pages and their
pictures, the server stops, and only the WARC remains: a build must take every picture from it.

    python -m tests.wget_crawl OUT_DIR --pages 120    # a larger crawl for measurements
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import io
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "stereo_motorcycle", "immunohistochemistry",
          "retina", "camera", "clock", "coins", "moon", "cell")
_IMG = re.compile(r"<img\b[^>]*>", re.I)
_ALT = re.compile(r"""\balt\s*=\s*("[^"]*"|'[^']*')""", re.I)
_BASE = re.compile(r"<base\b[^>]*>", re.I)


def wget_available() -> bool:
    return shutil.which("wget") is not None


@functools.cache
def _photo(name: str) -> np.ndarray:
    import skimage.data

    picture = getattr(skimage.data, name)()
    if isinstance(picture, tuple):  # stereo pairs
        picture = picture[0]
    if picture.dtype != np.uint8:
        picture = (255 * (picture - picture.min()) / max(1e-9, float(picture.max() - picture.min()))).astype(np.uint8)
    if picture.ndim == 2:
        picture = np.stack([picture] * 3, axis=-1)
    return np.ascontiguousarray(picture[..., :3])


def picture(number: int) -> bytes:
    """A JPEG, distinct for each `number`: a crop (at least 160 px a side, aspect within 1:1.6) of one of the
    photographs at a position and size of its own, mirrored on odd rounds."""
    from PIL import Image

    photo = _photo(PHOTOS[number % len(PHOTOS)])
    rng = np.random.default_rng(number)
    height, width = photo.shape[:2]
    side = int(rng.integers(160, max(161, min(height, width) - 20)))
    crop_w = min(width, int(side * rng.uniform(1.0, 1.6)))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - crop_w + 1))
    crop = photo[top:top + side, left:left + crop_w]
    if (number // len(PHOTOS)) % 2:
        crop = crop[:, ::-1]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop)).save(out, format="JPEG", quality=88)
    return out.getvalue()


def article_pages(count: int) -> list[bytes]:
    pages = sorted((FIXTURES / "article-benchmark" / "html").glob("*.html.gz"))[:count]
    return [gzip.decompress(path.read_bytes()) for path in pages]


def _local_img(tag: str, page: int, number: int, site: Path) -> str:
    """The `<img>` tag pointed at picture `number` (written into `site/img/`), its alt text kept; every third
    one also offers a large srcset variant the server does not have."""
    name = f"img/p{page}-{number}.jpg"
    (site / name).write_bytes(picture(number))
    alt = _ALT.search(tag)
    srcset = f' srcset="/img/p{page}-{number}-large.jpg 1600w"' if number % 3 == 0 else ""
    return f'<img src="/{name}"{srcset} alt={alt.group(1) if alt else chr(34) * 2}>'


def write_site(site: Path, pages: int) -> int:
    """The served folder: `p<N>.html` and `img/`; returns the number of pictures."""
    (site / "img").mkdir(parents=True, exist_ok=True)
    count = 0
    for page, raw in enumerate(article_pages(pages)):
        html = _BASE.sub("", raw.decode("utf-8", "replace"))
        pieces, last = [], 0
        for match in _IMG.finditer(html):
            pieces += [html[last:match.start()], _local_img(match.group(0), page, count, site)]
            last, count = match.end(), count + 1
        (site / f"p{page}.html").write_text("".join([*pieces, html[last:]]), encoding="utf-8")
    return count


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def crawl_with_wget(folder: Path, pages: int) -> Path:
    """Serve `pages` fixture pages on 127.0.0.1, crawl them with wget into `folder/crawl.warc.gz`, stop the
    server and remove the served files; returns the WARC's path."""
    site = folder / "site"
    write_site(site, pages)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        urls = folder / "urls.txt"
        urls.write_text("".join(f"http://127.0.0.1:{port}/p{n}.html\n" for n in range(pages)))
        subprocess.run(["wget", "--quiet", "--warc-file", str(folder / "crawl"), "--page-requisites",
                        "--input-file", str(urls), "-e", "robots=off", "--tries", "1", "--timeout", "10",
                        "--directory-prefix", str(folder / "mirror")],
                       check=False, timeout=600)  # wget exits 8 when some requisite was 404: expected here
    finally:
        server.shutdown()
        server.server_close()
    shutil.rmtree(site)
    shutil.rmtree(folder / "mirror", ignore_errors=True)
    warc = folder / "crawl.warc.gz"
    if not warc.exists():
        raise RuntimeError(f"wget wrote no WARC into {folder}")
    return warc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--pages", type=int, default=120)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    print(crawl_with_wget(args.output, args.pages))


if __name__ == "__main__":
    main()
