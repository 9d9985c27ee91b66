"""`m3w smoke`: a small Flamingo-style VLM trained on shard sets, whose verdict says whether the data teaches
a model to use its images where the tokens say they are.

- `model`: vision encoder (conv / ViT / frozen open_clip tower) → Perceiver Resampler → decoder LM with
  GATED XATTN-DENSE blocks (tanh gates at 0, φ-masked cross-attention, exact zero where φ = 0);
- `data`: shard sets → held-out split by document, in-memory tables or streaming, weighted mixing;
- `train`: the training loop (φ/φ_next draw, λ-weighted gradient accumulation, bf16/compile on CUDA,
  tokens/s, FLOPs, data-wait share);
- `verdict`: ablations on held-out data and the pass/fail criteria (strict on alignment canaries);
- `plots`, `run`: the report; `config`: the `smoke` config section and its profiles;
- `canary_shards`: canary shard sets (correct or broken on purpose) built through the project's shard writer.
"""

import os

# torch's CPU allocator backs each tensor of 2 MB or more with transparent huge pages when this is set (read once,
# at the first such allocation, so before any training). The tiny profile's logits (batch x length x vocab: 52 MB
# at a build's 6,383-token BPE) are allocated and freed every step; in 4 KB pages each one costs ~13,000 page
# faults. Measured on a real build's shards: 1.6x faster steps, identical losses (docs/smoke.md). A value the
# user sets wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
