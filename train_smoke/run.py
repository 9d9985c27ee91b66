"""`m3w smoke` end to end: shard sets → trained model (+ control) → ablations → verdict, JSON report and plots.

Outputs (any Beam filesystem path):
    smoke_report.json   the verdict, every criterion with its value and threshold, the figures behind them,
                        training curves and data counts; deterministic (same shards + config → same bytes)
    smoke_timing.json   wall-clock figures: seconds, tokens/s, data-wait share, FLOPs and MFU (vary run to run)
    plots/*.png         loss curves, ablations, gain vs distance from the image, gates over steps, overview

Each is written atomically (`pipeline.core.files`): a reader, or a run stopped halfway, sees the old file or the
new one, never a torn one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from typing import Any

import torch

from pipeline.config import Config, dump_config
from pipeline.core.files import write_atomically
from schemas.shards import manifest_path, read_manifest
from train_smoke.config import smoke_settings
from train_smoke.data import (
    ShardSet,
    ShardSetError,
    TableBatches,
    load_tables,
    open_shard_sets,
    streaming_batches,
)
from train_smoke.model import FlamingoLM, ModelConfig, count_parameters
from train_smoke.pairs import PairSet, is_pair_set, load_pair_tables
from train_smoke.train import History, Trainer, peak_tflops, pick_device, seed_everything
from train_smoke.verdict import evaluate, find_canary_events, gate_summary, judge, run_condition

log = logging.getLogger(__name__)

REPORT_NAME = "smoke_report.json"
TIMING_NAME = "smoke_timing.json"
PLOTS_DIR = "plots"


def load_tokenizer(path: str):
    from tokenizers import Tokenizer

    from schemas.shards import open_binary

    with open_binary(path) as handle:
        return Tokenizer.from_str(handle.read().decode("utf-8"))


def _join(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *names])


class SmokeRun:
    """One smoke run: holds the data, the models and the results between the steps of `run`."""

    def __init__(self, sources: list[str], config: Config, progress: bool = True):
        self.config = config
        self.settings = smoke_settings(config)
        self.progress = progress
        s = self.settings
        seed_everything(s.seed, s.deterministic, s.threads)
        self.device = pick_device(s.device)
        self.sets, self.pair_sets = open_datasets(sources, s.train.weights)
        self.tokenizer = load_tokenizer(self.sets[0].tokenizer_path)
        self.train_tables: dict[str, Any] = {}
        self.eval_tables: dict[str, Any] = {}  # what the verdict judges: the interleaved shard sets
        self.pair_eval_tables: dict[str, Any] = {}
        self.data_counts: dict[str, Any] = {}
        self._load()

    def _load(self) -> None:
        d = self.settings.data
        for shard_set in self.sets:
            train, held, counts = load_tables(shard_set, d.image_size, d.max_seq_len, d.eval_fraction,
                                              d.max_eval_sequences, d.max_train_sequences, load_train=d.cache,
                                              verify_phi=d.check_phi, max_undecodable_share=d.max_undecodable_share)
            if held is None and not self.judged_by_canaries(shard_set):
                raise ShardSetError(f"{shard_set.source}: no held-out sequences (raise smoke.data.eval_fraction "
                                    "or give more documents)")
            if d.cache and train is None and shard_set.weight > 0:
                raise ShardSetError(f"{shard_set.source}: no training sequences after the held-out split")
            self.train_tables[shard_set.name] = train
            self.eval_tables[shard_set.name] = held
            self.data_counts[shard_set.name] = {**counts.as_dict(), "weight": shard_set.weight,
                                                "source": shard_set.source}
        for pair_set in self.pair_sets:  # always in memory; one image slot per sequence
            train, held, counts = load_pair_tables(pair_set, self.tokenizer, self.sets[0].special, d.image_size,
                                                   d.pair_max_tokens, d.eval_fraction, d.max_eval_sequences,
                                                   d.max_train_sequences, d.max_undecodable_share)
            if train is None and pair_set.weight > 0:
                raise ShardSetError(f"{pair_set.source}: no training pairs after the held-out split")
            self.train_tables[pair_set.name] = train
            self.pair_eval_tables[pair_set.name] = held
            self.data_counts[pair_set.name] = {**counts.as_dict(), "weight": pair_set.weight,
                                               "source": pair_set.source, "kind": "pairs"}

    def judged_by_canaries(self, shard_set: ShardSet) -> bool:
        """A build's own data beside the canaries it carried: the verdict stands on the canaries, so too few of its
        own documents to hold any out only leaves its general criteria unmeasured."""
        return not shard_set.canaries and any(s.canaries and s.source == shard_set.source for s in self.sets)

    def canary_notes(self) -> list[dict[str, Any] | None]:
        """What each shard set's manifest says about the alignment canaries its build carried (None: nothing)."""
        notes: dict[str, dict[str, Any] | None] = {}
        for shard_set in self.sets:
            if shard_set.source not in notes:
                found = manifest_path(shard_set.source)
                notes[shard_set.source] = read_manifest(found).get("canaries") if found else None
        return list(notes.values())

    def undecodable(self) -> dict[str, Any]:
        """Undecodable samples over every dataset, as the loading pass counted them (for the verdict)."""
        entries = [counts["undecodable"] for counts in self.data_counts.values()]
        samples, decoded = sum(e["samples"] for e in entries), sum(e["of"] for e in entries)
        return {"samples": samples, "of": decoded, "share": round(samples / decoded, 6) if decoded else 0.0,
                "limit": self.settings.data.max_undecodable_share,
                "first": next((e["first"] for e in entries if e["first"]), None)}

    def model_config(self) -> ModelConfig:
        """`smoke.model` with the slots' image size and a vocabulary that holds every token id the data has."""
        vocab = max(s.vocab_size for s in self.sets)
        tables = [*self.train_tables.values(), *self.eval_tables.values(), *self.pair_eval_tables.values()]
        seen = max(int(t.input_ids.max()) for t in tables if t is not None)
        return ModelConfig.from_settings(self.settings.model, self.settings.data.image_size, max(vocab, seen + 1))

    def streams(self, seed: int) -> dict[str, Any]:
        s = self.settings
        out = {}
        for index, shard_set in enumerate(self.sets):
            if shard_set.weight <= 0:
                continue
            if s.data.cache:
                out[shard_set.name] = TableBatches(self.train_tables[shard_set.name], s.train.batch_size,
                                                   seed + 1000 * index)
            else:
                out[shard_set.name] = streaming_batches(
                    shard_set, s.data.image_size, s.data.max_seq_len, s.data.eval_fraction, s.train.batch_size,
                    s.data.shuffle_buffer, seed + 1000 * index, s.data.num_workers, s.data.prefetch_factor,
                    pin_memory=self.device.type == "cuda", verify_phi=s.data.check_phi,
                    max_undecodable_share=s.data.max_undecodable_share)
        for index, pair_set in enumerate(self.pair_sets, start=len(self.sets)):
            if pair_set.weight > 0:
                out[pair_set.name] = TableBatches(self.train_tables[pair_set.name], s.train.batch_size,
                                                  seed + 1000 * index)
        return out

    def train_model(self, label: str, shuffle_images: bool, steps: int, count_flops: bool) -> tuple[FlamingoLM,
                                                                                                     History]:
        s = self.settings
        torch.manual_seed(s.seed)  # main and control start from the same weights
        model = FlamingoLM(self.model_config())
        trainer = Trainer(model, s, self.device, label, shuffle_images=shuffle_images, progress=self.progress)
        weights = {dataset.name: dataset.weight for dataset in [*self.sets, *self.pair_sets]}
        history = trainer.train(self.streams(s.seed), weights, steps, count_flops=count_flops,
                                probe=self.make_probe(), probe_every=s.train.probe_every,
                                last_steps=self.last_steps())
        return model, history

    def main_steps(self) -> int:
        """`riding_canary_steps` when a build's riding canaries decide, else `steps`. Riding canaries are sparser
        than the dense canary shards the profile's `steps` was calibrated on (a lead paragraph, notes between the
        pictures, a real crawl's tokenizer): on a 120-page wget crawl the tiny model's held-out class-word loss
        was 0.81 nats at 500 steps, 0.46 at 600, 0.08 at 700 and 0.06 at 1000. The build's own data stops
        after `data_max_epochs`, so these steps cost about what `steps` cost with both sets."""
        riding = any(shard_set.canaries for shard_set in self.sets)
        return (self.settings.train.riding_canary_steps or self.settings.train.steps) if riding else \
            self.settings.train.steps

    def last_steps(self) -> dict[str, int]:
        """The step after which a build's own data, beside its riding canaries, stops: `data_max_epochs` passes.

        The verdict stands on the canaries. A small build's few hundred sequences, repeated at every one of the
        profile's steps, are memorised (its pictures tell its documents apart), and a tiny model doing that stops
        learning the canary shapes: measured on a 25-page crawl, the canary class-word loss stayed at 1.55 nats
        with the build's data at λ = 1 every step and reached 0.10 without it (docs/smoke.md)."""
        epochs = self.settings.train.data_max_epochs
        if epochs is None:
            return {}
        batch = self.settings.train.batch_size
        out = {}
        for shard_set in self.sets:
            sequences = self.data_counts[shard_set.name]["train"]
            if self.judged_by_canaries(shard_set) and sequences:
                out[shard_set.name] = max(1, math.ceil(epochs * sequences / min(batch, sequences)))
        return out

    def make_probe(self):
        """Held-out loss and canary class-word loss on a few sequences, for the curves in the loss plot."""
        s = self.settings
        if s.train.probe_every <= 0:
            return None
        tables = {n: t for n, t in self.eval_tables.items() if t is not None}
        name = max(tables, key=lambda n: (int(tables[n].is_canary.sum()), len(tables[n])))
        table = self.eval_tables[name]
        order = sorted(range(len(table)), key=lambda row: (not bool(table.is_canary[row]), row))
        table = table.subset(order[: s.train.probe_sequences])
        events = find_canary_events(table, self.tokenizer, self.sets[0].special)

        def probe(model: FlamingoLM) -> dict[str, float]:
            result = run_condition(model, table, self.device, s.verdict.eval_batch_size, s.train.bf16)
            targets = table.targets[:, 1:]
            out = {"heldout_loss": round(float(result.nll[targets].mean()), 5)}
            if len(events):
                out["canary_class_word_loss"] = round(float(events.word_nll(result).mean()), 5)
            return out

        return probe

    def dataset_losses(self, model: FlamingoLM, history: History) -> dict[str, dict[str, Any]]:
        """Each dataset's last logged training loss and held-out loss (true images; nats per target token)."""
        s = self.settings
        out = {}
        for kind, tables in (("interleaved", self.eval_tables), ("pairs", self.pair_eval_tables)):
            for name, table in tables.items():
                heldout = None
                if table is not None:
                    result = run_condition(model, table, self.device, s.verdict.eval_batch_size, s.train.bf16)
                    heldout = round(float(result.nll[table.targets[:, 1:]].mean()), 5)
                train = history.loss.get(name) or [None]
                out[name] = {"kind": kind, "weight": self.data_counts[name]["weight"], "train_loss": train[-1],
                             "heldout_loss": heldout}
        return out

    def run(self, output_dir: str) -> dict[str, Any]:
        s = self.settings
        started = time.perf_counter()
        model, main = self.train_model("main", False, self.main_steps(), count_flops=True)
        control_model, control = None, None
        if s.train.control_run:
            control_model, control = self.train_model("control (shuffled images)", True,
                                                      s.train.control_steps or self.main_steps(), count_flops=False)
        eval_started = time.perf_counter()
        bf16 = s.train.bf16
        figures = {name: evaluate(model, table, self.tokenizer, self.sets[0].special, s.verdict, self.device,
                                  s.seed, bf16) for name, table in self.eval_tables.items() if table is not None}
        main_gates = {block: xattn for block, (xattn, _) in model.gates().items()}
        control_gates = None if control_model is None else {
            block: xattn for block, (xattn, _) in control_model.gates().items()}
        gates = gate_summary(main_gates, control_gates)
        verdict = judge(figures, gates, s.verdict, self.undecodable(),
                        riding=[shard_set.name for shard_set in self.sets if shard_set.canaries],
                        canary_notes=self.canary_notes())
        losses = self.dataset_losses(model, main)
        eval_seconds = time.perf_counter() - eval_started
        peak = peak_tflops(self.device)
        report = {
            "verdict": verdict,
            "datasets": self.data_counts,
            "dataset_losses": losses,
            "evaluation": figures,
            "gates": gates,
            "training": {"main": _history_dict(main), "control": None if control is None else _history_dict(control)},
            "model": {"parameters": count_parameters(model), "trainable": count_parameters(model, True),
                      "config": _model_config_dict(self.model_config())},
            "profile": s.profile,
            "device": self.device.type,
            "config": self.config["smoke"],
        }
        timing = {
            "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
            "main": main.summary(peak),
            "control": None if control is None else control.summary(peak),
            "eval_seconds": round(eval_seconds, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
            "torch_threads": torch.get_num_threads(),
        }
        write_atomically(_join(output_dir, REPORT_NAME), _json_bytes(report))
        write_atomically(_join(output_dir, TIMING_NAME), _json_bytes(timing))
        write_atomically(_join(output_dir, "config.yaml"), dump_config(self.config).encode("utf-8"))
        from train_smoke.plots import write_plots

        report["plots"] = write_plots(report, _join(output_dir, PLOTS_DIR), write_atomically)
        report["timing"] = timing
        return report


def open_datasets(sources: list[str], weights: list[float] | None) -> tuple[list[ShardSet], list[PairSet]]:
    """The interleaved shard sets and the image-text pair sets (`m3w export pairs`) among `sources`, each with its
    λ (`weights` in the order of `sources`); at least one shard set: its tokenizer and its verdict."""
    if weights is not None and len(weights) != len(sources):
        raise ShardSetError(f"{len(weights)} weights for {len(sources)} datasets; give one λ per dataset")
    lambdas = [1.0] * len(sources) if weights is None else [float(w) for w in weights]
    is_pairs = [is_pair_set(source) for source in sources]
    if all(is_pairs):
        raise ShardSetError("only image-text pair sets given: the smoke run needs an interleaved shard set too")
    sets = open_shard_sets([src for src, pairs in zip(sources, is_pairs) if not pairs],
                           [w for w, pairs in zip(lambdas, is_pairs) if not pairs])
    pair_sets = [PairSet.open(src, w) for src, w, pairs in zip(sources, lambdas, is_pairs) if pairs]
    taken = {shard_set.name for shard_set in sets}
    for index, pair_set in enumerate(pair_sets):
        if pair_set.name in taken:
            pair_set.name = f"{pair_set.name}#pairs{index}"
        taken.add(pair_set.name)
    return sets, pair_sets


def _history_dict(history: History) -> dict[str, Any]:
    return {"steps": history.steps, "loss": {k: [round(v, 5) for v in vals] for k, vals in history.loss.items()},
            "lm_pretrain_loss": [round(v, 5) for v in history.lm_pretrain_loss],
            "probe_steps": history.probe_steps, "probe": history.probe,
            "gate_steps": history.gate_steps,
            "gates_xattn": {k: [round(v, 5) for v in vals] for k, vals in history.gates_xattn.items()},
            "gates_dense": {k: [round(v, 5) for v in vals] for k, vals in history.gates_dense.items()}}


def _model_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    return asdict(cfg)


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def run_smoke(sources: list[str], output: str, config: Config | None = None, profile: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Train, ablate, judge; write the report, the timings and the plots under `output`; return the report
    (`report["verdict"]` holds `status`, `passed`, `summary`, `failed` and the `checks`).

    `config` is a full m3w config (default: the packaged defaults). With `profile`, that profile's keys are
    laid over `config["smoke"]` (for callers holding a loaded config; the CLI resolves profiles itself, under
    the user's overrides, with `train_smoke.config.resolve_config`).
    """
    from train_smoke.config import apply_profile, resolve_config

    config = resolve_config() if config is None else config
    if profile is not None:
        config = apply_profile(config, profile)
    return SmokeRun(sources, config, progress=progress).run(output)
