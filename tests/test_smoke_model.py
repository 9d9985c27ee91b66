"""The smoke model follows the contract's cross-attention semantics (fast unit tests, no shards)."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

from schemas.shards import compute_phi
from train_smoke.data import Batch
from train_smoke.model import FlamingoLM, ModelConfig, VisionConfig, xattn_mask
from train_smoke.train import mean_loss, select_phi, shuffle_batch_images, token_nll
from train_smoke.verdict import permuted_slots, shift_phi

IMAGE, EOC, EOS, PAD = 2, 3, 1, 0


def tiny_model(seed: int = 0, **overrides) -> FlamingoLM:
    torch.manual_seed(seed)
    values = dict(vocab_size=40, d_model=32, lm_layers=2, lm_heads=2, xattn_every=1, xattn_heads=2,
                  resampler_latents=3, resampler_layers=1, resampler_heads=2, image_size=16,
                  vision=VisionConfig(channels=[8, 16]))
    cfg = ModelConfig(**{**values, **overrides})
    return FlamingoLM(cfg).eval()


def open_gates(model: FlamingoLM, value: float = 1.0) -> None:
    with torch.no_grad():
        for block in model.xattn.values():
            block.alpha_xattn.fill_(value)
            block.alpha_dense.fill_(value)


def example_batch(generator: torch.Generator) -> Batch:
    """Two sequences: one opening with text (φ = 0 prefix), one opening with an image; right-padded."""
    rows = [[10, 11, 12, EOC, IMAGE, 13, 14, EOC, IMAGE, 15, EOC, EOS, PAD, PAD],
            [IMAGE, 16, 17, 18, EOC, IMAGE, 19, 20, 21, 22, EOC, EOS, PAD, PAD]]
    ids = np.array(rows)
    mask = ids != PAD
    phi, phi_next = compute_phi(ids, IMAGE, mask)
    targets = mask & (ids != IMAGE) & (ids != PAD)
    targets[:, 0] = False
    images = torch.randint(0, 256, (2, 3, 3, 16, 16), dtype=torch.uint8, generator=generator)
    filled = torch.tensor([[True, True, False], [True, True, False]])
    images[~filled] = 0
    return Batch(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask),
                 phi=torch.from_numpy(phi.astype(np.int64)), phi_next=torch.from_numpy(phi_next.astype(np.int64)),
                 targets=torch.from_numpy(targets), images=images, filled=filled)


def logits(model: FlamingoLM, batch: Batch, phi: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.input_ids, batch.phi if phi is None else phi, batch.images, batch.filled)


def test_gates_start_closed_so_the_untrained_model_is_the_text_only_lm():
    model = tiny_model()
    batch = example_batch(torch.Generator().manual_seed(0))
    assert all(x == 0.0 and d == 0.0 for x, d in model.gates().values())
    text_only = model(batch.input_ids, batch.phi)
    assert torch.equal(logits(model, batch), text_only)


@pytest.mark.parametrize("d_model", [32, 64, 256])
def test_residual_stream_starts_at_the_scale_of_the_gated_blocks_output(d_model):
    """A gate that opens must add the image to the token, not drown it: at init the first gated block's
    cross-attention output is no larger than the token embedding it is added to (with GPT-2's σ = 0.02
    embeddings it was 10-18x larger and the demo's gates closed for good), and the logits are unit-scale."""
    model = tiny_model(d_model=d_model, lm_heads=2, xattn_heads=2, resampler_heads=2)
    batch = example_batch(torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = model.embed(batch.input_ids)
        visual = model.encode_images(batch.images, batch.filled)
        slots = visual.shape[1] // model.cfg.resampler_latents
        mask = xattn_mask(batch.phi, slots, model.cfg.resampler_latents)
        block = model.xattn["0"]
        attended = block.attn(block.norm(tokens), visual, mask=mask)[batch.phi > 0]
        out = logits(model, batch)
    ratio = attended.pow(2).mean().sqrt() / tokens.pow(2).mean().sqrt()
    assert 0.05 < ratio < 1.0, ratio
    assert 0.3 < out.std() < 3.0, out.std()


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_no_leak_where_phi_is_zero_and_images_matter_elsewhere(train_mode):
    model = tiny_model().train(train_mode)
    open_gates(model)
    gen = torch.Generator().manual_seed(1)
    batch = example_batch(gen)
    other = Batch(**{**batch.__dict__, "images": torch.randint(0, 256, batch.images.shape, dtype=torch.uint8,
                                                                 generator=gen)})
    a, b = logits(model, batch), logits(model, other)
    dark = (batch.phi == 0) & batch.attention_mask
    assert dark.sum() == 4  # the text (and its <EOC>) before the first image of sequence 0
    assert torch.equal(a[dark], b[dark])  # bit-identical, not merely close
    lit = (batch.phi > 0) & batch.attention_mask
    assert (a[lit] - b[lit]).abs().amax(-1).min() > 0  # every position that sees an image depends on it


@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_a_position_sees_only_the_image_phi_names(train_mode):
    model = tiny_model().train(train_mode)  # train mode: normalisation must not mix the images of a batch
    open_gates(model)
    batch = example_batch(torch.Generator().manual_seed(2))
    changed = batch.images.clone()
    changed[:, 1] = 255 - changed[:, 1]  # only the second image of each sequence changes
    a = logits(model, batch)
    b = logits(model, Batch(**{**batch.__dict__, "images": changed}))
    before_second = (batch.phi == 1) & batch.attention_mask
    # Positions that name image 1 (and everything causally before image 2) are untouched by image 2.
    assert torch.equal(a[before_second], b[before_second])
    assert not torch.equal(a[batch.phi == 2], b[batch.phi == 2])


@pytest.mark.parametrize("kind", ["conv", "vit"])
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_a_sequence_never_sees_another_sequences_images(kind, train_mode):
    model = tiny_model(vision=VisionConfig(kind=kind, channels=[8, 16], patch_size=4, width=16, depth=1,
                                           heads=2)).train(train_mode)
    open_gates(model)
    gen = torch.Generator().manual_seed(4)
    batch = example_batch(gen)
    changed = batch.images.clone()
    changed[1] = torch.randint(0, 256, changed[1].shape, dtype=torch.uint8, generator=gen)  # only sequence 1's
    changed[~batch.filled] = 0
    a = logits(model, batch)
    b = logits(model, Batch(**{**batch.__dict__, "images": changed}))
    assert torch.equal(a[0], b[0])  # every position of sequence 0, bit for bit
    assert not torch.equal(a[1], b[1])


def test_xattn_mask_selects_one_slot_per_position():
    phi = torch.tensor([[0, 1, 1, 2, 3]])
    mask = xattn_mask(phi, slots=3, latents=2)[0, 0]
    assert mask.shape == (5, 6)
    assert mask[0].all()  # φ = 0: any finite row, zeroed afterwards by the block
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert mask[3].tolist() == [False, False, True, True, False, False]
    assert mask[4].tolist() == [False, False, False, False, True, True]


def test_loss_ignores_pad_and_image_targets_but_counts_eoc():
    model = tiny_model()
    batch = example_batch(torch.Generator().manual_seed(3))
    clean = logits(model, batch)
    base = mean_loss(clean, batch)
    for token, counted in ((PAD, False), (IMAGE, False), (EOC, True)):
        noisy = clean.clone()
        predicting = batch.input_ids[:, 1:] == token  # the logits at l predict token l+1
        noisy[:, :-1][predicting] += 5 * torch.randn(int(predicting.sum()), noisy.shape[-1])
        assert torch.allclose(mean_loss(noisy, batch), base) is not counted, token


def test_token_nll_is_the_negative_log_probability_of_the_next_token_at_every_position():
    model = tiny_model()
    batch = example_batch(torch.Generator().manual_seed(5))
    out = logits(model, batch)
    nll, targets = token_nll(out, batch)
    following = batch.input_ids[:, 1:]
    expected = -torch.log_softmax(out[:, :-1].double(), dim=-1).gather(-1, following.unsqueeze(-1)).squeeze(-1)
    assert nll.shape == following.shape and targets.shape == following.shape
    assert torch.allclose(nll.double(), expected, atol=1e-5)
    assert torch.equal(targets, batch.targets[:, 1:])


def test_importing_the_trainer_turns_huge_pages_on_for_torch_unless_the_user_chose():
    import subprocess

    probe = "import os, train_smoke; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    run = [sys.executable, "-c", probe]
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.strip() == "1"
    chosen = subprocess.run(run, env={**env, "THP_MEM_ALLOC_ENABLE": "0"}, capture_output=True, text=True, check=True)
    assert chosen.stdout.strip() == "0"


def test_phi_next_choice_is_seeded_and_mixes_both():
    batch = example_batch(torch.Generator().manual_seed(4))
    big = Batch(**{k: v if v is None else v.repeat(32, *([1] * (v.dim() - 1))) for k, v in batch.__dict__.items()})
    first = select_phi(big, 0.5, torch.Generator().manual_seed(7))
    again = select_phi(big, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    uses_next = (first == big.phi_next).all(1) & ~(first == big.phi).all(1)
    assert 0 < int(uses_next.sum()) < 64
    assert torch.equal(select_phi(big, 0.0, None), big.phi)
    assert torch.equal(select_phi(big, 1.0, None), big.phi_next)


def test_control_shuffle_moves_images_between_sequences():
    batch = example_batch(torch.Generator().manual_seed(5))
    shuffled = shuffle_batch_images(batch, torch.Generator().manual_seed(0))
    assert torch.equal(shuffled.images[~batch.filled], batch.images[~batch.filled])
    assert sorted(map(bytes, shuffled.images[batch.filled].flatten(1).numpy())) == \
        sorted(map(bytes, batch.images[batch.filled].flatten(1).numpy()))
    assert not torch.equal(shuffled.images, batch.images)


def test_phi_shifts():
    phi = torch.tensor([[1, 1, 1, 2, 2, 0, 0]])
    mask = torch.tensor([[True] * 5 + [False] * 2])
    assert shift_phi(phi, mask, 1).tolist() == [[0, 1, 1, 1, 2, 0, 0]]
    assert shift_phi(phi, mask, -1).tolist() == [[1, 1, 2, 2, 2, 0, 0]]


def test_permuted_slots_move_every_image_of_multi_image_sequences():
    class Table:
        slots = torch.tensor([[0, 1, 2], [3, -1, -1], [4, 5, -1]])

        def __len__(self):
            return 3

    out = permuted_slots(Table())
    assert out.tolist() == [[1, 2, 0], [3, -1, -1], [5, 4, -1]]


@pytest.mark.parametrize("kind", ["conv", "vit"])
def test_vision_encoders_train_end_to_end(kind):
    vision = VisionConfig(kind=kind, channels=[8, 16], patch_size=4, width=16, depth=1, heads=2)
    model = tiny_model(vision=vision)
    model.train()
    open_gates(model, 0.5)
    batch = example_batch(torch.Generator().manual_seed(6))
    mean_loss(model(batch.input_ids, batch.phi, batch.images, batch.filled), batch).backward()
    grads = [p.grad for p in model.vision.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_vision_checkpoint_loads_and_freezes(tmp_path):
    source = tiny_model(seed=3)
    path = tmp_path / "encoder.pt"
    torch.save(source.vision.state_dict(), path)
    model = tiny_model(seed=9, vision=VisionConfig(channels=[8, 16], checkpoint=str(path), freeze=True))
    for (name, a), (_, b) in zip(source.vision.state_dict().items(), model.vision.state_dict().items()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in model.vision.parameters())
    model.train()  # a frozen encoder stays in eval mode (its statistics and dropout fixed)
    assert not model.vision.training and model.layers.training


def test_open_clip_needs_a_local_checkpoint():
    with pytest.raises(ValueError, match="checkpoint"):
        tiny_model(vision=VisionConfig(kind="open_clip"))


def test_open_clip_tower_is_loaded_from_the_given_file_and_frozen(monkeypatch):
    """The adapter's contract with open_clip (create_model with a local file, ViT patch tokens), on a stand-in."""
    calls = []

    class Tower(torch.nn.Module):
        image_size = (16, 16)

        def __init__(self):
            super().__init__()
            self.transformer = types.SimpleNamespace(width=12)
            self.patch = torch.nn.Conv2d(3, 12, 4, stride=4)
            self.output_tokens = False

        def forward(self, pixels):
            tokens = self.patch(pixels).flatten(2).transpose(1, 2)
            return tokens.mean(1), tokens

    def create_model(arch, pretrained=None):
        calls.append((arch, pretrained))
        return types.SimpleNamespace(visual=Tower())

    monkeypatch.setitem(sys.modules, "open_clip", types.SimpleNamespace(create_model=create_model))
    model = tiny_model(vision=VisionConfig(kind="open_clip", checkpoint="/models/clip.bin", open_clip_arch="ViT-T"))
    assert calls == [("ViT-T", "/models/clip.bin")]
    assert model.vision.visual.output_tokens is True
    assert not any(p.requires_grad for p in model.vision.visual.parameters())
    assert all(p.requires_grad for p in model.vision.proj.parameters())
    open_gates(model)
    batch = example_batch(torch.Generator().manual_seed(8))
    assert logits(model, batch).shape == (2, 14, 40)
    with pytest.raises(ValueError, match="image_size=16"):
        tiny_model(image_size=32, vision=VisionConfig(kind="open_clip", checkpoint="x", open_clip_arch="ViT-T"))


def test_bf16_autocast_path_trains_and_keeps_the_leak_at_zero():
    """The GPU path runs under bf16 autocast; CPU autocast exercises the same dtype plumbing here."""
    model = tiny_model()
    open_gates(model)
    gen = torch.Generator().manual_seed(9)
    batch = example_batch(gen)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mean_loss(model(batch.input_ids, batch.phi, batch.images, batch.filled), batch)
    loss.backward()
    assert torch.isfinite(loss) and model.vision.proj.weight.grad is not None
    model.eval()
    other = Batch(**{**batch.__dict__, "images": 255 - batch.images})
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = model(batch.input_ids, batch.phi, batch.images, batch.filled)
        b = model(other.input_ids, other.phi, other.images, other.filled)
    dark = (batch.phi == 0) & batch.attention_mask
    assert torch.equal(a[dark], b[dark]) and not torch.equal(a, b)
