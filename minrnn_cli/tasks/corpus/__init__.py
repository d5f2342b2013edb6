"""Corpora for language modelling, one job per module: `sources` loads rows through HF datasets, `tokenizers`
turns text into ids and back (char, byte, BPE), `prepare` writes the tokenised splits as memory-mapped files in
minrnn's cache. `tasks/text.py` trains on them."""
