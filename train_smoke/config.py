"""The `smoke` config section → typed settings, with profiles (tiny for CPU/CI, gpu) applied under user overrides.

Order of precedence, lowest first: the section's base values, the chosen profile's values
(`smoke.profiles.<name>`), then the user's YAML (`--config`) and `--set` overrides. So
`--profile tiny --set smoke.train.steps=50` trains 50 steps even though the tiny profile names its own count.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

import yaml

from pipeline.config import Config, ConfigError, load_config, load_defaults, parse_override
from train_smoke.model import ModelConfig, VisionConfig


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_user_yaml(config_path: str | None) -> dict[str, Any]:
    """The user's YAML file (a local path, or any Beam filesystem path when Beam is installed)."""
    if not config_path:
        return {}
    from schemas.shards import open_binary

    with open_binary(config_path) as handle:
        return yaml.safe_load(io.TextIOWrapper(handle, encoding="utf-8")) or {}


def resolve_config(config_path: str | None = None, overrides: Iterable[str] = (),
                   profile: str | None = None) -> Config:
    """The full config (validated like every other command) with `smoke` = base ← profile ← user."""
    overrides = list(overrides)
    user = _read_user_yaml(config_path)
    config = load_config(None, overrides, extra=user)  # validates every key against the defaults
    base = load_defaults()["smoke"]
    name = profile or config["smoke"]["profile"]
    profiles = config["smoke"]["profiles"]
    if name not in profiles:
        raise ConfigError(f"unknown smoke profile {name!r} (known: {', '.join(sorted(profiles))})")
    smoke = _deep_merge(base, profiles[name])
    smoke = _deep_merge(smoke, user.get("smoke") or {})  # what the user set goes on top of the profile
    for item in overrides:
        smoke = _deep_merge(smoke, parse_override(item).get("smoke") or {})
    smoke["profile"] = name
    config["smoke"] = smoke
    return config


def apply_profile(config: Config, profile: str) -> Config:
    """`config` with `smoke.profiles[profile]` laid over its `smoke` section (a copy)."""
    profiles = config["smoke"]["profiles"]
    if profile not in profiles:
        raise ConfigError(f"unknown smoke profile {profile!r} (known: {', '.join(sorted(profiles))})")
    out = copy.deepcopy(config)
    out["smoke"] = _deep_merge(config["smoke"], profiles[profile])
    out["smoke"]["profile"] = profile
    return out


def _build(cls, values: Mapping[str, Any], where: str):
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown keys under {where}: {', '.join(sorted(unknown))}")
    missing = {f.name for f in fields(cls) if f.name not in values and f.default is MISSING
               and f.default_factory is MISSING}
    if missing:
        raise ConfigError(f"missing keys under {where}: {', '.join(sorted(missing))}")
    out = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if isinstance(value, str) and "float" in str(f.type):  # YAML reads `1e-3` (no dot) as a string
            try:
                value = float(value)
            except ValueError as error:
                raise ConfigError(f"{where}.{f.name} must be a number; got {value!r}") from error
        out[f.name] = value
    return cls(**out)


@dataclass
class DataConfig:
    """`smoke.data` (documented in pipeline/defaults.yaml, where every value lives)."""

    image_size: int
    max_seq_len: int | None
    eval_fraction: float
    max_eval_sequences: int
    max_train_sequences: int | None
    cache: bool
    num_workers: int
    shuffle_buffer: int
    prefetch_factor: int
    check_phi: bool
    max_undecodable_share: float
    pair_max_tokens: int


@dataclass
class TrainConfig:
    """`smoke.train`."""

    steps: int
    batch_size: int
    lr: float
    vision_lr: float | None
    gate_lr: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float
    phi_next_prob: float
    lm_pretrain_steps: int
    freeze_lm: bool
    weights: list[float] | None
    bf16: bool
    compile: bool
    log_every: int
    probe_every: int
    probe_sequences: int
    control_run: bool
    control_steps: int | None


@dataclass
class VerdictConfig:
    """`smoke.verdict`."""

    eval_batch_size: int
    distance_buckets: list[int] | None
    near_distance: int
    far_distance: int
    confidence: float
    bootstrap_samples: int
    min_documents: int
    min_effect_nats: float
    min_effect_ratio: float
    canary_max_loss_ratio: float
    canary_shuffle_margin: float
    canary_min_shift_margin: float
    canary_wrong_ratio: float
    canary_max_wrong_share: float
    min_canary_events: int
    gain_peak_max_distance: int
    gate_min_ratio: float
    leak_tolerance: float
    leak_sequences: int
    require_canaries: bool
    required: list[str] | None


@dataclass
class SmokeSettings:
    profile: str
    seed: int
    device: str
    deterministic: bool
    threads: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    verdict: VerdictConfig

    @classmethod
    def from_config(cls, config: Config) -> SmokeSettings:
        smoke = config["smoke"]
        model_values = dict(smoke["model"])
        vision = _build(VisionConfig, model_values.pop("vision", {}), "smoke.model.vision")
        model = _build(ModelConfig, {**model_values, "vision": vision}, "smoke.model")
        data = _build(DataConfig, smoke["data"], "smoke.data")
        model.image_size = int(data.image_size)
        settings = cls(profile=smoke["profile"], seed=int(smoke["seed"]), device=str(smoke["device"]),
                       deterministic=bool(smoke["deterministic"]), threads=int(smoke["threads"]), data=data,
                       model=model, train=_build(TrainConfig, smoke["train"], "smoke.train"),
                       verdict=_build(VerdictConfig, smoke["verdict"], "smoke.verdict"))
        settings.check()
        return settings

    def check(self) -> None:
        """Fail before any work on values the trainer cannot honour."""
        m, t, d = self.model, self.train, self.data
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"smoke.device must be auto, cpu or cuda; got {self.device!r}")
        for name, dim, heads in (("lm", m.d_model, m.lm_heads), ("xattn", m.d_model, m.xattn_heads),
                                 ("resampler", m.d_model, m.resampler_heads)):
            if dim % heads or (dim // heads) % 2:
                raise ConfigError(f"smoke.model: d_model {dim} must split into {heads} {name} heads of even size")
        if m.xattn_every < 1 or m.lm_layers < 1 or m.resampler_latents < 1:
            raise ConfigError("smoke.model: xattn_every, lm_layers and resampler_latents must be ≥ 1")
        if not 0.0 < d.eval_fraction < 1.0:
            raise ConfigError(f"smoke.data.eval_fraction must be in (0, 1); got {d.eval_fraction}")
        if not 0.0 <= d.max_undecodable_share <= 1.0:
            raise ConfigError(f"smoke.data.max_undecodable_share must be in [0, 1]; got {d.max_undecodable_share}")
        if not 0.5 <= self.verdict.confidence < 1.0:
            raise ConfigError(f"smoke.verdict.confidence must be in [0.5, 1); got {self.verdict.confidence}")
        if not 0.0 <= t.phi_next_prob <= 1.0:
            raise ConfigError(f"smoke.train.phi_next_prob must be in [0, 1]; got {t.phi_next_prob}")
        if t.steps < 1 or t.batch_size < 1:
            raise ConfigError("smoke.train.steps and batch_size must be ≥ 1")
        if t.freeze_lm and t.lm_pretrain_steps < 1:
            raise ConfigError("smoke.train.freeze_lm needs lm_pretrain_steps > 0 (a frozen random LM learns nothing)")
        if t.weights is not None and any(float(w) < 0 for w in t.weights):
            raise ConfigError(f"smoke.train.weights must be ≥ 0; got {t.weights}")
