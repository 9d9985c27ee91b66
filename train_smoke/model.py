"""A small Flamingo-style VLM: vision encoder → Perceiver Resampler → decoder LM with GATED XATTN-DENSE blocks.

Written to follow the contract's cross-attention semantics exactly, because the smoke verdict is only
as sound as the model that produces it:

- each text position attends to the visual tokens of the one image that φ names (never a later one);
- where φ = 0 the gated block adds exactly zero (its output is multiplied by a 0/1 mask, not merely
  masked in the softmax), so nothing visual leaks before the first image;
- every gate is `tanh(α)` with α = 0 at init, so the untrained model *is* the text-only LM;
- packed rows (`doc_index` given): self-attention is block-diagonal causal (a token sees earlier tokens of its
  own document only), rotary positions restart at each document, and a position's cross-attention reaches
  only image slots of its own document (a φ naming another document's slot gives exactly zero there).

Attention everywhere goes through `torch.nn.functional.scaled_dot_product_attention` (fused kernels on GPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from train_smoke.config import ModelSettings

NORM_GROUPS = 16  # GroupNorm groups per conv stage (fewer when the channels do not divide)
IMAGE_MEAN = (0.481, 0.458, 0.408)  # CLIP's statistics: a sensible default for web photos
IMAGE_STD = (0.269, 0.261, 0.276)


@dataclass
class VisionConfig:
    kind: str = "conv"  # conv | vit | open_clip
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    patch_size: int = 8  # vit
    depth: int = 4  # vit
    heads: int = 4  # vit
    width: int = 128  # vit
    checkpoint: str | None = None  # local weights file (state dict; an open_clip checkpoint for kind=open_clip)
    open_clip_arch: str | None = None  # e.g. "ViT-B-32"
    freeze: bool = False


@dataclass
class ModelConfig:
    vocab_size: int = 1024
    d_model: int = 128
    lm_layers: int = 4
    lm_heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.0
    xattn_every: int = 1  # a GATED XATTN-DENSE block before every k-th LM layer
    xattn_heads: int = 4
    resampler_latents: int = 64
    resampler_layers: int = 2
    resampler_heads: int = 4
    image_size: int = 64
    vision: VisionConfig = field(default_factory=VisionConfig)

    @classmethod
    def from_settings(cls, model: ModelSettings, image_size: int, vocab_size: int) -> ModelConfig:
        """The `smoke.model` section's shape with the image slots' size and the data's vocabulary."""
        shape = asdict(model)
        return cls(**{**shape, "vision": VisionConfig(**shape["vision"])}, image_size=image_size,
                   vocab_size=vocab_size)


@dataclass
class PackedRows:
    """Where the documents of packed rows are: `doc_index` (B, L; 1-based, 0 on padding), `position_ids` (B, L;
    restarting per document) and `slot_doc` (B, N; the document of each image slot, 0 when empty)."""

    doc_index: torch.Tensor
    position_ids: torch.Tensor
    slot_doc: torch.Tensor


def _mlp(dim: int, mult: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim),
                         nn.Dropout(dropout))


# ---------------------------------------------------------------------------------------------- vision


class ConvEncoder(nn.Module):
    """Stride-2 conv stages → a grid of feature tokens.

    GroupNorm, not BatchNorm: batch statistics would make one image's features depend on every other image
    of the batch in training, so a position would see more than the image φ names (a leak across the images
    of a sequence and across the sequences of a batch). GroupNorm normalises each image on its own. Small groups
    (16 per stage: one to four channels each at the tiny profile's widths) matter: like batch statistics they
    remove an offset a channel shares across images, which early training pushes the features towards; with
    8 groups the canaries of the tiny profile were learnt late and unreliably in 300 steps (class-word loss
    0.11 or 0.52 in two runs), with 16 groups 0.09.
    """

    def __init__(self, channels: list[int], out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for ch in channels:
            groups = math.gcd(ch, NORM_GROUPS)
            layers += [nn.Conv2d(in_ch, ch, 3, stride=2, padding=1, bias=False), nn.GroupNorm(groups, ch), nn.GELU(),
                       nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.GroupNorm(groups, ch), nn.GELU()]
            in_ch = ch
        self.body = nn.Sequential(*layers)
        self.proj = nn.Linear(in_ch, out_dim, bias=False)
        for layer in self.body:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.body(pixels)  # (M, C, h, w)
        tokens = grid.flatten(2).transpose(1, 2)  # (M, h*w, C)
        return self.proj(tokens)


class Attention(nn.Module):
    """Multi-head attention on SDPA; queries and keys/values may come from different sequences."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
                causal: bool = False, rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        q = self.split(self.q(x))
        k, v = (self.split(t) for t in self.kv(context).chunk(2, dim=-1))
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class ViTEncoder(nn.Module):
    """A small ViT (patch embedding + pre-LN blocks), for users who prefer it to the conv encoder."""

    def __init__(self, image_size: int, patch: int, width: int, depth: int, heads: int, out_dim: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.embed = nn.Conv2d(3, width, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, width) * 0.02)
        self.blocks = nn.ModuleList(nn.ModuleList([nn.LayerNorm(width), Attention(width, heads), _mlp(width, 4)])
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixels).flatten(2).transpose(1, 2) + self.pos
        for norm, attn, mlp in self.blocks:
            h = norm(x)
            x = x + attn(h, h)
            x = x + mlp(x)
        return self.proj(self.norm(x))


class OpenClipEncoder(nn.Module):
    """Frozen open_clip vision tower from a *local* checkpoint (nothing is downloaded); its patch tokens."""

    def __init__(self, arch: str, checkpoint: str, out_dim: int, image_size: int):
        super().__init__()
        try:
            import open_clip
        except ImportError as err:  # an optional extra: the default encoders need nothing beyond torch
            raise ValueError("smoke.model.vision.kind=open_clip needs the open_clip_torch package") from err
        clip = open_clip.create_model(arch, pretrained=checkpoint)  # a local file path: nothing is downloaded
        self.visual = clip.visual
        if not hasattr(self.visual, "transformer"):
            raise ValueError(f"open_clip {arch}: only ViT towers give patch tokens; pick a ViT architecture")
        expected = self.visual.image_size
        expected = expected[0] if isinstance(expected, (tuple, list)) else expected
        if int(expected) != image_size:
            raise ValueError(f"open_clip {arch} expects {expected} px images; set smoke.data.image_size={expected}")
        self.visual.output_tokens = True
        self.proj = nn.Linear(self.visual.transformer.width, out_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        _, tokens = self.visual(pixels)
        return self.proj(tokens)


def build_vision_encoder(cfg: ModelConfig) -> nn.Module:
    vc = cfg.vision
    if vc.kind == "open_clip":
        if not (vc.checkpoint and vc.open_clip_arch):
            raise ValueError("vision.kind=open_clip needs vision.checkpoint (a local file) and vision.open_clip_arch")
        encoder: nn.Module = OpenClipEncoder(vc.open_clip_arch, vc.checkpoint, cfg.d_model, cfg.image_size)
        for p in encoder.visual.parameters():
            p.requires_grad_(False)
        return encoder
    if vc.kind == "conv":
        encoder = ConvEncoder(list(vc.channels), cfg.d_model)
    elif vc.kind == "vit":
        encoder = ViTEncoder(cfg.image_size, vc.patch_size, vc.width, vc.depth, vc.heads, cfg.d_model)
    else:
        raise ValueError(f"unknown vision encoder kind {vc.kind!r} (conv, vit or open_clip)")
    if vc.checkpoint:
        state = torch.load(vc.checkpoint, map_location="cpu", weights_only=True)
        encoder.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    if vc.freeze:
        for p in encoder.parameters():
            p.requires_grad_(False)
    return encoder


class PerceiverResampler(nn.Module):
    """Flamingo's resampler: learned latents attend to [image features; latents]; a fixed token count out."""

    def __init__(self, dim: int, latents: int, layers: int, heads: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim), Attention(dim, heads), _mlp(dim, 4)])
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lat = self.latents.unsqueeze(0).expand(features.shape[0], -1, -1)
        for norm_f, norm_l, attn, mlp in self.layers:
            ln = norm_l(lat)
            lat = lat + attn(ln, torch.cat([norm_f(features), ln], dim=1))
            lat = lat + mlp(lat)
        return self.norm(lat)


# ------------------------------------------------------------------------------------------- language


def rotary_tables(length: int, head_dim: int, device: torch.device, position_ids: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (L, head_dim/2) by position; with `position_ids` (B, L) per token: (B, 1, L, head_dim/2)."""
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
    if position_ids is not None:
        angles = angles[position_ids].unsqueeze(1)
    return angles.cos(), angles.sin()


def document_mask(doc_index: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) boolean: block-diagonal causal self-attention, True where query l may see key k (k ≤ l, one
    document). Padding (document 0) sees earlier padding only, so no softmax row is empty."""
    length = doc_index.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=doc_index.device).tril()
    return ((doc_index.unsqueeze(2) == doc_index.unsqueeze(1)) & causal).unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = _mlp(dim, ffn_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (packed rows): `document_mask`; None: plain causal attention."""
        h = self.norm(x)
        x = x + self.drop(self.attn(h, h, mask=mask, causal=True, rotary=rotary))
        return x + self.mlp(x)


class GatedCrossAttentionBlock(nn.Module):
    """GATED XATTN-DENSE: cross-attention to the φ-named image's visual tokens, then a dense FFN, each behind tanh(α).

    The visual tokens of a sequence come as `(B, N * latents, d)`: slot n occupies rows n*latents..(n+1)*latents.
    Position l may attend only to slot φ[l] - 1; rows with φ = 0 are multiplied by zero after the attention
    (an all-masked softmax row would be NaN), so the block is the identity there, bit for bit.
    """

    def __init__(self, dim: int, heads: int, ffn_mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = _mlp(dim, ffn_mult)
        self.alpha_xattn = nn.Parameter(torch.zeros(()))
        self.alpha_dense = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, visual: torch.Tensor, mask: torch.Tensor, has_image: torch.Tensor
                ) -> torch.Tensor:
        attended = self.attn(self.norm(x), visual, mask=mask)
        x = x + torch.tanh(self.alpha_xattn) * attended * has_image
        return x + torch.tanh(self.alpha_dense) * self.mlp(x) * has_image

    def gates(self) -> tuple[float, float]:
        return abs(math.tanh(self.alpha_xattn.item())), abs(math.tanh(self.alpha_dense.item()))


def xattn_mask(phi: torch.Tensor, slots: int, latents: int) -> torch.Tensor:
    """(B, 1, L, slots*latents) boolean: True where position l may attend to a visual token.

    φ = 0 rows allow everything (finite softmax); their output is zeroed by the block's `has_image` factor.
    """
    slot_of_token = torch.arange(slots, device=phi.device).repeat_interleave(latents)  # (slots*latents,)
    allowed = slot_of_token.view(1, 1, -1) == (phi - 1).unsqueeze(-1)
    allowed = allowed | (phi == 0).unsqueeze(-1)
    return allowed.unsqueeze(1)


def own_document_phi(phi: torch.Tensor, doc_index: torch.Tensor, slot_doc: torch.Tensor) -> torch.Tensor:
    """φ where it names an image slot of the token's own document, else 0 (no visual signal at all there).

    `slot_doc` (B, N): the document of each row slot (0: empty). Packed rows only: the trainer's own guard that
    cross-attention stays inside a document, whatever φ says."""
    named = slot_doc.gather(1, (phi - 1).clamp(min=0, max=slot_doc.shape[1] - 1))
    return torch.where((phi > 0) & (named == doc_index), phi, torch.zeros_like(phi))


class FlamingoLM(nn.Module):
    """Decoder-only LM with a gated cross-attention block before every k-th layer, plus the visual front end."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(DecoderLayer(cfg.d_model, cfg.lm_heads, cfg.ffn_mult, cfg.dropout)
                                    for _ in range(cfg.lm_layers))
        self.xattn = nn.ModuleDict({
            str(i): GatedCrossAttentionBlock(cfg.d_model, cfg.xattn_heads, cfg.ffn_mult)
            for i in range(cfg.lm_layers) if i % cfg.xattn_every == 0})
        self.norm = nn.LayerNorm(cfg.d_model)
        self.vision = build_vision_encoder(cfg)
        self.resampler = PerceiverResampler(cfg.d_model, cfg.resampler_latents, cfg.resampler_layers,
                                            cfg.resampler_heads)
        self.register_buffer("pixel_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)
        self.apply(self._init)
        for block in self.xattn.values():  # the init above must not touch the gates: α = 0
            nn.init.zeros_(block.alpha_xattn)
            nn.init.zeros_(block.alpha_dense)

    @staticmethod
    def _init(module: nn.Module) -> None:
        # Fan-in scaled weights (PyTorch's default), not GPT-2's fixed 0.02: at the small widths of a smoke
        # model 0.02 shrinks every branch so much that the image signal is lost before the gates open.
        # Unit-variance token embeddings for the same reason: the residual stream starts at the scale of the
        # gated blocks' output (unit-norm visual tokens through fan-in projections). With GPT-2's 0.02 the
        # first block's cross-attention output is ≥10x the token embedding it is added to, so any opening of
        # a gate drowns the token identity at every position after an image, and the gates close for good.
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def train(self, mode: bool = True) -> FlamingoLM:
        """A frozen vision tower stays in eval mode: its normalisation statistics and dropout must not move."""
        super().train(mode)
        frozen = getattr(self.vision, "visual", None) if self.cfg.vision.kind == "open_clip" else (
            self.vision if self.cfg.vision.freeze else None)
        if frozen is not None:
            frozen.eval()
        return self

    # --- parts, exposed so the trainer can freeze / compile them separately

    def lm_parameters(self) -> list[nn.Parameter]:
        return [*self.embed.parameters(), *self.layers.parameters(), *self.norm.parameters()]

    def encode_images(self, images: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
        """uint8 (B, N, 3, S, S) + filled (B, N) → visual tokens (B, N*latents, d); empty slots stay zero."""
        b, n = filled.shape
        out = torch.zeros(b, n, self.cfg.resampler_latents, self.cfg.d_model, device=images.device,
                          dtype=self.embed.weight.dtype)
        if filled.any():
            pixels = images[filled].float().div_(255.0)
            pixels = (pixels - self.pixel_mean) / self.pixel_std
            tokens = self.resampler(self.vision(pixels))
            out = out.to(tokens.dtype)
            out[filled] = tokens
        return out.view(b, n * self.cfg.resampler_latents, self.cfg.d_model)

    def forward(self, tokens: torch.Tensor, phi: torch.Tensor, images: torch.Tensor | None = None,
                filled: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                packing: PackedRows | None = None) -> torch.Tensor:
        """Logits (B, L, vocab). Without images (and without precomputed `visual`) the model is the text-only LM.
        `packing` (packed rows): the documents of each row, kept apart in every attention."""
        x = self.embed(tokens)
        length = tokens.shape[1]
        head_dim = self.cfg.d_model // self.cfg.lm_heads
        self_mask = None
        if packing is None:
            rotary = rotary_tables(length, head_dim, tokens.device)
        else:
            rotary = rotary_tables(length, head_dim, tokens.device, packing.position_ids)
            self_mask = document_mask(packing.doc_index)
            phi = own_document_phi(phi, packing.doc_index, packing.slot_doc)
        if visual is None and images is not None:
            visual = self.encode_images(images, filled)
        if visual is not None:
            slots = visual.shape[1] // self.cfg.resampler_latents
            mask = xattn_mask(phi, slots, self.cfg.resampler_latents)
            has_image = (phi > 0).unsqueeze(-1).to(x.dtype)
            visual = visual.to(x.dtype)
        for i, layer in enumerate(self.layers):
            block = self.xattn[str(i)] if str(i) in self.xattn else None
            if block is not None and visual is not None:
                x = block(x, visual, mask, has_image.to(x.dtype))
            x = layer(x, rotary, self_mask)
        # Tied output head, scaled by 1/sqrt(d) so that unit-variance embeddings give unit-scale logits at init.
        return F.linear(self.norm(x), self.embed.weight) * self.cfg.d_model ** -0.5

    def gates(self) -> dict[str, tuple[float, float]]:
        """|tanh α| of each block: (cross-attention, dense)."""
        return {name: block.gates() for name, block in self.xattn.items()}


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
