"""The tokenizer the shards' ids refer to: any Hugging Face `tokenizers` JSON, or a byte-level BPE trained
on the run's own text, with the contract's special tokens `<image>`, `<EOC>`, end-of-sequence and `<pad>`.

The tokenizer travels as its JSON text (a plain string pickles and hashes cleanly); the exact file used
is written beside the shards and its sha256 goes into the manifest, so ids decode anywhere.

At scale the BPE never sees all text on one machine: `TrainTokenizer` keeps a deterministic sample
(documents whose doc_id hash falls below a rate, at most a fixed number of them — a Beam top-k
combiner) and trains on that sample sorted by hash, so the result does not depend on input order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from pipeline.shards.settings import ShardSettings

IMAGE_TOKEN = "<image>"
EOC_TOKEN = "<EOC>"
EOS_TOKEN = "<eos>"
PAD_TOKEN = "<pad>"

# End-of-sequence / padding tokens of common tokenizers, recognised so that their own tokens are used.
KNOWN_EOS = ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "[SEP]")
KNOWN_PAD = ("<pad>", "<|pad|>", "[PAD]", "<|padding|>")


class TokenizerError(ValueError):
    """A tokenizer file that cannot serve the contract (unreadable, or a configured token it lacks)."""


@dataclass(frozen=True)
class TokenizerInfo:
    """A prepared tokenizer: its JSON text, its hash and the ids of the contract's special tokens."""

    json: str
    sha256: str
    vocab_size: int
    special_tokens: dict[str, dict[str, Any]]  # role → {"token": str, "id": int}

    def id_of(self, role: str) -> int:
        return int(self.special_tokens[role]["id"])

    def manifest_entry(self, file_name: str) -> dict[str, Any]:
        return {"file": file_name, "sha256": self.sha256, "vocab_size": self.vocab_size,
                "special_tokens": self.special_tokens}


def _special(token: str) -> AddedToken:
    return AddedToken(token, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)


def _find_token(tokenizer: Tokenizer, configured: str | None, known: Iterable[str], default: str) -> str:
    """The configured token (must exist), else the first known one the tokenizer has, else `default`."""
    if configured:
        if tokenizer.token_to_id(configured) is None:
            raise TokenizerError(f"the tokenizer has no token {configured!r}")
        return configured
    return next((t for t in known if tokenizer.token_to_id(t) is not None), default)


def prepare_tokenizer(
    tokenizer: Tokenizer, eos_token: str | None = None, pad_token: str | None = None
) -> TokenizerInfo:
    """Add `<image>`, `<EOC>`, the end-of-sequence and `<pad>` tokens where absent; return the result.

    Existing tokens keep their ids (a pretrained model's embeddings stay valid); new ones go at the end.
    """
    roles = {
        "image": IMAGE_TOKEN,
        "eoc": EOC_TOKEN,
        "eos": _find_token(tokenizer, eos_token, KNOWN_EOS, EOS_TOKEN),
        "pad": _find_token(tokenizer, pad_token, KNOWN_PAD, PAD_TOKEN),
    }
    missing = [token for token in roles.values() if tokenizer.token_to_id(token) is None]
    if missing:
        tokenizer.add_special_tokens([_special(token) for token in missing])
    text = tokenizer.to_str()
    special = {role: {"token": token, "id": int(tokenizer.token_to_id(token))} for role, token in roles.items()}
    return TokenizerInfo(json=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                         vocab_size=int(tokenizer.get_vocab_size(with_added_tokens=True)), special_tokens=special)


def load_tokenizer_file(path: str, eos_token: str | None = None) -> TokenizerInfo:
    """A `tokenizers` JSON by path (any Beam filesystem), prepared for the contract."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            tokenizer = Tokenizer.from_str(handle.read().decode("utf-8"))
    except Exception as error:  # noqa: BLE001 - any failure here is the user's file, named in the message
        raise TokenizerError(f"cannot load tokenizer {path}: {error}") from error
    return prepare_tokenizer(tokenizer, eos_token=eos_token)


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int) -> TokenizerInfo:
    """A byte-level BPE trained on `texts` (in the given order), special tokens first (`<pad>` = 0).

    Byte-level: every string is encodable, nothing maps to an unknown token. NFC normalisation so
    the same text in two Unicode forms gets the same ids.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[_special(t) for t in (PAD_TOKEN, EOS_TOKEN, IMAGE_TOKEN, EOC_TOKEN)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return prepare_tokenizer(tokenizer)


def tokenizer_from_json(text: str) -> Tokenizer:
    """A tokenizer ready to encode document text: special-token strings inside text stay plain text,
    so a page that literally says "<image>" can never forge an image slot."""
    tokenizer = Tokenizer.from_str(text)
    tokenizer.encode_special_tokens = True
    return tokenizer


def sample_rank(doc_id: str) -> float:
    """A stable pseudo-random number in [0, 1) per document (the BPE sample's membership and order)."""
    return int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest()[:15], 16) / float(1 << 60)


class TrainTokenizer(beam.PTransform):
    """Documents → a one-element PCollection with the prepared tokenizer (`TokenizerInfo`).

    With `shards.tokenizer` set, loads that file instead and ignores the documents.
    """

    def __init__(self, settings: ShardSettings):
        """`settings`: the `shards` section (its tokenizer, eos_token and bpe_* keys are used)."""
        super().__init__()
        self.settings = settings

    def expand(self, docs):
        settings = self.settings
        if settings.tokenizer:
            info = load_tokenizer_file(settings.tokenizer, settings.eos_token)
            return docs.pipeline | "Tokenizer file" >> beam.Create([info])
        rate, max_chars = settings.bpe_sample_rate, settings.bpe_max_chars_per_document
        vocab_size, min_frequency = settings.bpe_vocab_size, settings.bpe_min_frequency

        def ranked_text(doc) -> Iterable[tuple[float, str, str]]:
            rank = sample_rank(doc.doc_id)
            if rank < rate:
                yield rank, doc.doc_id, doc.text[:max_chars]

        def train(sample: list[tuple[float, str, str]]) -> TokenizerInfo:
            return train_bpe((text for _, _, text in sorted(sample)), vocab_size, min_frequency)

        return (
            docs
            | "BPE sample" >> beam.FlatMap(ranked_text)
            | "BPE cap" >> beam.combiners.Top.Smallest(settings.bpe_max_documents)
            | "Train BPE" >> beam.Map(train)
        )
