"""The budgets: each measurement of one (model, length) gets `budget_s` seconds, never more, and no
cell may need more than `max_memory_bytes` (Mamba's pure-PyTorch scan needs ~9 GiB at T=1024, batch 64).

Before a measurement runs, its cost per call is predicted from the same model's largest shorter length
already measured (scaled linearly in T), or, when there is none, from one call on the first
`CALIBRATION_LEN` tokens; a prediction over budget skips it without running the long call. Otherwise
one timed probe call gives the cost, and the repeats are cut to what fits (at least `min_repeats`),
or the measurement is skipped and marked. The training step's peak memory needs one call only, so it
is measured whenever one call is predicted to fit the budget, even where the timing did not. Peak memory
is predicted the same way (linear in T) from the largest shorter length measured; a cell predicted over
the limit is not built at all.

The headline pair (`HEADLINE_PAIRS`: minGRU against the loop GRU, minLSTM against the loop LSTM, each pair
when both are in the grid) is never skipped for time: where the budget would skip one of them, it is
measured with `min_repeats` instead, and the note says so. The memory limit still applies to it. Every
note names the key that moves its limit (`budget_s`, `max_memory_gib`).
"""

from __future__ import annotations

from dataclasses import dataclass

CALIBRATION_LEN = 64  # tokens of the calibration call that predicts a first, longer length
# The paper's comparison (Fig. 1): each minimal RNN against the GRU / LSTM written as a loop.
HEADLINE_PAIRS = (("mingru", "gru_loop"), ("minlstm", "lstm_loop"))


def headline_models(models: list[str]) -> frozenset[str]:
    """The models of every headline pair whose two sides are both in `models`."""
    return frozenset(name for pair in HEADLINE_PAIRS if set(pair) <= set(models) for name in pair)


@dataclass
class Plan:
    repeats: int  # 0 = skip
    note: str = ""


class Budget:
    def __init__(self, budget_s: float, warmup: int, repeats: int, min_repeats: int,
                 max_memory_bytes: int | None = None, protected: frozenset[str] = frozenset()):
        self.budget_s = budget_s
        self.warmup = warmup
        self.repeats = repeats
        self.min_repeats = min_repeats
        self.max_memory_bytes = max_memory_bytes
        self.protected = protected  # never skipped for time (the headline pair)
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}

    def memory_skip(self, model: str, seq_len: int) -> str | None:
        """A skip note if the cell's predicted peak memory is over the limit, else None."""
        guess = self.predict(model, "peak_bytes", seq_len)
        if guess is None or self.max_memory_bytes is None or guess <= self.max_memory_bytes:
            return None
        headline = "; the memory limit applies to the headline pair too" if model in self.protected else ""
        return (f"skipped: ~{guess / 2**30:.3g} GiB peak predicted, over the "
                f"{self.max_memory_bytes / 2**30:.3g} GiB memory limit (raise max_memory_gib to measure it"
                f"{headline})")

    def calls_needed(self) -> int:
        """Calls a measurement makes at the least: probe + warm-up + min_repeats."""
        return 1 + self.warmup + self.min_repeats

    def predict(self, model: str, kind: str, seq_len: int) -> float | None:
        """Seconds per call extrapolated from a shorter length of the same model, or None if none."""
        seen = self._seen.get((model, kind))
        if seen is None or seen[0] > seq_len:
            return None
        return seen[1] * seq_len / seen[0]

    def fits_once(self, model: str, kind: str, seq_len: int) -> bool:
        """Whether one call is predicted to fit in the budget (enough for a memory measurement)."""
        guess = self.predict(model, kind, seq_len)
        return guess is not None and guess <= self.budget_s

    def record(self, model: str, kind: str, seq_len: int, seconds_per_call: float) -> None:
        self._seen[(model, kind)] = (seq_len, seconds_per_call)

    def before(self, model: str, kind: str, seq_len: int) -> Plan | None:
        """A skip Plan if the prediction is already over budget, else None (go and probe); never a skip for
        the headline pair."""
        guess = self.predict(model, kind, seq_len)
        if model not in self.protected and guess is not None and guess * self.calls_needed() > self.budget_s:
            return Plan(0, f"skipped: ~{guess:.3g} s/call predicted, {self.calls_needed()} calls (probe, warm-up, "
                           f"min_repeats) over budget_s={self.budget_s:g} s per measurement (raise budget_s to "
                           f"measure it)")
        return None

    def after_probe(self, probe_s: float, model: str | None = None) -> Plan:
        """How many repeats fit in what the probe left of the budget; `min_repeats` for the headline pair."""
        left = self.budget_s - probe_s
        fit = int(left // probe_s) - self.warmup if probe_s > 0 else self.repeats
        if fit < self.min_repeats:
            if model in self.protected:
                return Plan(self.min_repeats, f"over the budget_s={self.budget_s:g} s budget ({probe_s:.3g} s/call): "
                                              f"measured with min_repeats={self.min_repeats}, as the headline pair "
                                              f"always is")
            return Plan(0, f"skipped: {probe_s:.3g} s/call, {self.calls_needed()} calls (probe, warm-up, "
                           f"min_repeats) over budget_s={self.budget_s:g} s per measurement (raise budget_s to "
                           f"measure it)")
        repeats = min(self.repeats, fit)
        note = "" if repeats == self.repeats else f"repeats cut to {repeats} by budget_s={self.budget_s:g}"
        return Plan(repeats, note)
