"""The verdict: does the trained model use its images where the tokens say they are?

Loss going down proves nothing (a model can learn text alone), so the trained model is evaluated on
held-out sequences under ablations that only matter if the data aligns images and text correctly:

- **true** images vs images **shuffled** across documents (the shuffle gap);
- φ shifted by **+1** and **−1**, and the images **permuted** within each sequence: the loss must be lowest
  at the stored alignment. By the contract, a −1 shift only changes the position right before each
  `<image>`, whose target (`<image>`) is never a target, so on well-formed data it *ties* with the true
  alignment; a tie at +1 or a lower loss at −1 betrays a shifted or exclusive φ;
- the gain (shuffled − true loss) by distance from the last image: on aligned data it peaks right after it;
- a **leak** check: logits at positions with φ = 0 must be bit-identical whatever the images;
- |tanh α| of every gate against a **control** run trained on shuffled images.

**Alignment canaries** (pages whose URL `is_canary_url` recognises; each canary image is followed by its
class word) give the strict test: the class word's loss with the true images must be far below chance
(the entropy of the class words) and back at chance with shuffled images. On other data the same figures
are reported, not required.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from pipeline.samplecrawl.canaries import canary_class_of_text
from schemas.shards import SpecialTokens
from train_smoke.config import VerdictConfig
from train_smoke.data import SequenceTable
from train_smoke.model import FlamingoLM
from train_smoke.train import autocast_for, token_nll

CONDITIONS = ("true", "shuffled", "phi_plus_1", "phi_minus_1", "permuted", "text_only")
CANARY_CRITERIA = ("canary_true_loss", "canary_shuffled_loss", "canary_alignment", "canary_gain_peak")
GENERAL_CRITERIA = ("shuffle_gap", "alignment", "gain_peak")


# --------------------------------------------------------------------------------------------------- ablations


def shift_phi(phi: torch.Tensor, mask: torch.Tensor, offset: int) -> torch.Tensor:
    """φ moved by `offset` positions along the sequence (+1: every position sees what its predecessor saw)."""
    out = torch.zeros_like(phi)
    if offset > 0:
        out[:, offset:] = phi[:, :-offset]
    else:
        out[:, :offset] = phi[:, -offset:]
        out[:, offset:] = phi[:, offset:]
        out = torch.where(mask.roll(offset, dims=1) & mask, out, phi)  # the last real token keeps its own
    return out * mask


def shuffled_slots(table: SequenceTable, seed: int) -> torch.Tensor:
    """Every filled slot gets an image of another document (seeded permutation of the image pool)."""
    slots = table.slots.clone()
    filled = slots >= 0
    pool = slots[filled]
    if len(pool) < 2:
        return slots
    owners = torch.arange(len(table)).unsqueeze(1).expand_as(slots)[filled]
    doc_index = {doc: i for i, doc in enumerate(sorted(set(table.doc_ids)))}
    doc_of_row = torch.tensor([doc_index[d] for d in table.doc_ids])
    owner_doc = doc_of_row[owners]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(pool), generator=generator)
    # Repair the few draws that stayed in their own document by swapping with a random other draw.
    for _ in range(3):
        same = (owner_doc[order] == owner_doc).nonzero().flatten()
        if len(same) == 0:
            break
        partners = torch.randint(len(pool), (len(same),), generator=generator)
        for i, j in zip(same.tolist(), partners.tolist()):
            order[i], order[j] = order[j].clone(), order[i].clone()
    slots[filled] = pool[order]
    return slots


def permuted_slots(table: SequenceTable) -> torch.Tensor:
    """Within each sequence, slot j gets the image of slot j+1 (cyclic): every image moves when n ≥ 2."""
    slots = table.slots.clone()
    for row in range(len(table)):
        n = int((slots[row] >= 0).sum())
        if n >= 2:
            slots[row, :n] = slots[row, :n].roll(-1)
    return slots


@dataclass
class ConditionResult:
    nll: torch.Tensor  # [M, L-1] float32: NLL of token l+1 from the logits at l
    correct: torch.Tensor  # [M, L-1] bool: argmax at l == token l+1


@torch.no_grad()
def run_condition(model: FlamingoLM, table: SequenceTable, device: torch.device, batch_size: int, bf16: bool,
                  slots: torch.Tensor | None = None, phi: torch.Tensor | None = None,
                  text_only: bool = False) -> ConditionResult:
    nlls, corrects = [], []
    for start in range(0, len(table), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(table)))
        batch = table.batch(rows, None if slots is None else slots[rows], None if phi is None else phi[rows])
        batch = batch.to(device)
        with autocast_for(device, bf16):
            if text_only:
                logits = model(batch.input_ids, batch.phi)
            else:
                logits = model(batch.input_ids, batch.phi, batch.images, batch.filled)
        nll, _ = token_nll(logits, batch)
        nlls.append(nll.float().cpu())
        corrects.append((logits[:, :-1].argmax(-1) == batch.input_ids[:, 1:]).cpu())
    return ConditionResult(torch.cat(nlls), torch.cat(corrects))


@torch.no_grad()
def leak_check(model: FlamingoLM, table: SequenceTable, device: torch.device, batch_size: int, bf16: bool,
               other_slots: torch.Tensor) -> dict[str, Any]:
    """Max |Δlogit| at φ = 0 positions between true and shuffled images, on the stored φ and on a probe φ
    zeroed before each sequence's second image (so sequences that open with an image are checked too)."""
    out: dict[str, Any] = {}
    probe = torch.where(table.phi <= 1, torch.zeros_like(table.phi), table.phi)
    for label, phi in (("stored_phi", table.phi), ("probe_phi", probe)):
        worst, checked = 0.0, 0
        for start in range(0, len(table), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(table)))
            dark = ((phi[rows] == 0) & table.attention_mask[rows]).to(device)
            if not dark.any():
                continue
            a = table.batch(rows, phi=phi[rows]).to(device)
            b = table.batch(rows, slots=other_slots[rows], phi=phi[rows]).to(device)
            with autocast_for(device, bf16):
                la = model(a.input_ids, a.phi, a.images, a.filled)
                lb = model(b.input_ids, b.phi, b.images, b.filled)
            worst = max(worst, float((la - lb).abs()[dark].max()))
            checked += int(dark.sum())
        out[label] = {"positions": checked, "max_abs_logit_diff": worst}
    return out


# ----------------------------------------------------------------------------------------------------- canaries


@dataclass
class CanaryEvents:
    """Class-word spans of canary sequences: (row, first position, tokens) and the class of each."""

    rows: torch.Tensor
    positions: torch.Tensor  # the <image> position: its logits predict the class word's first token
    lengths: torch.Tensor  # tokens of the class word
    classes: list[str]
    multi_image_row: torch.Tensor  # bool: the sequence has ≥ 2 images (a within-sequence permutation moves them)

    def __len__(self) -> int:
        return len(self.classes)

    def word_nll(self, result: ConditionResult) -> torch.Tensor:
        """Summed NLL of each class word (its information is all in the word; later tokens follow from it)."""
        total = torch.zeros(len(self))
        max_len = int(self.lengths.max()) if len(self) else 0
        for j in range(max_len):
            use = self.lengths > j
            total[use] += result.nll[self.rows[use], self.positions[use] + j]
        return total

    def first_token_correct(self, result: ConditionResult) -> torch.Tensor:
        return result.correct[self.rows, self.positions]

    def chance_nats(self) -> float:
        counts = np.array(list(Counter(self.classes).values()), dtype=np.float64)
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum())


def find_canary_events(table: SequenceTable, tokenizer: Any, special: SpecialTokens, max_word_tokens: int = 8
                       ) -> CanaryEvents:
    """Every `<image>` of a canary sequence followed by text that starts with a canary class word."""
    specials = {special.image, special.eoc, special.eos, special.pad}
    rows, positions, lengths, classes, multi = [], [], [], [], []
    for row in torch.nonzero(table.is_canary).flatten().tolist():
        ids = table.input_ids[row]
        real = int(table.attention_mask[row].sum())
        n_images = int((table.slots[row] >= 0).sum())
        for p in torch.nonzero(ids[:real] == special.image).flatten().tolist():
            following: list[int] = []
            for token in ids[p + 1: min(real, p + 1 + max_word_tokens)].tolist():
                if token in specials:
                    break
                following.append(token)
            if not following:
                continue
            cls = canary_class_of_text(tokenizer.decode(following))
            if cls is None:
                continue
            span = next((k for k in range(1, len(following) + 1)
                         if tokenizer.decode(following[:k]).strip().lower().startswith(cls)), None)
            if span is None or not bool(table.targets[row, p + 1: p + 1 + span].all()):
                continue
            rows.append(row)
            positions.append(p)
            lengths.append(span)
            classes.append(cls)
            multi.append(n_images >= 2)
    return CanaryEvents(torch.tensor(rows, dtype=torch.long), torch.tensor(positions, dtype=torch.long),
                        torch.tensor(lengths, dtype=torch.long), classes, torch.tensor(multi, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------ distances


def image_distance(table: SequenceTable, phi: torch.Tensor, image_token: int) -> torch.Tensor:
    """[M, L-1]: for the target predicted at l, l minus the position of the `<image>` φ[l] names; -1 where φ = 0."""
    m, length = phi.shape
    distance = torch.full((m, length), -1, dtype=torch.long)
    positions = torch.arange(length)
    for row in range(m):
        image_positions = torch.nonzero(table.input_ids[row] == image_token).flatten()
        has = phi[row] > 0
        if has.any() and len(image_positions):
            index = (phi[row][has] - 1).clamp(max=len(image_positions) - 1)
            distance[row, has] = positions[has] - image_positions[index]
    return distance[:, :-1]


def bucket_labels(edges: list[int]) -> list[str]:
    labels = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
        labels.append(str(lo) if hi == lo else f"{lo}-{hi}" if hi is not None else f"{lo}+")
    return labels


def gain_by_distance(true: ConditionResult, shuffled: ConditionResult, distance: torch.Tensor,
                     targets: torch.Tensor, edges: list[int], rows: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Per distance bucket: targets, mean loss with true / shuffled images, and the gain (shuffled − true)."""
    select = targets & (distance >= 0)
    if rows is not None:
        row_mask = torch.zeros(targets.shape[0], dtype=torch.bool)
        row_mask[rows] = True
        select &= row_mask.unsqueeze(1)
    out = []
    for label, lo, hi in zip(bucket_labels(edges), edges, [*edges[1:], None]):
        in_bucket = select & (distance >= lo) & ((distance < hi) if hi is not None else True)
        n = int(in_bucket.sum())
        entry: dict[str, Any] = {"distance": label, "min_distance": lo, "targets": n}
        if n:
            t, s = float(true.nll[in_bucket].mean()), float(shuffled.nll[in_bucket].mean())
            entry.update(loss_true=round(t, 4), loss_shuffled=round(s, 4), gain=round(s - t, 4))
        out.append(entry)
    return out


def peak_bucket(buckets: list[dict[str, Any]], min_targets: int) -> dict[str, Any] | None:
    usable = [b for b in buckets if b["targets"] >= min_targets and "gain" in b]
    return max(usable, key=lambda b: b["gain"]) if usable else None


# ------------------------------------------------------------------------------------------------------ verdict


@dataclass
class Criterion:
    name: str
    required: bool
    evaluated: bool
    passed: bool
    value: Any
    threshold: Any
    explanation: str


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float | None:
    return float(values[mask].mean()) if bool(mask.any()) else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def evaluate(model: FlamingoLM, table: SequenceTable, tokenizer: Any, special: SpecialTokens, cfg: VerdictConfig,
             device: torch.device, seed: int, bf16: bool) -> dict[str, Any]:
    """All ablations on one held-out table → figures (no pass/fail yet)."""
    model.eval()
    bs = cfg.eval_batch_size
    other = shuffled_slots(table, seed)
    perm = permuted_slots(table)
    results = {
        "true": run_condition(model, table, device, bs, bf16),
        "shuffled": run_condition(model, table, device, bs, bf16, slots=other),
        "phi_plus_1": run_condition(model, table, device, bs, bf16, phi=shift_phi(table.phi, table.attention_mask, 1)),
        "phi_minus_1": run_condition(model, table, device, bs, bf16,
                                     phi=shift_phi(table.phi, table.attention_mask, -1)),
        "permuted": run_condition(model, table, device, bs, bf16, slots=perm),
        "text_only": run_condition(model, table, device, bs, bf16, text_only=True),
    }
    targets = table.targets[:, 1:]
    sees_image = targets & (table.phi[:, :-1] > 0)
    multi = ((table.slots >= 0).sum(1) >= 2).unsqueeze(1) & sees_image
    figures: dict[str, Any] = {
        "sequences": len(table),
        "canary_sequences": int(table.is_canary.sum()),
        "targets": int(targets.sum()),
        "targets_seeing_an_image": int(sees_image.sum()),
        "loss": {name: _round(_masked_mean(r.nll, targets)) for name, r in results.items()},
        "loss_where_an_image_is_seen": {name: _round(_masked_mean(r.nll, sees_image)) for name, r in results.items()},
        "loss_multi_image_sequences": {name: _round(_masked_mean(results[name].nll, multi))
                                       for name in ("true", "permuted")},
    }
    loss = figures["loss_where_an_image_is_seen"]
    if loss["true"] is not None:
        figures["shuffle_gap"] = _round(loss["shuffled"] - loss["true"])
    edges = list(cfg.distance_buckets or [0, 1, 2, 4, 8, 16, 32, 64])
    distance = image_distance(table, table.phi, special.image)
    figures["gain_by_distance"] = gain_by_distance(results["true"], results["shuffled"], distance, targets, edges)
    near = targets & (distance >= 0) & (distance <= cfg.near_distance)
    far = targets & (distance >= cfg.far_distance)
    figures["near_vs_far"] = {
        "near_max_distance": cfg.near_distance, "far_min_distance": cfg.far_distance,
        "near_targets": int(near.sum()), "far_targets": int(far.sum()),
        "loss_true_near": _round(_masked_mean(results["true"].nll, near)),
        "loss_true_far": _round(_masked_mean(results["true"].nll, far)),
        "gain_near": _round(_gain(results, near)), "gain_far": _round(_gain(results, far)),
    }
    figures["leak"] = leak_check(model, table, device, bs, bf16, other)

    events = find_canary_events(table, tokenizer, special)
    canary: dict[str, Any] = {"events": len(events)}
    if len(events):
        chance = events.chance_nats()
        word = {name: events.word_nll(r) for name, r in results.items()}
        canary.update(
            classes=dict(sorted(Counter(events.classes).items())),
            chance_nats=round(chance, 4),
            class_word_loss={name: round(float(v.mean()), 4) for name, v in word.items()},
            class_word_accuracy={name: round(float(events.first_token_correct(r).float().mean()), 4)
                                 for name, r in results.items()},
            multi_image_events=int(events.multi_image_row.sum()),
        )
        if events.multi_image_row.any():
            canary["class_word_loss_multi_image"] = {
                name: round(float(word[name][events.multi_image_row].mean()), 4) for name in ("true", "permuted")}
        canary_rows = torch.unique(events.rows)
        canary["gain_by_distance"] = gain_by_distance(results["true"], results["shuffled"], distance, targets,
                                                      edges, rows=canary_rows)
    figures["canary"] = canary
    return figures


def _gain(results: dict[str, ConditionResult], mask: torch.Tensor) -> float | None:
    true, shuffled = _masked_mean(results["true"].nll, mask), _masked_mean(results["shuffled"].nll, mask)
    return None if true is None or shuffled is None else shuffled - true


def _merge_figures(per_set: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The verdict reads one set of figures: the canary figures of the set that has canaries (the largest
    when several do) and, for the general criteria, the set with the most targets seeing an image."""
    canary_sets = [f for f in per_set.values() if f["canary"]["events"]]
    general = max(per_set.values(), key=lambda f: f["targets_seeing_an_image"])
    return {"canary": max(canary_sets, key=lambda f: f["canary"]["events"])["canary"] if canary_sets else None,
            "general": general}


def judge(per_set: dict[str, dict[str, Any]], gates: dict[str, Any] | None, cfg: VerdictConfig) -> dict[str, Any]:
    """Figures → criteria → verdict. Canary criteria are required when canaries are present; without them
    the run is inconclusive unless `require_canaries` is off, in which case the general criteria decide."""
    merged = _merge_figures(per_set)
    canary, general = merged["canary"], merged["general"]
    has_canaries = canary is not None and canary["events"] >= cfg.min_canary_events
    required = set(cfg.required or [])
    if not required:
        required = {"leak", *(CANARY_CRITERIA if has_canaries else ()),
                    *(GENERAL_CRITERIA if not has_canaries and not cfg.require_canaries else ())}
    criteria: list[Criterion] = []

    def add(name: str, evaluated: bool, passed: bool, value: Any, threshold: Any, explanation: str) -> None:
        criteria.append(Criterion(name, name in required, evaluated, bool(passed) if evaluated else False,
                                  value, threshold, explanation))

    worst_leak = max(max(f["leak"][k]["max_abs_logit_diff"] for k in f["leak"]) for f in per_set.values())
    checked = sum(f["leak"][k]["positions"] for f in per_set.values() for k in f["leak"])
    add("leak", checked > 0, worst_leak <= cfg.leak_tolerance, worst_leak, cfg.leak_tolerance,
        f"max |Δlogit| over {checked} positions with φ = 0 when the images change (must be exactly 0)")

    if canary is not None and canary["events"]:
        chance = canary["chance_nats"]
        word = canary["class_word_loss"]
        enough = canary["events"] >= cfg.min_canary_events
        limit = cfg.canary_max_loss_ratio * chance
        add("canary_true_loss", enough, word["true"] <= limit, word["true"], round(limit, 4),
            f"class-word loss with the true images ≤ {cfg.canary_max_loss_ratio} × chance ({chance:.3f} nats, "
            f"{canary['events']} class words)")
        floor = cfg.canary_min_shuffled_ratio * chance
        add("canary_shuffled_loss", enough, word["shuffled"] >= floor, word["shuffled"], round(floor, 4),
            f"with images shuffled across documents the class word is back at chance (≥ "
            f"{cfg.canary_min_shuffled_ratio} × chance): the text alone does not give it away")
        margin = cfg.canary_min_shift_margin * chance
        perm = canary.get("class_word_loss_multi_image", {})
        perm_gap = perm["permuted"] - perm["true"] if perm else None
        gaps = {"phi_plus_1": round(word["phi_plus_1"] - word["true"], 4),
                "phi_minus_1": round(word["phi_minus_1"] - word["true"], 4),
                "permuted": None if perm_gap is None else round(perm_gap, 4)}
        ok = (gaps["phi_plus_1"] >= margin and gaps["phi_minus_1"] >= -cfg.alignment_tolerance * chance
              and (perm_gap is None or perm_gap >= margin))
        add("canary_alignment", enough, ok, gaps, round(margin, 4),
            "class-word loss lowest at the stored alignment: φ+1 and the within-sequence permutation cost at "
            f"least {cfg.canary_min_shift_margin} × chance; φ−1 may tie (the contract makes it equivalent there)")
        peak = peak_bucket(canary["gain_by_distance"], 5)
        add("canary_gain_peak", enough and peak is not None,
            peak is not None and peak["min_distance"] <= cfg.gain_peak_max_distance,
            None if peak is None else peak["distance"], cfg.gain_peak_max_distance,
            "on canary sequences the gain from the true image peaks right after the image")
    else:
        for name in CANARY_CRITERIA:
            add(name, False, False, None, None, "no canary sequences among the held-out data")

    gap = general.get("shuffle_gap")
    add("shuffle_gap", gap is not None, gap is not None and gap > cfg.min_shuffle_gap, gap, cfg.min_shuffle_gap,
        "loss with images shuffled across documents minus loss with the true images (targets that see an image)")
    loss = general["loss_where_an_image_is_seen"]
    multi = general["loss_multi_image_sequences"]
    if loss["true"] is not None:
        tol = cfg.alignment_tolerance
        perm_gap = None if multi["true"] is None else multi["permuted"] - multi["true"]
        gaps = {"phi_plus_1": round(loss["phi_plus_1"] - loss["true"], 4),
                "phi_minus_1": round(loss["phi_minus_1"] - loss["true"], 4),
                "permuted": None if perm_gap is None else round(perm_gap, 4)}
        ok = gaps["phi_plus_1"] > 0 and gaps["phi_minus_1"] >= -tol and (perm_gap is None or perm_gap > 0)
        add("alignment", True, ok, gaps, 0.0, "all-token loss lowest at the stored alignment (φ−1 may tie)")
    else:
        add("alignment", False, False, None, 0.0, "no target sees an image")
    peak = peak_bucket(general["gain_by_distance"], 20)
    add("gain_peak", peak is not None, peak is not None and peak["min_distance"] <= cfg.gain_peak_max_distance,
        None if peak is None else peak["distance"], cfg.gain_peak_max_distance,
        "the gain from the true image peaks right after the image (all held-out data)")

    if gates is not None:
        main, control = gates["main_mean_xattn"], gates["control_mean_xattn"]
        add("gates_vs_control", True, main >= cfg.gate_min_ratio * control, round(main, 4),
            round(cfg.gate_min_ratio * control, 4),
            "mean |tanh α| of the cross-attention gates after training vs the control run on shuffled images")
    else:
        add("gates_vs_control", False, False, None, None, "no control run")

    failed = [c.name for c in criteria if c.required and not (c.evaluated and c.passed)]
    inconclusive = not has_canaries and cfg.require_canaries and not cfg.required
    if inconclusive:
        status = "inconclusive"
        summary = ("no (or too few) alignment canaries in the held-out data: the verdict cannot be strict; "
                   "set smoke.verdict.require_canaries=false to judge on the general criteria")
    elif failed:
        status = "fail"
        summary = "the data does not teach the model to use its images where the tokens say: " + ", ".join(failed)
    else:
        status = "pass"
        summary = "the model uses the images φ names: " + ", ".join(sorted(required))
    return {"status": status, "passed": status == "pass", "summary": summary, "failed": failed,
            "canaries_used": has_canaries,
            "checks": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in criteria}}


def gate_summary(main: dict[str, float], control: dict[str, float] | None) -> dict[str, Any] | None:
    if control is None:
        return None
    return {"main_mean_xattn": float(np.mean(list(main.values()))),
            "control_mean_xattn": float(np.mean(list(control.values()))),
            "main": main, "control": control}


def entropy_nats(counts: list[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c)
