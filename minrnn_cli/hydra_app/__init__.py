"""Everything that talks to Hydra, in one package; the rest of minrnn (training, tasks, models, scans,
tracking, reporting, benchmarking) imports no Hydra.

- `internals`: the one module that uses Hydra's private API (`_run_hydra`, `run_and_report`), pinned to the
  Hydra versions the package allows.
- `launch`: from the CLI's tokens to a Hydra run: argument list, checks of group choices and flags, the
  task function Hydra calls, the bench's config registered from its dataclass.
- `errors`: Hydra's own errors, and a failing job's, as one line.
- `jobs`: the task functions behind `train`, `eval`, `generate`, `config` and `bench`.
- `callbacks`: a fresh folder per run, and the sweep summary after a multirun.
"""
