"""Runs decontamination's optional open_clip embedding (pipeline/decontaminate/embedding.py) on the real
open_clip, inside the interop virtualenv, importing m3w from this checkout.

    "$(bash tests/interop/make_venv.sh)/bin/python" tests/interop/decontaminate_embedding_check.py WORK SITE

open_clip needs torchvision, and torchvision's PyPI wheels are built against PyPI's CUDA torch: with m3w's CPU
torch 2.13.0 their operators do not load and `import open_clip` fails. The interop venv has torch, torchvision
and open_clip_torch (OpenFlamingo's vision tower is open_clip's), so the embedding is run there; m3w's other
dependencies (pydantic, Apache Beam...) come from m3w's own venv, whose SITE (site-packages) is put after the
interop venv's on the path: torch, torchvision, open_clip, numpy and Pillow are the interop venv's.

1. a tiny open_clip ViT with random weights (seeded) saved as a checkpoint folder as OpenCLIP's Hugging Face
   repositories hold one (`open_clip_config.json` and `open_clip_pytorch_model.bin`), and its architecture
   registered under a name for the weights-file form; both forms embed three benchmark photographs, and an
   exact copy, a resized and re-encoded copy and unrelated photographs are looked up in their `EmbeddingIndex`;
2. the refusals of `check_embedding` (no checkpoint, no architecture, an unknown one, weights that do not fit);
3. `m3w decontaminate` with the embedding set and the hashes made exact (distance 0, no crops), on documents
   holding a copy the hashes miss, a copy they find and unrelated photographs; and the command refusing a
   checkpoint without its architecture;
4. the embedding method of benchmarks/decontaminate.py on the folder.

Everything is written to WORK/result.json (the stage's output to WORK/out); the assertions live in
tests/test_decontaminate_embedding.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

WORK, SITE = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout under test: m3w's own code
sys.path.append(SITE)  # m3w's other dependencies, after the interop venv's own packages

from pipeline.cli import main as m3w  # noqa: E402
from pipeline.decontaminate.embedding import (  # noqa: E402
    EmbeddingIndex,
    EmbeddingSettings,
    PictureEmbedder,
    check_embedding,
)
from pipeline.io.documents import parquet_bytes  # noqa: E402
from pipeline.sampledata.crawl.images import load_photo  # noqa: E402
from schemas.document import Document, Node  # noqa: E402
from schemas.document import Image as DocImage  # noqa: E402

ARCH = "m3w-tiny-ViT"  # 64 px, two layers of width 64: 0.2 M parameters with its text tower
TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 32, "heads": 2, "layers": 1}}
MIN_SIMILARITY = 0.999  # random weights put unrelated photographs close together (up to 0.993 here)
BENCHMARK = ("astronaut", "coffee", "chelsea")
UNRELATED = ("rocket", "clock", "camera", "moon", "coins", "brick", "retina")


def jpeg(picture: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def resized_q70(picture: Image.Image) -> bytes:
    return jpeg(picture.resize((picture.width * 9 // 10, picture.height * 9 // 10), Image.Resampling.LANCZOS), 70)


def make_checkpoint() -> tuple[Path, Path]:
    """(checkpoint folder, its weights file); the architecture is registered as `ARCH` for the file form."""
    torch.manual_seed(0)
    folder = WORK / "tiny-clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    torch.save(open_clip.CLIP(**TINY).state_dict(), folder / "open_clip_pytorch_model.bin")
    (WORK / "arch").mkdir()
    (WORK / "arch" / f"{ARCH}.json").write_text(json.dumps(TINY))
    wider = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "width": 96}}
    (WORK / "arch" / f"{ARCH}-wider.json").write_text(json.dumps(wider))  # the weights do not fit it
    open_clip.add_model_config(WORK / "arch")
    return folder, folder / "open_clip_pytorch_model.bin"


def settings(checkpoint: Path | str | None, arch: str | None) -> EmbeddingSettings:
    return EmbeddingSettings(str(checkpoint) if checkpoint else None, arch, MIN_SIMILARITY, 4, 1)


def lookups(folder: Path, weights: Path) -> dict:
    """Both checkpoint forms embed the benchmark; every query's match (item, similarity) and best similarity."""
    started = time.process_time()
    by_file, by_folder = PictureEmbedder(settings(weights, ARCH)), PictureEmbedder(settings(folder, None))
    load_s = time.process_time() - started
    benchmark = [jpeg(load_photo(name)) for name in BENCHMARK]
    vectors = by_file.embed(benchmark)
    index = EmbeddingIndex(vectors, np.arange(len(benchmark)), MIN_SIMILARITY)
    queries = {f"{name} exact": jpeg(load_photo(name)) for name in BENCHMARK}
    queries |= {f"{name} resized 90% q70": resized_q70(load_photo(name)) for name in BENCHMARK}
    queries |= {f"{name} unrelated": jpeg(load_photo(name)) for name in UNRELATED}
    embedded = by_folder.embed(list(queries.values()))
    return {"load_cpu_s": load_s, "dimensions": list(vectors.shape),
            "unit_length": bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)),
            "forms_agree": float(np.abs(by_folder.embed(benchmark) - vectors).max()),
            "matches": {query: index.match(vector) for query, vector in zip(queries, embedded, strict=True)},
            "best": {query: float((vectors @ vector).max()) for query, vector in zip(queries, embedded, strict=True)}}


def refusals(folder: Path, weights: Path) -> dict[str, str]:
    (WORK / "not-a-checkpoint").mkdir()
    cases = {"missing file": settings(WORK / "missing.bin", ARCH),
             "no architecture": settings(weights, None),
             "unknown architecture": settings(weights, "ViT-Q-99"),
             "weights that do not fit": settings(weights, f"{ARCH}-wider"),
             "folder and architecture": settings(folder, ARCH),
             "folder without config": settings(WORK / "not-a-checkpoint", None)}
    messages = {}
    for case, given in cases.items():
        try:
            check_embedding(given)
            messages[case] = "accepted"
        except (ValueError, FileNotFoundError) as error:
            messages[case] = f"{type(error).__name__}: {error}"
    return messages


def decontaminate(folder: Path, weights: Path) -> dict:
    """`m3w decontaminate` with the embedding on; the command refusing a checkpoint without its architecture."""
    bench, docs = WORK / "bench", WORK / "docs"
    bench.mkdir()
    docs.mkdir()
    for name in BENCHMARK:
        (bench / f"{name}.jpg").write_bytes(jpeg(load_photo(name)))
    pictures = [resized_q70(load_photo("astronaut")), jpeg(load_photo("coffee")), jpeg(load_photo("clock")),
                jpeg(load_photo("retina"))]
    documents = [Document(doc_id=f"{number:020d}", url=f"https://site.test/{number}.html",
                          nodes=[Node(text=f"page {number} about the harbour and its boats"),
                                 Node(image=DocImage(url=f"https://img.test/{number}.jpg", data=data))])
                 for number, data in enumerate(pictures)]
    (docs / "docs.parquet").write_bytes(parquet_bytes(documents, True, "zstd"))
    common = ["--input", str(docs), "--set", "runner.direct_running_mode=in_memory",
              "--set", f"decontaminate.images=['{bench}/*.jpg']"]
    exact_hashes = ["--set", "decontaminate.pictures.max_crop=0", "--set", "decontaminate.pictures.phash_distance=0",
                    "--set", "decontaminate.pictures.dhash_distance=0"]
    embedding = ["--set", f"decontaminate.embedding.checkpoint={folder}",
                 "--set", f"decontaminate.embedding.min_similarity={MIN_SIMILARITY}"]
    code = m3w(["decontaminate", *common, "--output", str(WORK / "out"), *exact_hashes, *embedding])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        refused = m3w(["decontaminate", *common, "--output", str(WORK / "refused"),
                       "--set", f"decontaminate.embedding.checkpoint={weights}"])
    return {"code": code, "refused_code": refused, "refused_stderr": stderr.getvalue().strip(),
            "refused_output_written": (WORK / "refused").exists()}


def benchmark_method(folder: Path) -> dict:
    """benchmarks/decontaminate.py's embedding method on the folder: what it finds, and its note."""
    from benchmarks.decontaminate import embedding_method

    method = embedding_method(str(folder), None, MIN_SIMILARITY, 1000)
    index = method.build([jpeg(load_photo(name)) for name in BENCHMARK])
    found = [method.find(index, data) for data in (resized_q70(load_photo("chelsea")), jpeg(load_photo("clock")))]
    return {"benchmark_found": found, "benchmark_name": method.name, "benchmark_note": method.note()}


def main() -> None:
    folder, weights = make_checkpoint()
    result = {"torch": torch.__version__, "open_clip": open_clip.__version__, **lookups(folder, weights),
              "refusals": refusals(folder, weights), **decontaminate(folder, weights), **benchmark_method(folder)}
    (WORK / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
