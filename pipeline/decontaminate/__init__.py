"""Decontamination: nothing of the user's evaluation benchmarks in the training data (stage `decontaminate`).

- `sources.py`: which benchmark files, and the pictures and passages in them (with their names);
- `pictures.py`: crop-robust picture matching (windowed pHash + dHash, a multi-index), pure;
- `texts.py`: shared word n-grams between paragraphs and passages, pure;
- `embedding.py`: the optional open_clip embedding match (a local checkpoint);
- `audit.py`: `contamination.jsonl` and its summary per benchmark;
- `transforms.py`: the Beam stage, `DecontaminateDocuments`, with its typed section `DecontaminateSettings`.

How to point m3w at local copies of common benchmarks: docs/decontaminate.md.
"""

from pipeline.decontaminate.transforms import STAGE, DecontaminateDocuments, DecontaminateSettings

__all__ = ["STAGE", "DecontaminateDocuments", "DecontaminateSettings"]
