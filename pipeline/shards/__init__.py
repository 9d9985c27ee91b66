"""Stage 6, shards: documents → `<image>`/`<EOC>` token sequences (`sequences`), the tokenizer, the webdataset writer
(`writer`).
"""
