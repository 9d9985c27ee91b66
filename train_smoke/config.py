"""The `smoke` config section → typed settings, with profiles (tiny for CPU/CI, gpu) applied under user overrides.

Order of precedence, lowest first: the section's base values, the chosen profile's values
(`smoke.profiles.<name>`), then the user's YAML (`--config`) and `--set` overrides. So
`--profile tiny --set smoke.train.steps=50` trains 50 steps even though the tiny profile names its own count.

Every value is typed (pipeline.config.Section, strict): the resolved section and every profile are checked before
any work. Only this section: `python -m train_smoke` runs where the pipeline's sections cannot be imported
(`m3w smoke` checks the whole config first, as every m3w command does).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from pipeline.config import Config, ConfigError, Section, Share, load_defaults, load_yaml, merge_config, parse_override


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
        return load_yaml(io.TextIOWrapper(handle, encoding="utf-8")) or {}


def resolve_config(config_path: str | None = None, overrides: Iterable[str] = (),
                   profile: str | None = None) -> Config:
    """The full config with `smoke` = base ← profile ← user: every key known to the defaults, the smoke
    section (with every profile) typed."""
    overrides = list(overrides)
    user = _read_user_yaml(config_path)
    config = merge_config(None, overrides, extra=user)  # every key known; the types below
    base = load_defaults()["smoke"]
    name = profile or config["smoke"]["profile"]
    profiles = config["smoke"]["profiles"]
    if name not in profiles:
        raise ConfigError(f"unknown smoke profile {name!r} (known: {', '.join(sorted(profiles))})")
    smoke = _deep_merge(base, profiles[name])
    smoke = _deep_merge(smoke, user.get("smoke") or {})  # what the user set goes on top of the profile
    user_train = [(user.get("smoke") or {}).get("train") or {}]
    for item in overrides:
        override = parse_override(item).get("smoke") or {}
        smoke = _deep_merge(smoke, override)
        user_train.append(override.get("train") or {})
    if any("steps" in t for t in user_train) and not any("riding_canary_steps" in t for t in user_train):
        smoke["train"]["riding_canary_steps"] = None  # the steps the user asked for, riding canaries or not
    smoke["profile"] = name
    config["smoke"] = smoke
    SmokeSection.from_config(smoke, "smoke")
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


@dataclass(frozen=True)
class DataConfig(Section):
    """`smoke.data` (documented in pipeline/defaults.yaml, where every value lives)."""

    image_size: PositiveInt
    max_seq_len: Annotated[int, Field(ge=2)] | None
    eval_fraction: Annotated[float, Field(gt=0.0, lt=1.0)]
    max_eval_sequences: PositiveInt
    max_train_sequences: PositiveInt | None
    cache: bool
    num_workers: NonNegativeInt
    shuffle_buffer: PositiveInt
    prefetch_factor: PositiveInt
    check_phi: bool
    max_undecodable_share: Share
    pair_max_tokens: PositiveInt


@dataclass(frozen=True)
class VisionSettings(Section):
    """`smoke.model.vision`: the image encoder (train_smoke.model.VisionConfig is what the model is built from)."""

    kind: Literal["conv", "vit", "open_clip"]
    channels: Annotated[list[PositiveInt], Field(min_length=1)]
    patch_size: PositiveInt
    width: PositiveInt
    depth: PositiveInt
    heads: PositiveInt
    checkpoint: str | None
    open_clip_arch: str | None
    freeze: bool


@dataclass(frozen=True)
class ModelSettings(Section):
    """`smoke.model`: the model's shape (train_smoke.model.ModelConfig adds the vocabulary and the image size)."""

    d_model: PositiveInt
    lm_layers: PositiveInt
    lm_heads: PositiveInt
    ffn_mult: PositiveInt
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]
    xattn_every: PositiveInt
    xattn_heads: PositiveInt
    resampler_latents: PositiveInt
    resampler_layers: PositiveInt
    resampler_heads: PositiveInt
    vision: VisionSettings


@dataclass(frozen=True)
class TrainConfig(Section):
    """`smoke.train`."""

    steps: PositiveInt
    riding_canary_steps: PositiveInt | None
    batch_size: PositiveInt
    lr: NonNegativeFloat  # 0 only to freeze what it drives (tests)
    vision_lr: NonNegativeFloat | None
    gate_lr: NonNegativeFloat
    weight_decay: NonNegativeFloat
    warmup_steps: NonNegativeInt
    min_lr_ratio: Share
    grad_clip: PositiveFloat
    phi_next_prob: Share
    lm_pretrain_steps: NonNegativeInt
    freeze_lm: bool
    weights: list[NonNegativeFloat] | None
    data_max_epochs: PositiveFloat | None
    bf16: bool
    compile: bool
    log_every: PositiveInt
    probe_every: NonNegativeInt
    probe_sequences: PositiveInt
    control_run: bool
    control_steps: PositiveInt | None


@dataclass(frozen=True)
class VerdictConfig(Section):
    """`smoke.verdict`."""

    eval_batch_size: PositiveInt
    distance_buckets: list[NonNegativeInt] | None
    near_distance: NonNegativeInt
    far_distance: NonNegativeInt
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)]
    bootstrap_samples: PositiveInt
    min_documents: NonNegativeInt
    min_effect_nats: NonNegativeFloat
    min_effect_ratio: NonNegativeFloat
    canary_max_loss_ratio: NonNegativeFloat
    canary_shuffle_margin: NonNegativeFloat
    canary_min_shift_margin: NonNegativeFloat
    canary_wrong_ratio: NonNegativeFloat
    canary_max_wrong_share: Share
    min_canary_events: NonNegativeInt
    gain_peak_max_distance: NonNegativeInt
    gate_min_ratio: NonNegativeFloat
    leak_tolerance: NonNegativeFloat
    leak_sequences: PositiveInt
    require_canaries: bool
    required: list[str] | None


@dataclass(frozen=True)
class SmokeSettings(Section):
    """`smoke` as the trainer reads it: the base keys with the chosen profile laid over them (no `profiles`)."""

    profile: str
    seed: NonNegativeInt
    device: Literal["auto", "cpu", "cuda"]
    deterministic: bool
    threads: NonNegativeInt  # 0: torch's default
    data: DataConfig
    model: ModelSettings
    train: TrainConfig
    verdict: VerdictConfig

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Fail before any work on combinations of values the trainer cannot honour (each value's own type and
        range are checked with the section)."""
        m, t = self.model, self.train
        for name, dim, heads in (("lm", m.d_model, m.lm_heads), ("xattn", m.d_model, m.xattn_heads),
                                 ("resampler", m.d_model, m.resampler_heads)):
            if dim % heads or (dim // heads) % 2:
                raise ConfigError(f"smoke.model: d_model {dim} must split into {heads} {name} heads of even size")
        if t.freeze_lm and t.lm_pretrain_steps < 1:
            raise ConfigError("smoke.train.freeze_lm needs lm_pretrain_steps > 0 (a frozen random LM learns nothing)")


@dataclass(frozen=True)
class SmokeSection(SmokeSettings):
    """The `smoke` section of a config: the base keys and the named profiles. `smoke.profile` must name one, and
    every profile laid over the base must make valid SmokeSettings."""

    profiles: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.profile not in self.profiles:
            raise ConfigError(f"config key 'smoke.profile': expected one of the profiles {sorted(self.profiles)}; "
                              f"got {self.profile!r}")
        base = {key: value for key, value in asdict(self).items() if key != "profiles"}
        for name, profile in self.profiles.items():
            SmokeSettings.from_config(_deep_merge(base, profile), f"smoke.profiles.{name}")


def smoke_settings(config: Config) -> SmokeSettings:
    """The trainer's typed settings from a resolved config (`resolve_config`, `apply_profile`): its `smoke`
    section, whose chosen profile is already laid over the base, without the profiles."""
    return SmokeSettings.from_config({key: value for key, value in config["smoke"].items() if key != "profiles"},
                                     "smoke")
