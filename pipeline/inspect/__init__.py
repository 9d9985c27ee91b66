"""`m3w inspect`: look inside training shards — validate every contract invariant, summarise, show, render.

Works on one `.tar` shard, a directory of shards (or an `m3w shard` output directory) or a
`manifest.json`. The tokenizer comes from the manifest (or a `tokenizer.json` beside the shards).
"""
