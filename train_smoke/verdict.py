"""The verdict: does the trained model use its images where the tokens say they are?

Loss going down proves nothing (a model can learn text alone), so the trained model is evaluated on
held-out sequences under ablations that only matter if the data aligns images and text correctly:

- **true** images vs images **shuffled** across documents (the shuffle gap);
- φ shifted by **+1** and **−1**, and the images **permuted** within each sequence: the loss must be lowest
  at the stored alignment. By the contract, a −1 shift only changes the position right before each
  `<image>`, whose target (`<image>`) is never a target, so on well-formed data it *ties* with the true
  alignment; a tie at +1 or a lower loss at −1 betrays a shifted or exclusive φ;
- the gain (shuffled − true loss) by distance from the last image: on aligned data it peaks right after it;
- a **leak** check: logits at positions with φ = 0 must be bit-identical whatever the images; on packed shards
  also every logit of a row when another document of the same row changes (its text and its images);
- |tanh α| of every gate against a **control** run trained on shuffled images.

**Alignment canaries** (pages whose URL `is_canary_url` recognises; each canary image is followed by its
class word) give the strict test: the class word's loss with the true images must be far below chance
(the entropy of the class words) and back at chance with shuffled images. On other data the same figures
are reported, not required. An `m3w build` carries its canaries in shard files of their own (a set of their own
here): they decide, and the general criteria on the build's own data are reported as evidence about it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from pipeline.canaries.shapes import canary_class_of_text
from schemas.shards import SpecialTokens
from train_smoke.config import VerdictConfig
from train_smoke.data import Batch, SequenceTable
from train_smoke.model import FlamingoLM
from train_smoke.train import autocast_for, token_nll

MODES = ("phi", "phi_next")  # Flamingo trains on both; the verdict judges both
# The shift that makes a position see a neighbouring image where the class word is predicted (the `<image>`
# position): φ + 1 names the previous image there, φ_next − 1 the following one. The opposite shifts only move
# positions whose targets never see a different image on well-formed data (φ − 1) or are reported only.
MISALIGNED = {"phi": ("phi_plus_1", 1), "phi_next": ("phi_next_minus_1", -1)}
TIED = {"phi": ("phi_minus_1", -1), "phi_next": ("phi_next_plus_1", 1)}
ABLATION_ROLE = {"phi_plus_1": "misaligned", "phi_next_minus_1": "misaligned", "phi_minus_1": "tied"}
CANARY_CRITERIA = ("canary_wrong_events", "canary_true_loss", "canary_shuffle_gap", "canary_misaligned",
                   "canary_permuted")


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
                logits = model(batch.input_ids, batch.phi, packing=batch.packing)
            else:
                logits = model(batch.input_ids, batch.phi, batch.images, batch.filled, packing=batch.packing)
        nll, _ = token_nll(logits, batch)
        nlls.append(nll.float().cpu())
        corrects.append((logits[:, :-1].argmax(-1) == batch.input_ids[:, 1:]).cpu())
    return ConditionResult(torch.cat(nlls), torch.cat(corrects))


def _forward(model: FlamingoLM, batch: Batch, device: torch.device, bf16: bool, seed: int) -> torch.Tensor:
    """Logits with the random state fixed, so two forwards in train mode draw the same dropout masks."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with autocast_for(device, bf16):
            return model(batch.input_ids, batch.phi, batch.images, batch.filled, packing=batch.packing)


@torch.no_grad()
def leak_check(model: FlamingoLM, table: SequenceTable, device: torch.device, batch_size: int, bf16: bool,
               other_slots: torch.Tensor, seed: int) -> dict[str, Any]:
    """Max |Δlogit| where nothing may change, in eval and in train mode (normalisation and dropout behave
    differently there), for φ and for φ_next:

    - `dark`: positions with φ = 0 when every image changes (true vs shuffled); also with a probe φ zeroed
      before each sequence's second image, so sequences that open with an image are checked too. Only for φ:
      its dark positions are a prefix, whereas φ_next is 0 after the last image, where causal self-attention
      rightly carries what earlier positions saw;
    - `cross_sequence`: every position of the even rows of a batch when only the odd rows' images change
      (a sequence must not see another sequence's images, e.g. through batch statistics), for φ and φ_next.
    """
    out: dict[str, Any] = {}
    was_training = model.training
    try:
        for mode in ("eval", "train"):
            model.train(mode == "train")
            for cond in MODES:
                stored = getattr(table, cond)
                checks = [(f"{mode}/{cond}/cross_sequence", stored)]
                if cond == "phi":
                    probe = torch.where(stored <= 1, torch.zeros_like(stored), stored)
                    checks += [(f"{mode}/{cond}/dark", stored), (f"{mode}/{cond}/dark_probe", probe)]
                for label, phi in checks:
                    worst, checked = 0.0, 0
                    for start in range(0, len(table), batch_size):
                        rows = torch.arange(start, min(start + batch_size, len(table)))
                        if label.endswith("cross_sequence"):
                            odd = (torch.arange(len(rows)) % 2 == 1).unsqueeze(1)
                            slots = torch.where(odd, other_slots[rows], table.slots[rows])
                            watch = table.attention_mask[rows] & ~odd
                        else:
                            slots = other_slots[rows]
                            watch = (phi[rows] == 0) & table.attention_mask[rows]
                        if not watch.any():
                            continue
                        a = table.batch(rows, phi=phi[rows]).to(device)
                        b = table.batch(rows, slots=slots, phi=phi[rows]).to(device)
                        diff = (_forward(model, a, device, bf16, seed) - _forward(model, b, device, bf16, seed)).abs()
                        worst = max(worst, float(diff[watch.to(device)].max()))
                        checked += int(watch.sum())
                    out[label] = {"positions": checked, "max_abs_logit_diff": worst}
    finally:
        model.train(was_training)
    return out


def other_text_tokens(table: SequenceTable, special: SpecialTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """(is_text [M, L], replaced [M, L]): which positions hold text, and the ids with every text token swapped for
    another text token of the table (a cyclic shift over the text ids present; specials stay)."""
    ids = table.input_ids
    specials = torch.tensor([special.image, special.eoc, special.eos, special.pad])
    is_text = table.attention_mask & ~torch.isin(ids, specials)
    present = torch.unique(ids[is_text])
    lookup = torch.arange(int(ids.max()) + 1)
    if len(present) >= 2:
        lookup[present] = present.roll(-1)
    return is_text, torch.where(is_text, lookup[ids], ids)


@torch.no_grad()
def cross_document_check(model: FlamingoLM, table: SequenceTable, device: torch.device, batch_size: int, bf16: bool,
                         other_slots: torch.Tensor, seed: int, special: SpecialTokens) -> dict[str, Any]:
    """Packed rows: max |Δlogit| at every token of the other documents of a row when one document changes (its text
    tokens and its images), in eval and train mode, for φ and φ_next. The first document is changed with the
    later ones watched (what causal attention would carry), then the last with the earlier ones watched (what any
    other path would). Exactly zero when attention never crosses a document boundary."""
    if table.doc_index is None:
        return {}
    documents = table.doc_index.max(dim=1).values
    rows = torch.nonzero(documents >= 2).flatten()
    is_text, replaced = other_text_tokens(table, special)
    out: dict[str, Any] = {}
    was_training = model.training
    try:
        for mode in ("eval", "train"):
            model.train(mode == "train")
            for cond in MODES:
                worst, checked = 0.0, 0
                for changed_doc in (torch.ones_like(documents), documents):
                    for start in range(0, len(rows), batch_size):
                        batch_rows = rows[start: start + batch_size]
                        phi = getattr(table, cond)[batch_rows]
                        target = changed_doc[batch_rows].unsqueeze(1)
                        changed = table.doc_index[batch_rows] == target
                        slots = torch.where(table.slot_doc[batch_rows] == target, other_slots[batch_rows],
                                            table.slots[batch_rows])
                        a = table.batch(batch_rows, phi=phi)
                        b = table.batch(batch_rows, slots=slots, phi=phi)
                        b.input_ids = torch.where(changed & is_text[batch_rows], replaced[batch_rows], b.input_ids)
                        watch = table.attention_mask[batch_rows] & ~changed
                        diff = (_forward(model, a.to(device), device, bf16, seed)
                                - _forward(model, b.to(device), device, bf16, seed)).abs()
                        worst = max(worst, float(diff[watch.to(device)].max()))
                        checked += int(watch.sum())
                out[f"{mode}/{cond}/cross_document"] = {"positions": checked, "max_abs_logit_diff": worst}
    finally:
        model.train(was_training)
    return out


# ----------------------------------------------------------------------------------------------------- canaries


@dataclass
class CanaryEvents:
    """Class-word spans of canary sequences: (row, first position, tokens) and the class of each."""

    rows: torch.Tensor
    positions: torch.Tensor  # the <image> position: its logits predict the class word's first token
    lengths: torch.Tensor  # tokens of the class word up to the first that tells it from the other classes
    classes: list[str]
    multi_image_row: torch.Tensor  # bool: the sequence has ≥ 2 images (a within-sequence permutation moves them)

    def __len__(self) -> int:
        return len(self.classes)

    def word_nll(self, result: ConditionResult) -> torch.Tensor:
        """Summed NLL of each class word's tokens up to the one that names its class (the picture's information is
        all there: later tokens follow from the text, so a perfect model pays −log p(class), chance its entropy)."""
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
    """Every `<image>` of a canary sequence followed by text that starts with a canary class word.

    A class word is judged on its tokens up to the first one that tells it from the other classes of the events
    (`naming_span`): a tokenizer trained on a build's own text, which holds no canary, cuts "Stripes" into
    "St", "ri", "pes", and only "St" carries what the picture says."""
    specials = {special.image, special.eoc, special.eos, special.pad}
    found: list[tuple[int, int, list[int], str, bool]] = []
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
            if cls is not None:
                found.append((row, p, following, cls, n_images >= 2))
    among = sorted({cls for *_, cls, _ in found})
    rows, positions, lengths, classes, multi = [], [], [], [], []
    for row, p, following, cls, multi_image in found:
        span = naming_span(tokenizer, following, cls, among)
        if span is None or not bool(table.targets[row, p + 1: p + 1 + span].all()):
            continue
        rows.append(row)
        positions.append(p)
        lengths.append(span)
        classes.append(cls)
        multi.append(multi_image)
    return CanaryEvents(torch.tensor(rows, dtype=torch.long), torch.tensor(positions, dtype=torch.long),
                        torch.tensor(lengths, dtype=torch.long), classes, torch.tensor(multi, dtype=torch.bool))


def naming_span(tokenizer: Any, tokens: list[int], cls: str, among: list[str]) -> int | None:
    """How many of `tokens` (the text after a canary picture, whose class word is `cls`) it takes to tell `cls`
    from every other class of `among`: the shortest prefix whose text no other class word begins with."""
    others = [other for other in among if other != cls]
    for k in range(1, len(tokens) + 1):
        prefix = tokenizer.decode(tokens[:k]).strip().lower()
        if prefix and cls.startswith(prefix[:len(cls)]) and not any(other.startswith(prefix) for other in others):
            return k
    return None


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


# ------------------------------------------------------------------------------------------------- statistics


def bootstrap_bounds(values: np.ndarray, confidence: float, samples: int, seed: int) -> dict[str, Any]:
    """Mean of per-document values and its one-sided bounds at `confidence` (percentile bootstrap over
    documents: the documents are the independent units, their positions are not)."""
    n = len(values)
    if n == 0:
        return {"documents": 0, "mean": None, "lower": None, "upper": None}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    return {"documents": n, "mean": round(float(values.mean()), 4),
            "lower": round(float(np.quantile(means, 1.0 - confidence)), 4),
            "upper": round(float(np.quantile(means, confidence)), 4)}


def binomial_bounds(wrong: int, total: int, confidence: float) -> dict[str, Any]:
    """Share of wrong events and its exact (Clopper-Pearson) one-sided bounds at `confidence`."""
    from scipy.stats import beta

    lower = 0.0 if wrong == 0 else float(beta.ppf(1.0 - confidence, wrong, total - wrong + 1))
    upper = 1.0 if wrong == total else float(beta.ppf(confidence, wrong + 1, total - wrong))
    return {"events": total, "wrong": wrong, "share": round(wrong / total, 4), "lower": round(lower, 4),
            "upper": round(upper, 4)}


def per_document(values: torch.Tensor, weights: torch.Tensor, doc_of_row: torch.Tensor, rows: torch.Tensor | None = None
                 ) -> np.ndarray:
    """Per-document mean of `values` ([M, L-1] with a 0/1 `weights` mask, or per event with their `rows`);
    documents without a weighted value are left out."""
    if rows is None:
        sums = (values * weights).sum(1).double()
        counts = weights.sum(1).double()
        docs = doc_of_row
    else:
        sums, counts, docs = values.double(), weights.double(), doc_of_row[rows]
    n_docs = int(doc_of_row.max()) + 1 if len(doc_of_row) else 0
    doc_sums = torch.zeros(n_docs, dtype=torch.float64).index_add_(0, docs, sums)
    doc_counts = torch.zeros(n_docs, dtype=torch.float64).index_add_(0, docs, counts)
    have = doc_counts > 0
    return (doc_sums[have] / doc_counts[have]).numpy()


def decide_at_least(bounds: dict[str, Any], margin: float, min_units: int, units: str = "documents") -> str:
    """pass: the lower bound clears the margin; fail: the upper bound is below it; else inconclusive."""
    if bounds.get(units, 0) < min_units or bounds["lower"] is None:
        return "inconclusive"
    if bounds["lower"] > margin:
        return "pass"
    return "fail" if bounds["upper"] < margin else "inconclusive"


def decide_at_most(bounds: dict[str, Any], limit: float, min_units: int, units: str = "documents") -> str:
    """pass: the upper bound is within the limit; fail: the lower bound exceeds it; else inconclusive."""
    if bounds.get(units, 0) < min_units or bounds["lower"] is None:
        return "inconclusive"
    if bounds["upper"] <= limit:
        return "pass"
    return "fail" if bounds["lower"] > limit else "inconclusive"


def decide_wrong_share(wrong: dict[str, Any], cfg: VerdictConfig) -> str:
    """Canary events: fail when more than the allowed share is wrong beyond noise (the lower bound exceeds it),
    inconclusive when the observed share exceeds it but the bound does not, else pass. A correct build still
    has a few confusable pictures (about 1% at the tiny profile), so the pass side cannot ask the upper bound
    to fit under 2% without thousands of held-out events."""
    if wrong["events"] < cfg.min_canary_events:
        return "inconclusive"
    if wrong["lower"] > cfg.canary_max_wrong_share:
        return "fail"
    return "inconclusive" if wrong["share"] > cfg.canary_max_wrong_share else "pass"


# ----------------------------------------------------------------------------------------------------- evaluate


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float | None:
    return float(values[mask].mean()) if bool(mask.any()) else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def seen_image(table: SequenceTable, cond: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """[M, L-1]: the pool index of the image the logits at l look at (−1: none), for a conditioning and slots."""
    index = (cond - 1).clamp(min=0)
    seen = torch.gather(slots, 1, index.clamp(max=slots.shape[1] - 1))
    return torch.where(cond > 0, seen, torch.full_like(seen, -1))[:, :-1]


def evaluate(model: FlamingoLM, table: SequenceTable, tokenizer: Any, special: SpecialTokens, cfg: VerdictConfig,
             device: torch.device, seed: int, bf16: bool) -> dict[str, Any]:
    """All ablations on one held-out table, for φ and for φ_next → figures with their confidence bounds
    (no pass/fail yet)."""
    model.eval()
    bs = cfg.eval_batch_size
    other = shuffled_slots(table, seed)
    perm = permuted_slots(table)
    targets = table.targets[:, 1:]
    doc_index = {doc: i for i, doc in enumerate(sorted(set(table.doc_ids)))}
    doc_of_row = torch.tensor([doc_index[d] for d in table.doc_ids], dtype=torch.long)
    text_only = run_condition(model, table, device, bs, bf16, text_only=True)
    events = find_canary_events(table, tokenizer, special)
    edges = list(cfg.distance_buckets or [0, 1, 2, 4, 8, 16, 32, 64])
    figures: dict[str, Any] = {
        "sequences": len(table),
        "documents": len(doc_index),
        "canary_sequences": int(table.is_canary.sum()),
        "targets": int(targets.sum()),
        "targets_seeing_an_image": int((targets & (table.phi[:, :-1] > 0)).sum()),
        "loss_text_only": _round(_masked_mean(text_only.nll, targets)),
        "canary_events": len(events),
        "modes": {},
    }
    for mode in MODES:
        figures["modes"][mode] = _evaluate_mode(model, table, mode, other, perm, text_only, events, doc_of_row,
                                                cfg, device, seed, bf16, special, edges)
    rows = list(range(min(len(table), cfg.leak_sequences)))  # exact zeros are expected: a sample suffices
    figures["leak"] = leak_check(model, table.subset(rows), device, bs, bf16, other[rows], seed)
    if table.packed is not None:  # held-out documents packed again into rows: nothing may cross a document
        packed = table.packed.subset(list(range(min(len(table.packed), cfg.leak_sequences))))
        packed_other = shuffled_slots(packed, seed)
        checks = {**leak_check(model, packed, device, bs, bf16, packed_other, seed),
                  **cross_document_check(model, packed, device, bs, bf16, packed_other, seed, special)}
        figures["leak"].update({f"packed/{name}": value for name, value in checks.items()})
    return figures


def _evaluate_mode(model: FlamingoLM, table: SequenceTable, mode: str, other: torch.Tensor, perm: torch.Tensor,
                   text_only: ConditionResult, events: CanaryEvents, doc_of_row: torch.Tensor, cfg: VerdictConfig,
                   device: torch.device, seed: int, bf16: bool, special: SpecialTokens, edges: list[int]
                   ) -> dict[str, Any]:
    bs = cfg.eval_batch_size
    cond = getattr(table, mode)
    mask = table.attention_mask
    misaligned, misaligned_offset = MISALIGNED[mode]
    tied, tied_offset = TIED[mode]
    variants = {  # condition → (conditioning, slots)
        "true": (cond, table.slots),
        "shuffled": (cond, other),
        misaligned: (shift_phi(cond, mask, misaligned_offset), table.slots),
        tied: (shift_phi(cond, mask, tied_offset), table.slots),
        "permuted": (cond, perm),
    }
    results = {name: run_condition(model, table, device, bs, bf16, slots=slots, phi=phi)
               for name, (phi, slots) in variants.items()}
    results["text_only"] = text_only
    targets = table.targets[:, 1:]
    sees_image = targets & (cond[:, :-1] > 0)
    true_seen = seen_image(table, cond, table.slots)
    out: dict[str, Any] = {
        "misaligned": misaligned,
        "tied": tied,
        "loss_where_an_image_is_seen": {name: _round(_masked_mean(r.nll, sees_image)) for name, r in results.items()},
        "paired": {},
    }
    # Paired per-document comparisons on the targets each ablation changes (the image their logits see). The
    # tied shift (φ − 1) changes no target on well-formed data; where it does, it must not lower the loss.
    for name in ("shuffled", misaligned, "permuted", *((tied,) if mode == "phi" else ())):
        phi, slots = variants[name]
        affected = targets & (seen_image(table, phi, slots) != true_seen)
        gap = results[name].nll - results["true"].nll
        bounds = bootstrap_bounds(per_document(gap, affected.float(), doc_of_row), cfg.confidence,
                                  cfg.bootstrap_samples, seed)
        bounds["targets"] = int(affected.sum())
        bounds["text_only_loss"] = _round(_masked_mean(text_only.nll, affected))
        out["paired"][ABLATION_ROLE.get(name, name)] = bounds
    if mode == "phi":
        distance = image_distance(table, cond, special.image)
        out["gain_by_distance"] = gain_by_distance(results["true"], results["shuffled"], distance, targets, edges)
        near = targets & (distance >= 0) & (distance <= cfg.near_distance)
        far = targets & (distance >= cfg.far_distance)
        out["near_vs_far"] = {
            "near_max_distance": cfg.near_distance, "far_min_distance": cfg.far_distance,
            "near_targets": int(near.sum()), "far_targets": int(far.sum()),
            "loss_true_near": _round(_masked_mean(results["true"].nll, near)),
            "loss_true_far": _round(_masked_mean(results["true"].nll, far)),
            "gain_near": _round(_gain(results, near)), "gain_far": _round(_gain(results, far)),
        }
    out["canary"] = _canary_figures(events, results, mode, doc_of_row, cfg, seed, misaligned,
                                    distance if mode == "phi" else None, targets, edges)
    return out


def _canary_figures(events: CanaryEvents, results: dict[str, ConditionResult], mode: str, doc_of_row: torch.Tensor,
                    cfg: VerdictConfig, seed: int, misaligned: str, distance: torch.Tensor | None,
                    targets: torch.Tensor, edges: list[int]) -> dict[str, Any]:
    """Each canary event (a picture → its class word) judged on its own, and paired per-document gaps."""
    canary: dict[str, Any] = {"events": len(events)}
    if not len(events):
        return canary
    chance = events.chance_nats()
    word = {name: events.word_nll(r) for name, r in results.items()}
    wrong = word["true"] >= cfg.canary_wrong_ratio * chance
    ones = torch.ones(len(events))
    canary.update(
        classes=dict(sorted(Counter(events.classes).items())),
        chance_nats=round(chance, 4),
        class_word_loss={name: round(float(v.mean()), 4) for name, v in word.items()},
        class_word_accuracy={name: round(float(events.first_token_correct(r).float().mean()), 4)
                             for name, r in results.items()},
        multi_image_events=int(events.multi_image_row.sum()),
        wrong_events=binomial_bounds(int(wrong.sum()), len(events), cfg.confidence),
        wrong_event_examples=[
            {"row": int(events.rows[i]), "class": events.classes[i], "loss": round(float(word["true"][i]), 3)}
            for i in torch.nonzero(wrong).flatten()[:10].tolist()],
        true_loss=bootstrap_bounds(per_document(word["true"], ones, doc_of_row, events.rows), cfg.confidence,
                                   cfg.bootstrap_samples, seed),
        paired={},
    )
    for name in ("shuffled", misaligned, "permuted"):
        use = events.multi_image_row if name == "permuted" else torch.ones(len(events), dtype=torch.bool)
        gap = word[name] - word["true"]
        canary["paired"][ABLATION_ROLE.get(name, name)] = bootstrap_bounds(
            per_document(gap[use], ones[use], doc_of_row, events.rows[use]), cfg.confidence, cfg.bootstrap_samples,
            seed)
    if distance is not None:
        canary["gain_by_distance"] = gain_by_distance(results["true"], results["shuffled"], distance, targets, edges,
                                                      rows=torch.unique(events.rows))
    return canary


def _gain(results: dict[str, ConditionResult], mask: torch.Tensor) -> float | None:
    true, shuffled = _masked_mean(results["true"].nll, mask), _masked_mean(results["shuffled"].nll, mask)
    return None if true is None or shuffled is None else shuffled - true


# ------------------------------------------------------------------------------------------------------ verdict


@dataclass
class Criterion:
    name: str
    level: str  # "required": must pass | "consulted": must not fail | "reported"
    status: str  # pass | fail | inconclusive | not_applicable
    value: Any
    threshold: Any
    explanation: str
    bounds: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "name"}
        out.update(required=self.level == "required", evaluated=self.status != "not_applicable", passed=self.passed)
        return out


def _merge_figures(per_set: dict[str, dict[str, Any]], riding: Collection[str] = ()) -> dict[str, Any]:
    """The verdict reads one set of figures: the set with the most canary events for the canary criteria (if
    any has them) and, for the general criteria, the set with the most targets seeing an image: among the
    user's own sets when the canaries ride in sets of their own (`riding`, `m3w build`'s `canaries/`)."""
    canary_sets = [f for f in per_set.values() if f["canary_events"]]
    own = [f for name, f in per_set.items() if name not in riding]
    general = max(own or list(per_set.values()), key=lambda f: f["targets_seeing_an_image"])
    return {"canary": max(canary_sets, key=lambda f: f["canary_events"]) if canary_sets else None,
            "general": general, "general_is_own_data": bool(riding) and bool(own)}


def why_too_few_canaries(notes: list[dict[str, Any] | None], events: int, cfg: VerdictConfig) -> str:
    """Why the held-out data has fewer than `min_canary_events` canary events, from what the shard sets'
    manifests say about the canaries their build carried (`canaries`: pipeline/report/canaries.py)."""
    known = [note for note in notes if note is not None]
    if not known:
        return ("these shards carry no alignment canaries (`m3w build` adds them to every build; `m3w shard` writes "
                "only the documents it is given)")
    pages = sum(note.get("pages") or 0 for note in known)
    if not pages and not any(note.get("shards") for note in known):
        return "their build turned the alignment canaries off (canaries.pages: 0, `m3w build --canaries 0`)"
    lost = "; ".join(loss["text"] for note in known for loss in note.get("lost", [])[:3])
    samples = sum(note.get("samples") or 0 for note in known)
    if not samples:
        return f"none of their build's {pages} canary pages reached the shards: {lost or 'no stage counted a drop'}"
    more = lost or "more canary pages (`m3w build --canaries N`) or a larger smoke.data.eval_fraction give more"
    return (f"{events} held-out canary events from {samples} canary sequences, fewer than "
            f"smoke.verdict.min_canary_events ({cfg.min_canary_events}): {more}")


def judge(per_set: dict[str, dict[str, Any]], gates: dict[str, Any] | None, cfg: VerdictConfig,
          undecodable: dict[str, Any] | None = None, riding: Collection[str] = (),
          canary_notes: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Figures → criteria → verdict.

    With canaries every canary criterion of both modes must pass and the general criteria must not fail;
    without them the run is inconclusive unless `require_canaries` is off, and then the general criteria must
    pass. A criterion passes only when its confidence bound clears the margin, fails when the bound lies on the
    wrong side of it, and is inconclusive when the bound straddles it; an inconclusive required criterion makes
    the whole verdict inconclusive, never a pass.

    `riding`: the sets that hold the canaries a build carried beside its data. Their canary criteria decide, and
    the general criteria, measured on the build's own data, are reported as evidence about it (a real crawl's
    pictures may say little about its text: that is no fault of the pipeline). `canary_notes`: what the sets'
    manifests say about their canaries, to name why a verdict has too few of them.

    `undecodable` (samples skipped because they could not be decoded: `samples` of `of`, `share`, `limit`,
    `first`) is reported beside the criteria and in the summary; shards above the limit never reach a verdict.
    """
    merged = _merge_figures(per_set, riding)
    canary_set, general = merged["canary"], merged["general"]
    events = 0 if canary_set is None else canary_set["canary_events"]
    has_canaries = events >= cfg.min_canary_events
    explicit = set(cfg.required or [])
    criteria: list[Criterion] = []

    def level(name: str, family: str) -> str:
        if explicit:
            return "required" if name in explicit or name.split("[")[0] in explicit else "reported"
        if family == "leak":
            return "required"
        if family == "canary":
            return "required" if has_canaries else "reported"
        if family == "general":
            if has_canaries:
                return "reported" if merged["general_is_own_data"] else "consulted"
            return "reported" if cfg.require_canaries else "required"
        return "reported"

    def add(name: str, family: str, status: str, value: Any, threshold: Any, explanation: str,
            bounds: dict[str, Any] | None = None) -> None:
        criteria.append(Criterion(name, level(name, family), status, value, threshold, explanation, bounds))

    leaks = {f"{name}:{k}": v for name, f in per_set.items() for k, v in f["leak"].items()}
    worst = max(v["max_abs_logit_diff"] for v in leaks.values())
    checked = sum(v["positions"] for v in leaks.values())
    add("leak", "leak", "not_applicable" if not checked else "pass" if worst <= cfg.leak_tolerance else "fail",
        worst, cfg.leak_tolerance,
        f"max |Δlogit| over {checked} positions that may not change: φ = 0 when the images change, another "
        "sequence's images in the batch, and (packed rows) another document of the same row; eval and train mode, "
        "φ and φ_next (must be exactly 0)")

    for mode in MODES:
        _canary_criteria(add, None if canary_set is None else canary_set["modes"][mode]["canary"], mode, cfg)
        _general_criteria(add, general["modes"][mode], mode, cfg)

    if gates is not None:
        main, control = gates["main_mean_xattn"], gates["control_mean_xattn"]
        add("gates_vs_control", "reported", "pass" if main >= cfg.gate_min_ratio * control else "fail",
            round(main, 4), round(cfg.gate_min_ratio * control, 4),
            "mean |tanh α| of the cross-attention gates after training vs the control run on shuffled images")
    else:
        add("gates_vs_control", "reported", "not_applicable", None, None, "no control run")
    if undecodable is not None:
        first = f"; first: {undecodable['first']}" if undecodable["first"] else ""
        add("undecodable_samples", "reported", "pass" if undecodable["share"] <= undecodable["limit"] else "fail",
            undecodable["share"], undecodable["limit"],
            f"{undecodable['samples']} of {undecodable['of']} samples decoded could not be and were skipped{first}")

    blocking = [c for c in criteria if c.level in ("required", "consulted")]
    failed = [c.name for c in blocking if c.status == "fail"]
    unsure = [c.name for c in criteria if c.level == "required" and c.status == "inconclusive"]
    if failed:
        status = "fail"
        summary = "the data does not teach the model to use its images where the tokens say: " + ", ".join(failed)
    elif not has_canaries and cfg.require_canaries and not explicit:
        status = "inconclusive"
        why = why_too_few_canaries(canary_notes or [], events, cfg)
        summary = (f"no (or too few) alignment canaries in the held-out data: {why}; the verdict cannot be strict; "
                   "set smoke.verdict.require_canaries=false to judge on the general criteria")
    elif unsure:
        status = "inconclusive"
        summary = ("the confidence bounds straddle the margins (more held-out data or steps needed): "
                   + ", ".join(unsure))
    else:
        status = "pass"
        summary = "the model uses the images φ and φ_next name: " + ", ".join(
            sorted(c.name for c in criteria if c.level == "required"))
    if undecodable is not None:
        summary += (f" ({undecodable['samples']} of {undecodable['of']} samples undecodable and skipped, "
                    f"{undecodable['share']:.2%}; limit {undecodable['limit']:.2%})")
    return {"status": status, "passed": status == "pass", "summary": summary, "failed": failed,
            "undecodable_samples": None if undecodable is None else undecodable["samples"],
            "inconclusive": unsure, "canaries_used": has_canaries, "canary_events": events,
            "checks": {c.name: c.as_dict() for c in criteria}}


def _canary_criteria(add, canary: dict[str, Any] | None, mode: str, cfg: VerdictConfig) -> None:
    names = [f"{name}[{mode}]" for name in CANARY_CRITERIA]
    if canary is None or not canary["events"]:
        for name in names:
            add(name, "canary", "not_applicable", None, None, "no canary sequences among the held-out data")
        return
    chance = canary["chance_nats"]
    n = canary["events"]
    wrong = canary["wrong_events"]
    add(f"canary_wrong_events[{mode}]", "canary", decide_wrong_share(wrong, cfg), wrong["share"],
        cfg.canary_max_wrong_share,
        f"share of the {n} canary events (picture → class word) whose class word costs ≥ {cfg.canary_wrong_ratio} × "
        f"chance ({chance:.3f} nats) with the stored images: fail when wrong beyond noise (lower "
        f"{cfg.confidence:.0%} bound above the share), inconclusive when only the observed share is above it", wrong)
    limit = cfg.canary_max_loss_ratio * chance
    add(f"canary_true_loss[{mode}]", "canary", decide_at_most(canary["true_loss"], limit, cfg.min_documents),
        canary["true_loss"]["mean"], round(limit, 4),
        f"class-word loss with the stored images ≤ {cfg.canary_max_loss_ratio} × chance", canary["true_loss"])
    shuffle_margin = cfg.canary_shuffle_margin * chance
    shuffled = canary["paired"]["shuffled"]
    add(f"canary_shuffle_gap[{mode}]", "canary", decide_at_least(shuffled, shuffle_margin, cfg.min_documents),
        shuffled["mean"], round(shuffle_margin, 4),
        f"images shuffled across documents cost the class word ≥ {cfg.canary_shuffle_margin} × chance "
        "(paired per document)", shuffled)
    margin = cfg.canary_min_shift_margin * chance
    for role in ("misaligned", "permuted"):
        bounds = canary["paired"][role]
        applicable = bounds["documents"] > 0
        add(f"canary_{role}[{mode}]", "canary",
            decide_at_least(bounds, margin, cfg.min_documents) if applicable else "not_applicable",
            bounds["mean"], round(margin, 4), _ROLE_TEXT[role].format(mode=mode, cond=MISALIGNED[mode][0])
            + f" costs the class word ≥ {cfg.canary_min_shift_margin} × chance (paired per document)", bounds)
    if mode == "phi":
        _gain_peak(add, "canary_gain_peak", "canary", canary["gain_by_distance"], 5, cfg,
                   "on canary sequences the gain from the true image peaks right after the image")


def _general_criteria(add, figures: dict[str, Any], mode: str, cfg: VerdictConfig) -> None:
    for role in ("shuffled", "misaligned", "permuted"):
        bounds = figures["paired"][role]
        name = f"{'shuffle_gap' if role == 'shuffled' else role}[{mode}]"
        if not bounds["documents"]:
            add(name, "general", "not_applicable", None, None, "no held-out target is changed by this ablation")
            continue
        margin = max(cfg.min_effect_nats, cfg.min_effect_ratio * (bounds["text_only_loss"] or 0.0))
        add(name, "general", decide_at_least(bounds, margin, cfg.min_documents), bounds["mean"], round(margin, 4),
            _ROLE_TEXT[role].format(mode=mode, cond=MISALIGNED[mode][0]) + " raises the loss of the targets it "
            f"changes by ≥ max({cfg.min_effect_nats} nats, {cfg.min_effect_ratio} × their text-only loss), paired "
            "per document", bounds)
    if mode == "phi":
        tied = figures["paired"]["tied"]
        margin = -cfg.min_effect_nats
        status = ("pass" if not tied["documents"] else
                  "fail" if tied["upper"] < margin else "pass" if tied["lower"] >= margin else "inconclusive")
        add("tied[phi]", "general", status, tied["mean"], margin,
            "φ − 1 changes no target of well-formed shards (the contract makes it a tie); where it changes some and "
            f"lowers their loss by more than {cfg.min_effect_nats} nats (upper bound), φ names the wrong image", tied)
        _gain_peak(add, "gain_peak", "reported", figures["gain_by_distance"], 20, cfg,
                   "the gain from the true image peaks right after the image (all held-out data)")


def _gain_peak(add, name: str, family: str, buckets: list[dict[str, Any]], min_targets: int, cfg: VerdictConfig,
               explanation: str) -> None:
    peak = peak_bucket(buckets, min_targets)
    status = ("not_applicable" if peak is None else
              "pass" if peak["min_distance"] <= cfg.gain_peak_max_distance else "fail")
    add(name, family, status, None if peak is None else peak["distance"], cfg.gain_peak_max_distance, explanation)


_ROLE_TEXT = {"shuffled": "{mode}: images shuffled across documents",
              "misaligned": "{mode}: the conditioning moved to name a neighbouring image ({cond})",
              "permuted": "{mode}: images permuted within each sequence"}


def gate_summary(main: dict[str, float], control: dict[str, float] | None) -> dict[str, Any] | None:
    if control is None:
        return None
    return {"main_mean_xattn": float(np.mean(list(main.values()))),
            "control_mean_xattn": float(np.mean(list(control.values()))),
            "main": main, "control": control}
