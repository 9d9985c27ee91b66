"""Runs OpenFlamingo's own code over m3w's output, inside the interop virtualenv (tests/interop/make_venv.sh
prints where it is), importing m3w from this checkout.

    "$(bash tests/interop/make_venv.sh)/bin/python" tests/interop/openflamingo_check.py MMC4 SHARDS EXPECTED RESULT

1. `preprocess_interleaved` (open_flamingo/train/data.py) over every sample of an `m3w export mmc4`, with a
   tokenizer made from m3w's tokenizer.json plus OpenFlamingo's `<|endofchunk|>` and `<image>`, and open_clip's
   torchvision transform as the image processor; the text between `<image>` tokens is recorded for each document;
2. OpenFlamingo's `Flamingo` built as its factory builds it, minus the downloads (a tiny LLaMA-config language
   model from transformers and a tiny open_clip vision tower, random weights), and a few AdamW steps on those
   batches: the losses are recorded;
3. OpenFlamingo's conditioning on m3w's shards: the same model runs on the shards' sequences, the media
   locations its language model computes from the token ids are captured, and a `MaskedCrossAttention` (its
   class, weights set so each image's value is a one-hot of its index) reads out which image every token
   attends to: that is OpenFlamingo's `text_time`, recorded beside m3w's φ for every real token.

Everything is written to RESULT_JSON; the assertions live in tests/test_export_openflamingo.py.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import open_flamingo
import torch

sys.path.insert(0, str(Path(open_flamingo.__file__).parent / "train"))  # data.py imports `data_utils` top-level
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout under test: m3w's own code

from data import preprocess_interleaved  # noqa: E402 - OpenFlamingo's own MMC4 preprocessing
from open_flamingo.src.flamingo import Flamingo  # noqa: E402
from open_flamingo.src.flamingo_lm import FlamingoLMMixin  # noqa: E402
from open_flamingo.src.helpers import MaskedCrossAttention  # noqa: E402
from open_flamingo.src.utils import extend_instance  # noqa: E402

from schemas.shards import SpecialTokens, iter_samples, read_manifest  # noqa: E402 - m3w's own reader

EOC = "<|endofchunk|>"
MEDIA = "<image>"
IMAGE_SIZE = 64
MAX_TOKENS = 256  # OpenFlamingo's default for MMC4
MAX_IMAGES = 6  # OpenFlamingo's default --mmc4_max_num_images
MIN_IMAGES = 2  # so no sample meets its "keep single-image samples half of the time" rule (random)
STEPS = 12
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}


def openflamingo_tokenizer(tokenizer_file: Path, special: dict):
    """m3w's tokenizer as a transformers tokenizer, with OpenFlamingo's special tokens added as its factory does."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), eos_token=special["eos"]["token"],
                                        pad_token=special["pad"]["token"])
    tokenizer.add_special_tokens({"additional_special_tokens": [EOC, MEDIA]})
    return tokenizer


def tiny_flamingo(tokenizer):
    """OpenFlamingo's `create_model_and_transforms`, step by step, with tiny random backbones instead of downloads."""
    import open_clip
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        config_file = Path(folder) / "m3w-tiny-vit.json"
        config_file.write_text(json.dumps(TINY_CLIP))
        open_clip.add_model_config(config_file)
    vision_encoder, _, image_processor = open_clip.create_model_and_transforms("m3w-tiny-vit", pretrained=None)
    vision_encoder.visual.output_tokens = True
    # A LLaMA-architecture LM (one of the factory's known decoders): GPT-2's blocks get positional arguments from
    # transformers 4.5x, which OpenFlamingo 2.0.1's FlamingoLayer.forward(lang_x, attention_mask, **kwargs) refuses.
    lang_encoder = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                                max_position_embeddings=8192))
    extend_instance(lang_encoder, FlamingoLMMixin)
    lang_encoder.set_decoder_layers_attr_name("model.layers")
    lang_encoder.resize_token_embeddings(len(tokenizer))
    model = Flamingo(vision_encoder, lang_encoder, tokenizer.encode(EOC)[-1], tokenizer.encode(MEDIA)[-1],
                     vis_dim=open_clip.get_model_config("m3w-tiny-vit")["vision_cfg"]["width"],
                     cross_attn_every_n_layers=1)
    model.requires_grad_(False)  # the factory's freezing: perceiver, gated cross-attention, input embeddings train
    model.perceiver.requires_grad_(True)
    model.lang_encoder.gated_cross_attn_layers.requires_grad_(True)
    model.lang_encoder.get_input_embeddings().requires_grad_(True)
    return model, image_processor


def mmc4_samples(mmc4_dir: Path) -> list[bytes]:
    manifest = json.loads((mmc4_dir / "manifest.json").read_text())
    out = []
    for shard in manifest["shards"]:
        with tarfile.open(mmc4_dir / shard["file"]) as tar:
            out += [tar.extractfile(m).read() for m in tar if m.isfile() and m.name.endswith(".json")]
    return out


def segments(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer) -> list[str]:
    """The text between `<image>` tokens, decoded without special tokens, whitespace collapsed."""
    media = tokenizer.convert_tokens_to_ids(MEDIA)
    ids = input_ids[attention_mask.bool()].tolist()
    out, current = [], []
    for token in ids + [media]:
        if token == media:
            out.append(" ".join(tokenizer.decode(current, skip_special_tokens=True).split()))
            current = []
        else:
            current.append(token)
    return out


def expected_segments(nodes: list[dict], tokenizer) -> list[str]:
    """m3w's placement: the document's text between the images OpenFlamingo keeps (it skips those of ≤ 10 kB)."""
    out, current = [], []
    for node in nodes:
        if "text" in node:
            current.append(node["text"])
        elif node["bytes"] // 1000 > 10:
            out.append(current)
            current = []
    out.append(current)
    return [" ".join(tokenizer.decode(tokenizer.encode(" ".join(texts), add_special_tokens=False)).split())
            for texts in out]


def preprocess_all(samples: list[bytes], tokenizer, image_processor, expected: dict, max_tokens: int,
                   max_images: int) -> tuple[list, dict]:
    batches, documents = [], {}
    for raw in samples:
        doc_id = json.loads(raw)["doc_id"]
        try:
            images, (input_ids, attention_mask) = preprocess_interleaved(
                [raw], tokenizer, image_processor, sim_threshold=0.24, min_num_images=MIN_IMAGES,
                max_num_images=max_images, max_tokens=max_tokens)
        except ValueError as error:
            documents[doc_id] = {"tensors": False, "error": str(error)}
            continue
        documents[doc_id] = {"tensors": True,
                             "segments": segments(input_ids[0], attention_mask[0], tokenizer),
                             "expected_segments": expected_segments(expected[doc_id], tokenizer),
                             "image_tokens": int((input_ids == tokenizer.convert_tokens_to_ids(MEDIA)).sum()),
                             "real_tokens": int(attention_mask.sum())}
        batches.append((images, input_ids, attention_mask))
    return batches, documents


def train(model, batches: list, tokenizer, batch_size: int = 4) -> list[float]:
    """A few AdamW steps as OpenFlamingo's train loop takes them (labels: pads and <image> masked)."""
    media = tokenizer.convert_tokens_to_ids(MEDIA)
    groups = [batches[i:i + batch_size] for i in range(0, len(batches), batch_size)][:2]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    model.train()
    for step in range(STEPS):
        group = groups[step % len(groups)]
        vision_x = torch.stack([images for images, _, _ in group]).unsqueeze(2)  # B, T_img, F=1, C, H, W
        input_ids = torch.cat([ids for _, ids, _ in group])
        attention_mask = torch.cat([mask for _, _, mask in group])
        labels = input_ids.clone()
        labels[labels == tokenizer.pad_token_id] = -100
        labels[labels == media] = -100
        loss = model(vision_x=vision_x, lang_x=input_ids, attention_mask=attention_mask, labels=labels)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def conditioning_on_shards(model, shards_dir: Path, image_processor) -> dict:
    """OpenFlamingo's text_time on every real token of m3w's shards, beside m3w's φ."""
    manifest = read_manifest(str(shards_dir))
    special = SpecialTokens.from_manifest(manifest)
    slots = int(manifest["max_images"])
    captured: list[torch.Tensor] = []
    layer = model.lang_encoder._get_decoder_layers()[0].gated_cross_attn_layer.attn
    hook = layer.register_forward_pre_hook(lambda _m, _a, kwargs: captured.append(kwargs["media_locations"]),
                                           with_kwargs=True)
    # OpenFlamingo's MaskedCrossAttention as a probe: keys 0 (attention spreads evenly over what the mask allows),
    # values = the one-hot index of the image each latent belongs to, so the output names the attended image.
    probe = MaskedCrossAttention(dim=slots, dim_visual=slots, dim_head=slots, heads=1,
                                 only_attend_immediate_media=True)
    with torch.no_grad():
        probe.to_kv.weight.zero_()
        probe.to_kv.weight[slots:] = torch.eye(slots)
        probe.to_out.weight.copy_(torch.eye(slots))
    from PIL import Image as PILImage

    compared = mismatched = sequences = 0
    examples = []
    model.eval()
    for sample in iter_samples(str(shards_dir)):
        ids = torch.from_numpy(sample.input_ids.astype(np.int64))[None]
        mask = torch.from_numpy(sample.attention_mask.astype(bool))[None]
        vision = torch.zeros(1, slots, 1, 3, IMAGE_SIZE, IMAGE_SIZE)
        for slot, data in enumerate(sample.image_bytes):
            vision[0, slot, 0] = image_processor(PILImage.open(io.BytesIO(data)).convert("RGB"))
        captured.clear()
        with torch.no_grad():
            model(vision_x=vision, lang_x=ids, attention_mask=mask.long())
            media = torch.eye(slots)[None, :, None, :].expand(1, slots, 4, slots)  # B, T_img, latents, dim
            attended = probe(torch.zeros(1, ids.shape[1], slots), media, media_locations=captured[0])[0]
        text_time = torch.where(attended.max(dim=-1).values > 0.5, attended.argmax(dim=-1) + 1, 0)
        phi = torch.from_numpy(sample.phi.astype(np.int64))
        real = mask[0]
        compared += int(real.sum())
        wrong = int((text_time[real] != phi[real]).sum())
        mismatched += wrong
        sequences += 1
        if wrong and len(examples) < 3:
            examples.append({"key": sample.key, "text_time": text_time[real].tolist(), "phi": phi[real].tolist()})
        assert captured[0].shape == ids.shape and bool((captured[0] == (ids == special.image)).all())
    hook.remove()
    return {"sequences": sequences, "tokens_compared": compared, "mismatched": mismatched, "examples": examples,
            "image_tokens": int(sum((s.input_ids == special.image).sum() for s in iter_samples(str(shards_dir))))}


def main(mmc4_dir: str, shards_dir: str, expected_json: str, result_json: str) -> None:
    random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    manifest = read_manifest(shards_dir)
    tokenizer = openflamingo_tokenizer(Path(shards_dir) / manifest["tokenizer"]["file"],
                                       manifest["tokenizer"]["special_tokens"])
    model, image_processor = tiny_flamingo(tokenizer)
    expected = json.loads(Path(expected_json).read_text())
    samples = mmc4_samples(Path(mmc4_dir))
    # Whole documents (no truncation) for the placement check; OpenFlamingo's defaults for the training batches.
    _, whole = preprocess_all(samples, tokenizer, image_processor, expected, max_tokens=8192, max_images=50)
    batches, _ = preprocess_all(samples, tokenizer, image_processor, expected, MAX_TOKENS, MAX_IMAGES)
    result = {
        "tokenizer": {"image_id": tokenizer.convert_tokens_to_ids(MEDIA),
                      "m3w_image_id": manifest["tokenizer"]["special_tokens"]["image"]["id"],
                      "media_token_id": model.media_token_id, "eoc_id": model.eoc_token_id},
        "documents": whole,
        "batches": len(batches),
        "losses": train(model, batches, tokenizer),
        "conditioning": conditioning_on_shards(model, Path(shards_dir), image_processor),
    }
    Path(result_json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:5])
