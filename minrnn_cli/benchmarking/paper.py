"""The paper's own Experiment 1 figures (Feng et al. 2024, Sec. 4.1, Fig. 1): T4 GPU, batch 64,
forward + loss + backward, GRU/LSTM baselines written as plain-PyTorch loops. Shown beside ours,
always labelled "paper (T4)"; which of minGRU/minLSTM is 2.97 ms at T=512 is not certain in the text.
"""

from __future__ import annotations

LABEL = "paper (T4)"

# training-step milliseconds by model and length
STEP_MS = {
    "mingru": {512: 2.97, 4096: 3.41},
    "minlstm": {512: 2.72, 4096: 3.25},
    "mamba": {512: 2.71, 4096: 3.15},
}
# speedup over the paper's loop baseline (minGRU vs GRU, minLSTM vs LSTM)
SPEEDUP_VS_LOOP = {
    "mingru": {512: 175.0, 4096: 1324.0},
    "minlstm": {512: 235.0, 4096: 1361.0},
}
# peak-memory ratios: minGRU/minLSTM vs their (loop) GRU/LSTM, Mamba vs minGRU
MEMORY_RATIO = {"mingru": 1.88, "minlstm": 1.88, "mamba": 1.56}
