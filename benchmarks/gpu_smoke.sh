#!/usr/bin/env bash
# The smoke trainer on one GPU, end to end, on a machine with only torch, numpy, pyarrow, pillow, tokenizers,
# matplotlib, pyyaml, pydantic, tqdm and scipy (no Apache Beam, no webdataset, no rest of the pipeline):
#   1. canary shards for all 8 canary classes (train_smoke.canary_shards, the shard writer's layout),
#   2. `python -m train_smoke --profile gpu` (= `m3w smoke`): main + control run, ablations for φ and φ_next,
#      verdict, smoke_report.json, smoke_timing.json (tokens/s, MFU, data wait, peak GPU memory) and plots/,
#   3. the throughput benchmark (`python -m benchmarks.smoke`): tokens/s, non-padding tokens/s, step time,
#      model FLOPs, MFU against the H200's measured 790 TFLOP/s dense bf16, share of step time waiting on data,
#      peak memory.
# Reports go to OUT: env.txt, log.txt, smoke.txt, benchmark.txt, smoke/ (report, timings, config, plots/);
# the shards to SHARDS_DIR (default OUT/shards).
#
#   benchmarks/gpu_smoke.sh OUT           # on the GPU machine, from the repository root
#   benchmarks/gpu_smoke.sh OUT --tiny    # CPU rehearsal of every step at a tiny size (tiny profile, a few steps)
#
# Sizes can be changed without editing: DOCS (canary documents), STEPS (main and control run), BENCH_STEPS.
# On the lent device machine (at most 8 files come back from $OUT), e.g.:
#   SHARDS_DIR=/tmp/shards benchmarks/gpu_smoke.sh /tmp/gpu; tar czf $OUT/gpu_smoke.tgz -C /tmp gpu
# Exit status: that of the smoke verdict (0 PASS, 1 FAIL/inconclusive, 2 refused shards), or the first failure.
set -euo pipefail
out=${1:?usage: benchmarks/gpu_smoke.sh OUT [--tiny]}
mode=${2:-gpu}
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ $mode == --tiny ]]; then
  profile=tiny device=cpu docs=${DOCS:-160} steps=${STEPS:-20} bench_steps=${BENCH_STEPS:-10} image_size=32
else
  profile=gpu device=cuda docs=${DOCS:-3000} steps=${STEPS:-1500} bench_steps=${BENCH_STEPS:-200} image_size=128
fi
shards=${SHARDS_DIR:-$out/shards}
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
echo "== $(date -u +%FT%TZ) gpu_smoke.sh $out $mode: profile $profile, $docs documents, $steps steps"

"$py" - <<PY | tee "$out/env.txt"
import platform, sys, torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in ("apache_beam", "webdataset"):
    try:
        __import__(name)
        print(name, "installed (not needed)")
    except ImportError:
        print(name, "absent (not needed)")
PY

echo "== canary shards: 8 classes, $docs documents, ${image_size} px slots"
start=$SECONDS
"$py" - <<PY
from pipeline.canaries.shapes import CANARY_CLASSES
from train_smoke.canary_shards import build_canary_shards
build_canary_shards("$shards", n_docs=$docs, classes=CANARY_CLASSES, images_per_doc=(3, 5), seq_len=256,
                    image_size=$image_size, words_after=(1, 3), num_shards=16)
PY
echo "shards built in $((SECONDS - start)) s: $(du -sh "$shards" | cut -f1)"

echo "== smoke verdict (main + control run, $steps steps each)"
start=$SECONDS
set +e
"$py" -m train_smoke "$shards" --output "$out/smoke" --profile "$profile" --device "$device" --quiet \
  --set smoke.train.steps="$steps" | tee "$out/smoke.txt"
verdict=${PIPESTATUS[0]}
set -e
echo "smoke run: $((SECONDS - start)) s, exit $verdict"

echo "== throughput benchmark ($bench_steps steps)"
"$py" -m benchmarks.smoke --profile "$profile" --device "$device" --shards "$shards" --steps "$bench_steps" \
  | tee "$out/benchmark.txt"
echo "== done: $out (verdict exit $verdict)"
exit "$verdict"
