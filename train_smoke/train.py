"""Training loop of the smoke model: weighted mixing of shard sets, Flamingo's φ/φ_next choice, the LM-first
recipe, bf16 + torch.compile on CUDA, and the figures a user needs to trust the run (losses, gates, tokens/s,
model FLOPs utilisation, share of step time spent waiting on data).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from train_smoke.config import SmokeSettings
from train_smoke.data import Batch
from train_smoke.model import FlamingoLM

# Dense bf16 peak of common accelerators (vendor figures, no sparsity), for the MFU estimate; the H200's is the
# dense bf16 matmul rate measured on the H200 this project is lent (the vendor's 989 is not reached in practice).
KNOWN_PEAK_TFLOPS = {"H200": 790.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                     "V100": 125.0, "T4": 65.0}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from pipeline.config import ConfigError

        raise ConfigError("smoke.device is cuda (--device cuda or --profile gpu) but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool, threads: int = 0) -> None:
    """Same shards + config → same numbers: every RNG seeded, deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def peak_tflops(device: torch.device) -> float | None:
    """Vendor dense bf16 peak of the device, when it is a known GPU (None on CPU or an unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in KNOWN_PEAK_TFLOPS.items() if key in name), None)


# ----------------------------------------------------------------------------------------------------- losses


def select_phi(batch: Batch, phi_next_prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """Flamingo: each sequence attends through φ_next with probability p, else through φ (seeded draw)."""
    if phi_next_prob <= 0.0:
        return batch.phi
    if phi_next_prob >= 1.0:
        return batch.phi_next
    draw = torch.rand(batch.phi.shape[0], generator=generator) < phi_next_prob
    return torch.where(draw.to(batch.phi.device).unsqueeze(1), batch.phi_next, batch.phi)


def token_nll(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL [B, L-1] of token l+1 given the logits at l, and the target mask per the contract."""
    # Classes on the last, contiguous axis: cross-entropy over (B, V, L) reduces along a stride of L and took
    # 3.4x as long, forward and backward, at a build's 6,383-token vocabulary (docs/smoke.md).
    shifted = logits[:, :-1].float()
    nll = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), batch.input_ids[:, 1:].reshape(-1), reduction="none")
    return nll.view(shifted.shape[:2]), batch.targets[:, 1:]


def mean_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    nll, targets = token_nll(logits, batch)
    return (nll * targets).sum() / targets.sum().clamp_min(1)


def shuffle_batch_images(batch: Batch, generator: torch.Generator) -> Batch:
    """The control run's input: the filled images of the batch permuted across its sequences."""
    filled = batch.filled
    count = int(filled.sum())
    if count < 2:
        return batch
    images = batch.images.clone()
    order = torch.randperm(count, generator=generator).to(images.device)
    images[filled] = batch.images[filled][order]
    return Batch(**{**batch.__dict__, "images": images})


# --------------------------------------------------------------------------------------------------- training


@dataclass
class History:
    """What happened during one training run, for the report and the plots."""

    label: str
    steps: list[int] = field(default_factory=list)
    loss: dict[str, list[float]] = field(default_factory=dict)  # per shard set, every step
    gate_steps: list[int] = field(default_factory=list)
    gates_xattn: dict[str, list[float]] = field(default_factory=dict)  # per block, every log step
    gates_dense: dict[str, list[float]] = field(default_factory=dict)
    lm_pretrain_loss: list[float] = field(default_factory=list)
    probe_steps: list[int] = field(default_factory=list)  # held-out probes during training
    probe: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    data_wait_seconds: float = 0.0
    tokens: int = 0  # positions processed (batch × length)
    real_tokens: int = 0
    flops_per_step: float | None = None
    peak_memory_bytes: int | None = None  # CUDA: the allocator's peak during the training steps

    def summary(self, peak: float | None) -> dict[str, Any]:
        steps = max(1, len(self.steps))
        out: dict[str, Any] = {
            "steps": len(self.steps),
            "seconds": round(self.seconds, 3),
            "final_loss": {name: round(float(np.mean(v[-10:])), 4) for name, v in self.loss.items() if v},
            "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else None,
            "real_tokens_per_s": round(self.real_tokens / self.seconds, 1) if self.seconds else None,
            "data_wait_share": round(self.data_wait_seconds / self.seconds, 4) if self.seconds else None,
            "peak_gpu_memory_gib": (None if self.peak_memory_bytes is None
                                    else round(self.peak_memory_bytes / 2**30, 3)),
            "final_gates": {block: {"xattn": round(self.gates_xattn[block][-1], 4),
                                    "dense": round(self.gates_dense[block][-1], 4)} for block in self.gates_xattn},
        }
        if self.flops_per_step:
            achieved = self.flops_per_step * steps / self.seconds if self.seconds else 0.0
            out["model_tflops_per_step"] = round(self.flops_per_step / 1e12, 6)
            out["achieved_tflops"] = round(achieved / 1e12, 4)
            out["mfu"] = round(achieved / (peak * 1e12), 4) if peak else None
            out["peak_tflops"] = peak
        return out


def build_optimizer(model: FlamingoLM, settings: SmokeSettings) -> torch.optim.Optimizer:
    """AdamW with three groups: the tanh gates (own lr, no decay), the vision encoder, the rest."""
    t = settings.train
    gates, vision, decay, no_decay = [], [], [], []
    vision_ids = {id(p) for p in model.vision.parameters()}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(("alpha_xattn", "alpha_dense")):
            gates.append(param)
        elif id(param) in vision_ids:
            vision.append(param)
        elif param.ndim >= 2 and "embed" not in name and "latents" not in name:
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [
        {"params": decay, "lr": t.lr, "weight_decay": t.weight_decay},
        {"params": no_decay, "lr": t.lr, "weight_decay": 0.0},
        {"params": vision, "lr": t.vision_lr or t.lr, "weight_decay": t.weight_decay},
        {"params": gates, "lr": t.gate_lr, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to `floor` × the peak (floor 1.0: constant after warm-up)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast_for(device: torch.device, bf16: bool):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def count_step_flops(model: FlamingoLM, batch: Batch, settings: SmokeSettings) -> float:
    """Model FLOPs of one forward + backward on `batch` (torch's FlopCounterMode, eager), gradients discarded."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(batch.input_ids, batch.phi, batch.images, batch.filled, packing=batch.packing)
        mean_loss(logits, batch).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


class Trainer:
    """Trains one model on weighted shard sets: per step one batch of every set with λ_m > 0, the weighted
    losses' gradients accumulated before a single optimizer step (Flamingo's multi-dataset recipe)."""

    def __init__(self, model: FlamingoLM, settings: SmokeSettings, device: torch.device, label: str,
                 shuffle_images: bool = False, progress: bool = True):
        self.model = model.to(device)
        self.settings = settings
        self.device = device
        self.label = label
        self.shuffle_images = shuffle_images
        self.progress = progress
        self.generator = torch.Generator().manual_seed(settings.seed + (7919 if shuffle_images else 0))
        t = settings.train
        use_compile = t.compile and device.type == "cuda"
        self.forward = torch.compile(model) if use_compile else model
        self.history = History(label=label)

    def _next(self, iterator: Iterator[Batch]) -> tuple[Batch, float]:
        started = time.perf_counter()
        batch = next(iterator).to(self.device, non_blocking=True)
        if self.shuffle_images:
            batch = shuffle_batch_images(batch, self.generator)
        return batch, time.perf_counter() - started

    def pretrain_lm(self, streams: dict[str, Iterator[Batch]], weights: dict[str, float], steps: int) -> None:
        """Flamingo's recipe, first half: the LM alone on the shards' text (no images), then optionally frozen."""
        model, t = self.model, self.settings.train
        params = [p for p in model.lm_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=t.lr, betas=(0.9, 0.98), weight_decay=t.weight_decay)
        total_weight = sum(weights.values())
        bar = _progress(range(steps), f"{self.label}: LM pretraining", self.progress)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = t.lr * lr_factor(step, steps, t.warmup_steps, t.min_lr_ratio)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for name, weight in weights.items():
                batch, _ = self._next(streams[name])
                with autocast_for(self.device, t.bf16):
                    loss = mean_loss(self.forward(batch.input_ids, batch.phi, packing=batch.packing), batch)
                (loss * weight / total_weight).backward()
                total += float(loss.detach()) * weight / total_weight
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            self.history.lm_pretrain_loss.append(total)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total:.3f}", refresh=False)
        if t.freeze_lm:
            for param in model.lm_parameters():
                param.requires_grad_(False)

    def train(self, streams: dict[str, Iterator[Batch]], weights: dict[str, float], steps: int,
              count_flops: bool = False, probe: Callable[[FlamingoLM], dict[str, float]] | None = None,
              probe_every: int = 0, last_steps: dict[str, int] | None = None) -> History:
        """`probe(model)` (held-out figures, run in eval mode without gradients) every `probe_every` steps;
        its time is not counted as training time. A set named in `last_steps` takes part up to that step only
        (the λ of the sets still taking part are normalised at every step)."""
        model, t, history = self.model, self.settings.train, self.history
        active = {name: w for name, w in weights.items() if w > 0}
        last_steps = last_steps or {}
        for name in active:
            history.loss[name] = []
        if t.lm_pretrain_steps > 0:
            self.pretrain_lm(streams, active, t.lm_pretrain_steps)
        optimizer = build_optimizer(model, self.settings)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if count_flops:
            first, _ = self._next(streams[next(iter(active))])
            history.flops_per_step = count_step_flops(model, first, self.settings) * len(active)
        self._record_gates(0)
        probe_seconds = 0.0
        if probe is not None and probe_every > 0:
            probe_seconds += self._probe(probe, 0)
        model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        bar = _progress(range(1, steps + 1), f"{self.label}: training", self.progress)
        pending: list[tuple[str, torch.Tensor]] = []
        started = time.perf_counter()
        for step in bar:
            factor = lr_factor(step - 1, steps, t.warmup_steps, t.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            optimizer.zero_grad(set_to_none=True)
            taking_part = {name: w for name, w in active.items() if step <= last_steps.get(name, steps)}
            total_weight = sum(taking_part.values())
            for name, weight in taking_part.items():
                batch, waited = self._next(streams[name])
                history.data_wait_seconds += waited
                history.tokens += batch.input_ids.numel()
                history.real_tokens += batch.real_tokens
                phi = select_phi(batch, t.phi_next_prob, self.generator)
                with autocast_for(self.device, t.bf16):
                    logits = self.forward(batch.input_ids, phi, batch.images, batch.filled, packing=batch.packing)
                    loss = mean_loss(logits, batch)
                (loss * weight / total_weight).backward()
                pending.append((name, loss.detach()))
            torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            history.steps.append(step)
            if step % t.log_every == 0 or step == steps:
                for name, value in pending:  # one device sync per log interval, not per step
                    history.loss[name].append(float(value))
                pending.clear()
                self._record_gates(step)
                if hasattr(bar, "set_postfix"):
                    shown = {n: f"{v[-1]:.3f}" for n, v in history.loss.items()}
                    gate = max(g[-1] for g in history.gates_xattn.values())
                    bar.set_postfix(**shown, gate=f"{gate:.3f}", refresh=False)
            if probe is not None and probe_every > 0 and (step % probe_every == 0 or step == steps):
                probe_seconds += self._probe(probe, step)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            history.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.device))
        history.seconds = time.perf_counter() - started - probe_seconds
        model.eval()
        return history

    def _probe(self, probe: Callable[[FlamingoLM], dict[str, float]], step: int) -> float:
        started = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            figures = probe(self.model)
        self.model.train()
        self.history.probe_steps.append(step)
        for name, value in figures.items():
            self.history.probe.setdefault(name, []).append(value)
        return time.perf_counter() - started

    def _record_gates(self, step: int) -> None:
        self.history.gate_steps.append(step)
        for block, (xattn, dense) in self.model.gates().items():
            self.history.gates_xattn.setdefault(block, []).append(xattn)
            self.history.gates_dense.setdefault(block, []).append(dense)


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    import sys

    from tqdm.auto import tqdm

    # In a terminal the bar redraws twice a second; in a log file (CI) one line every 30 s is enough.
    interval = 0.5 if sys.stderr.isatty() else 30.0
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, mininterval=interval)
