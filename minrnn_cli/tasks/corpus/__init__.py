"""Corpora for language modelling, one job per module: `sources` loads rows through HF datasets (local text
files only when asked), `direct` prepares local text files by reading their bytes itself, `tokenizers` turns
text into ids and back (char, byte, BPE), `prepare` writes the tokenised splits as memory-mapped files in
minrnn's cache, `job` is `minrnn prepare` and a run's first use (no torch). `tasks/text.py` trains on them."""
