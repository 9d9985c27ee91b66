"""Alignment canaries: generated pages whose pictures decide the word that follows them (`shapes`).

A model trained on shards that keep each picture where φ says it stands predicts a canary's class word from its
picture and not from a shuffled one: the smoke trainer's strict verdict (`train_smoke.verdict`). `m3w build`
adds them to every build (`riding`): their pages and pictures are written as a WARC into the build's output and
read beside the user's crawl, through every stage under the user's config, counted apart, and written to shard
files of their own (docs/design.md, docs/smoke.md).

This package imports neither Apache Beam nor the trainer: `python -m train_smoke` recognises canaries with it.
"""
