"""Chunked vs packed shards on the same documents: padding, image slots, training throughput, the writer's rate.

    python -m benchmarks.packing [--docs DIR] [--documents 200] [--steps 40] [--tiny]

Writes the same documents twice with `m3w shard` (the in-memory runner, one process): `shards.packing=false`
(one document per sequence, the default) and `shards.packing=true`. `--docs` names a documents folder with
image bytes (e.g. a build's `stages/images/`: the demo's documents); without it, synthetic web-like documents
(short and long pages, 0-5 images each). For each layout it prints:
  - sequences (rows), the windows in them, the padding share of all token positions and the image-slot fill
    (filled slots / N per sequence), from `m3w inspect stats`;
  - the shard writer's rate: windows written per CPU-second of the whole `m3w shard` job (start-up, Parquet,
    BPE training, windows, packing, tars) and its wall time;
  - real (non-pad) tokens per second of a training step of the tiny smoke profile on CPU (its model, batch
    size, one thread, AdamW; forward, backward, step) at the shards' length L (`smoke.data.max_seq_len=null`),
    steps of the two layouts interleaved so that a change in the shared machine's load hits both alike; per
    CPU-second too, which load changes least.
`--tiny`: 10 synthetic documents, 3 steps (a check that the benchmark runs, not a figure).
"""

from __future__ import annotations

if not __package__:  # run as `python benchmarks/packing.py`: the repository root on the path, not this folder
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

from tests.test_shards_helpers import drawn_bytes, make_document, write_documents

LAYOUTS = {"chunked": "shards.packing=false", "packed": "shards.packing=true"}


def web_documents(count: int, seed: int = 0):
    """Pages as the web gives them: most short (a caption, a paragraph), some long; 0-5 images."""
    rng = random.Random(seed)
    return [make_document(index, n_images=rng.choice((0, 1, 1, 2, 3, 5)),
                          words_per_text=rng.choice((6, 10, 20, 40, 90)), seed=seed,
                          image_source=lambda k, i=index: drawn_bytes(i * 31 + k, (400, 300), "JPEG"))
            for index in range(count)]


def write_layouts(docs_dir: str, root: Path, overrides: list[str]) -> dict[str, dict]:
    """`m3w shard` of the documents in each layout: output folder, report, wall and CPU seconds."""
    from pipeline.jobs.stages import run_shard
    from pipeline.settings import load_config

    out = {}
    for layout, switch in LAYOUTS.items():
        config = load_config(overrides=["runner.direct_running_mode=in_memory", *overrides, switch])
        wall, cpu = time.perf_counter(), time.process_time()
        report = run_shard([docs_dir], str(root / layout), config)
        out[layout] = {"dir": str(root / layout), "report": report, "wall": time.perf_counter() - wall,
                       "cpu": time.process_time() - cpu}
    return out


def step_throughput(shard_dirs: dict[str, str], steps: int) -> dict[str, dict[str, float]]:
    """Real tokens per wall and per CPU second of the tiny profile's training step on each layout's sequences
    (every sequence trained on: no held-out split), steps of the layouts interleaved."""
    import torch

    from train_smoke.config import resolve_config, smoke_settings
    from train_smoke.data import ShardSet, TableBatches, load_tables
    from train_smoke.model import FlamingoLM, ModelConfig
    from train_smoke.train import build_optimizer, mean_loss, seed_everything, select_phi

    settings = smoke_settings(resolve_config(None, ["smoke.data.max_seq_len=null"], profile="tiny"))
    seed_everything(settings.seed, settings.deterministic, settings.threads)
    runs = {}
    for layout, source in shard_dirs.items():
        shard_set = ShardSet.open(source)
        table, _, _ = load_tables(shard_set, settings.data.image_size, None, 0.0, 1, None)
        torch.manual_seed(settings.seed)
        model = FlamingoLM(ModelConfig.from_settings(settings.model, settings.data.image_size,
                                                     max(shard_set.vocab_size, int(table.input_ids.max()) + 1)))
        runs[layout] = {"model": model, "optimizer": build_optimizer(model, settings),
                        "batches": TableBatches(table, settings.train.batch_size, settings.seed),
                        "wall": 0.0, "cpu": 0.0, "real": 0, "tokens": 0}
    generator = torch.Generator().manual_seed(settings.seed)
    for step in range(steps + 1):  # step 0 warms up (allocations, first kernels) and is not counted
        for run in runs.values():
            batch = next(run["batches"])
            wall, cpu = time.perf_counter(), time.process_time()
            run["optimizer"].zero_grad(set_to_none=True)
            phi = select_phi(batch, settings.train.phi_next_prob, generator)
            logits = run["model"](batch.input_ids, phi, batch.images, batch.filled, packing=batch.packing)
            mean_loss(logits, batch).backward()
            run["optimizer"].step()
            if step:
                run["wall"] += time.perf_counter() - wall
                run["cpu"] += time.process_time() - cpu
                run["real"] += batch.real_tokens
                run["tokens"] += batch.input_ids.numel()
    return {layout: {"real_per_s": run["real"] / run["wall"], "real_per_cpu_s": run["real"] / run["cpu"],
                     "tokens_per_s": run["tokens"] / run["wall"], "ms_per_step": 1000 * run["wall"] / steps}
            for layout, run in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", help="a documents folder with image bytes (default: synthetic documents)")
    parser.add_argument("--documents", type=int, default=200, help="synthetic documents (without --docs)")
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per layout")
    parser.add_argument("--tiny", action="store_true", help="10 synthetic documents, 3 steps: seconds")
    args = parser.parse_args()
    if args.tiny:
        args.docs, args.documents, args.steps = None, 10, 3

    from pipeline.inspect.stats import compute_stats
    from schemas.shards import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        docs_dir = args.docs
        if docs_dir is None:
            docs_dir = f"{tmp}/docs"
            write_documents(web_documents(args.documents), Path(docs_dir))
        overrides = ["shards.bpe_vocab_size=4096", "shards.docs_parquet_images=none"]
        written = write_layouts(docs_dir, Path(tmp), overrides)
        stats = {layout: compute_stats(w["dir"]) for layout, w in written.items()}
        manifest = read_manifest(written["packed"]["dir"])
        rates = step_throughput({layout: w["dir"] for layout, w in written.items()}, args.steps)

    windows = {layout: w["report"]["stages"]["shard"]["sequences"]["out"] for layout, w in written.items()}
    images = {layout: s["images"] for layout, s in stats.items()}
    config = manifest["config"]
    print(f"command: python -m benchmarks.packing {shlex.join(sys.argv[1:])}")
    print(f"input: {stats['chunked']['documents']} documents ({docs_dir if args.docs else 'synthetic'}); "
          f"L = {manifest['seq_len']}, N = {config['max_images']} images per window, "
          f"{config['packing_max_images']} per packed row; training: tiny smoke profile, CPU, 1 thread, "
          f"{args.steps} steps per layout at L")
    print("| layout | sequences | windows | images | padding | image-slot fill | real tokens/s | "
          "real tokens per CPU-s | ms/step | writer: windows per CPU-s | writer wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for layout, w in written.items():
        s, r = stats[layout], rates[layout]
        print(f"| {layout} | {s['sequences']} | {windows[layout]} | {images[layout]} | {s['padding_share']:.1%} | "
              f"{s['image_slot_fill']:.1%} | {r['real_per_s']:.0f} | {r['real_per_cpu_s']:.0f} | "
              f"{r['ms_per_step']:.0f} | {windows[layout] / w['cpu']:.1f} | {w['wall']:.1f} |")
    speedup = rates["packed"]["real_per_s"] / rates["chunked"]["real_per_s"]
    per_cpu = rates["packed"]["real_per_cpu_s"] / rates["chunked"]["real_per_cpu_s"]
    print(f"real tokens/s packed / chunked: {speedup:.2f}x per wall second, {per_cpu:.2f}x per CPU-second "
          f"(goal: >= 1.8x)")
    same = windows["packed"] == windows["chunked"] and images["packed"] == images["chunked"]
    print(f"every window and image of the chunked layout in the packed one: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
