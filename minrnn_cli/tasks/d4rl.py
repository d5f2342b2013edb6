"""The paper's offline RL: return-conditioned behaviour cloning in the Decision Transformer's way (Chen et
al. 2021) on D4RL's MuJoCo datasets (HalfCheetah, Hopper, Walker2d), scored by D4RL's normalised return.

`task.data_path` is one dataset file, never downloaded:
- D4RL's HDF5 (e.g. `hopper_medium-v2.hdf5`: observations, actions, rewards, terminals, timeouts), read
  with h5py (`pip install "minrnn-cli[rl]"`); episodes end at a terminal or a timeout;
- or the pickle Decision Transformer's download script writes (e.g. `hopper-medium-v2.pkl`: a list of
  episodes, each a dict of observations, actions, rewards and optionally terminals).
`task.env` names the environment (hopper, halfcheetah, walker2d), by default the start of the file name.

Training windows, as the Decision Transformer draws them: an episode with probability proportional to its
length, a start step uniformly in it, `context` steps from there (fewer at the episode's end, left-padded
with zeros and masked out of the loss); states normalised by the dataset's mean and std, returns-to-go
(undiscounted) divided by `return_scale`. The loss is the mean squared error of the predicted actions.

Scores: `val_loss` is that error on a fixed set of windows. With `eval_episodes` > 0 the policy also runs
in the gymnasium MuJoCo environment (`pip install "minrnn-cli[rl]"`), conditioned on `target_return`:
`val_return` / `val_score` over `eval_episodes` seeded episodes pick the best checkpoint, and `test_*`
come from `test_episodes` episodes with other seeds. score = 100 * (return - random) / (expert - random),
with D4RL's reference returns for a random and an expert policy.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.models.decision import Steps
from minrnn_cli.models.heads import ActionHead
from minrnn_cli.tasks.base import Task, require_at_least, score_batches

RL_EXTRA = 'pip install "minrnn-cli[rl]"'
MAX_EPISODE_STEPS = 1000  # the MuJoCo tasks' time limit, and the Decision Transformer's max_ep_len


@dataclass(frozen=True)
class Environment:
    gym_id: str  # the gymnasium environment the policy is scored in (same bodies as D4RL's v2 data)
    random_return: float  # D4RL's REF_MIN_SCORE
    expert_return: float  # D4RL's REF_MAX_SCORE
    target_return: float  # the Decision Transformer's first evaluation target for this environment


ENVIRONMENTS = {
    "halfcheetah": Environment("HalfCheetah-v4", -280.178953, 12135.0, 12000.0),
    "hopper": Environment("Hopper-v4", -20.272305, 3234.3, 3600.0),
    "walker2d": Environment("Walker2d-v4", 1.629008, 4592.3, 5000.0),
}


def normalised_score(episode_return: float, environment: Environment) -> float:
    return 100 * (episode_return - environment.random_return) / (environment.expert_return
                                                                 - environment.random_return)


class Episode(NamedTuple):
    states: np.ndarray  # (T, state_dim)
    actions: np.ndarray  # (T, action_dim)
    rewards: np.ndarray  # (T,)


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """R_t = r_t + r_{t+1} + ... (undiscounted), for every step t."""
    return np.cumsum(rewards[::-1], dtype=np.float64)[::-1].copy()


def split_episodes(columns: dict[str, np.ndarray], source: Path) -> list[Episode]:
    """D4RL's flat arrays cut into episodes after every terminal or timeout (and at the end)."""
    states, actions, rewards = columns["observations"], columns["actions"], columns["rewards"]
    ends = np.asarray(columns["terminals"], dtype=bool)
    if "timeouts" in columns:
        ends = ends | np.asarray(columns["timeouts"], dtype=bool)
    check_columns(states, actions, rewards, source, ends)
    stops = [*(np.flatnonzero(ends[:-1]) + 1), len(rewards)]
    starts = [0, *stops[:-1]]
    return [Episode(states[a:b], actions[a:b], rewards[a:b]) for a, b in zip(starts, stops, strict=True)]


def check_columns(states, actions, rewards, source: Path, ends=None) -> None:
    if states.ndim != 2 or actions.ndim != 2 or rewards.ndim != 1:
        raise UserError(f"task.data_path={source}: observations and actions must be 2-d and rewards 1-d arrays "
                        f"(got shapes {states.shape}, {actions.shape}, {rewards.shape})")
    lengths = [len(column) for column in (states, actions, rewards, *([] if ends is None else [ends]))]
    if len(set(lengths)) != 1 or lengths[0] == 0:
        raise UserError(f"task.data_path={source}: observations, actions, rewards (and terminals) must have the "
                        f"same non-zero length (got {', '.join(map(str, lengths))})")


def read_hdf5(path: Path) -> list[Episode]:
    try:
        import h5py
    except ImportError:
        raise UserError(f"task.data_path={path} is an HDF5 file, which needs h5py: {RL_EXTRA}") from None
    wanted = ("observations", "actions", "rewards", "terminals", "timeouts")
    try:
        with h5py.File(path, "r") as handle:
            missing = [key for key in wanted[:4] if key not in handle]
            if missing:
                raise UserError(f"task.data_path={path} lacks the D4RL key(s) {', '.join(missing)}")
            columns = {key: np.asarray(handle[key]) for key in wanted if key in handle}
    except OSError as error:
        raise UserError(f"task.data_path={path}: not a readable HDF5 file ({error})") from None
    return split_episodes(columns, path)


def read_pickle(path: Path) -> list[Episode]:
    try:
        with path.open("rb") as handle:
            loaded = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError) as error:
        raise UserError(f"task.data_path={path}: not a readable pickle ({error})") from None
    if not isinstance(loaded, list) or not loaded or not all(isinstance(item, dict) for item in loaded):
        raise UserError(f"task.data_path={path}: expected a list of episodes, each a dict of observations, "
                        "actions and rewards (the Decision Transformer's format)")
    episodes = []
    for item in loaded:
        missing = [key for key in ("observations", "actions", "rewards") if key not in item]
        if missing:
            raise UserError(f"task.data_path={path}: an episode lacks {', '.join(missing)}")
        states, actions, rewards = (np.asarray(item[key]) for key in ("observations", "actions", "rewards"))
        check_columns(states, actions, rewards, path)
        episodes.append(Episode(states, actions, rewards))
    return episodes


READERS = {".hdf5": read_hdf5, ".h5": read_hdf5, ".pkl": read_pickle}
WANTED_FILE = "give a D4RL .hdf5 file or a Decision Transformer .pkl file"


def check_dataset_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(f"task.data_path={path} is not a file; {WANTED_FILE}")
    if path.suffix not in READERS:
        raise UserError(f"task.data_path={path}: unknown suffix {path.suffix!r}; {WANTED_FILE}")


def read_episodes(path: Path) -> list[Episode]:
    """Every episode of a D4RL HDF5 file or a Decision Transformer pickle, as float32 arrays."""
    return [Episode(*(array.astype(np.float32) for array in episode)) for episode in READERS[path.suffix](path)]


class ActionTargets(NamedTuple):
    actions: Tensor  # (B, K, action_dim)
    mask: Tensor  # (B, K): 1 for real steps, 0 for padding

    def to(self, device: torch.device) -> ActionTargets:
        return ActionTargets(self.actions.to(device), self.mask.to(device))


def resolve_environment(env: str | None, path: Path) -> tuple[str, Environment]:
    if env is None:
        env = next((name for name in ENVIRONMENTS if path.name.lower().startswith(name)), None)
        if env is None:
            raise UserError(f"task.env=null and the file name {path.name!r} starts with none of "
                            f"{', '.join(ENVIRONMENTS)}; set task.env")
    if env not in ENVIRONMENTS:
        raise UserError(f"task.env={env!r} is invalid: choose one of {', '.join(ENVIRONMENTS)}")
    return env, ENVIRONMENTS[env]


class D4RL(Task):
    name = "d4rl"

    def __init__(self, *, data_path: str | None, env: str | None, context: int, batch_size: int,
                 return_scale: float, target_return: float | None, eval_batches: int, eval_episodes: int,
                 test_episodes: int, max_episode_steps: int | None, eval_seed: int):
        if not data_path:
            raise UserError("task d4rl needs a D4RL dataset: pass task.data_path=FILE (a D4RL .hdf5 such as "
                            "hopper_medium-v2.hdf5, or a Decision Transformer .pkl); minrnn downloads nothing")
        path = Path(data_path).expanduser()
        check_dataset_file(path)
        self.env, self.environment = resolve_environment(env, path)
        require_at_least("task.context", context, 1)
        require_at_least("task.batch_size", batch_size, 1)
        require_at_least("task.eval_batches", eval_batches, 1)
        require_at_least("task.eval_episodes", eval_episodes, 0)
        require_at_least("task.test_episodes", test_episodes, 0)
        if max_episode_steps is not None:
            require_at_least("task.max_episode_steps", max_episode_steps, 1)
        if not isinstance(return_scale, (int, float)) or return_scale <= 0:
            raise UserError(f"task.return_scale={return_scale!r} is invalid: it must be a number > 0")
        self.episodes = read_episodes(path)
        self.state_dim = self.episodes[0].states.shape[1]
        self.action_dim = self.episodes[0].actions.shape[1]
        if any(e.states.shape[1] != self.state_dim or e.actions.shape[1] != self.action_dim for e in self.episodes):
            raise UserError(f"task.data_path={path}: the episodes differ in state or action size")
        states = np.concatenate([episode.states for episode in self.episodes])
        self.state_mean, self.state_std = states.mean(0), states.std(0) + 1e-6
        self.lengths = torch.tensor([len(episode.rewards) for episode in self.episodes])
        self.first_steps = self.lengths.cumsum(0) - self.lengths  # each episode's place in the flat arrays
        self.max_timestep = max(MAX_EPISODE_STEPS, int(self.lengths.max()))
        self.head = ActionHead(self.state_dim, self.action_dim, self.max_timestep)
        self.context, self.batch_size, self.return_scale = context, batch_size, float(return_scale)
        # every step of every episode, ready to be gathered into windows: the model's inputs as it sees them
        self.flat = Steps(
            torch.from_numpy(np.concatenate([returns_to_go(e.rewards) for e in self.episodes]).astype(np.float32))
            [:, None] / self.return_scale,
            torch.from_numpy((states - self.state_mean) / self.state_std).float(),
            torch.from_numpy(np.concatenate([episode.actions for episode in self.episodes])),
            torch.cat([torch.arange(length).clamp(max=self.max_timestep - 1) for length in self.lengths.tolist()]))
        self.target_return = self.environment.target_return if target_return is None else float(target_return)
        self.eval_batches, self.eval_seed = eval_batches, eval_seed
        self.episode_counts = {"val": eval_episodes, "test": test_episodes}
        self.max_episode_steps = max_episode_steps
        self.scored_by_rollouts = eval_episodes > 0
        self.primary_metric = "score" if self.scored_by_rollouts else "loss"
        self.higher_is_better = self.scored_by_rollouts  # a normalised return, else the action error
        self.splits = ("val", "test") if self.scored_by_rollouts and test_episodes else ("val",)
        if self.scored_by_rollouts:
            from minrnn_cli.tasks.rollouts import check_environment

            check_environment(self.environment.gym_id, self.state_dim, self.action_dim)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.context * 3  # return, state and action tokens per step

    def training_data(self) -> str:
        return f"{len(self.episodes):,} episodes, {int(self.lengths.sum()):,} steps"

    def windows(self, episodes: Tensor, starts: Tensor) -> tuple[Steps, ActionTargets]:
        """For each (episode, start): steps start..start+context-1 of that episode (fewer at its end), the real
        steps last and zeros in front, as one gather from the flat arrays."""
        real = torch.minimum(self.lengths[episodes] - starts, torch.tensor(self.context))  # (B,)
        offsets = torch.arange(self.context) - (self.context - real)[:, None]  # (B, K); < 0 is padding
        mask = offsets >= 0
        rows = (self.first_steps[episodes] + starts)[:, None] + offsets.clamp(min=0)
        steps = Steps(*(column[rows] * mask.view(*mask.shape, *[1] * (column.dim() - 1)) for column in self.flat))
        return steps, ActionTargets(steps.actions, mask.float())

    def sample_windows(self, count: int, generator: torch.Generator) -> tuple[Steps, ActionTargets]:
        """Windows as the Decision Transformer draws them: an episode with probability proportional to its
        length, a start step uniformly in it."""
        episodes = torch.multinomial(self.lengths.double(), count, replacement=True, generator=generator)
        starts = (torch.rand(count, generator=generator, dtype=torch.float64) * self.lengths[episodes]).long()
        return self.windows(episodes, starts)

    def train_batch(self, generator: torch.Generator) -> tuple[Steps, ActionTargets]:
        return self.sample_windows(self.batch_size, generator)

    def eval_set(self, split: str) -> list[tuple[Steps, ActionTargets]]:
        """A fixed set of windows (from a seeded generator), the same at every evaluation and for every split."""

        def make() -> list[tuple[Steps, ActionTargets]]:
            generator = torch.Generator().manual_seed(self.eval_seed)
            return [self.sample_windows(self.batch_size, generator) for _ in range(self.eval_batches)]

        return self.fixed_batches("windows", make)

    def score(self, predicted: Tensor, targets: ActionTargets) -> tuple[Tensor, int, int]:
        """(mean squared action error over the real steps, 0 correct, steps in the batch): actions have no
        accuracy, and counting the real steps on the host would cost a device sync every step."""
        mask = targets.mask.unsqueeze(-1)
        error = ((predicted.float() - targets.actions) ** 2 * mask).sum() / (mask.sum() * self.action_dim)
        return error, 0, targets.mask.numel()

    def evaluate_split(self, model, split: str, device: torch.device, precision: str) -> dict[str, float]:
        from minrnn_cli.tasks.rollouts import run_episodes

        metrics = {}
        if split == "val":
            metrics["loss"] = score_batches(model, self, self.eval_set(split), device, precision)[0]
        if self.episode_counts[split]:
            seed = self.eval_seed + (0 if split == "val" else 100_000)
            returns, lengths = run_episodes(model, self, self.episode_counts[split], seed, device, precision)
            scores = [normalised_score(value, self.environment) for value in returns]
            metrics.update({"return": float(np.mean(returns)), "score": float(np.mean(scores)),
                            "score_std": float(np.std(scores)), "episode_length": float(np.mean(lengths))})
        return metrics

    def vocabulary(self) -> dict:
        """What the policy needs besides its weights: the state normalisation and the environment."""
        return {"env": self.env, "gym_id": self.environment.gym_id, "state_mean": self.state_mean.tolist(),
                "state_std": self.state_std.tolist(), "return_scale": self.return_scale,
                "target_return": self.target_return}
