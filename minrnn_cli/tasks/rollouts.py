"""Running a return-conditioned policy in its gymnasium MuJoCo environment, many episodes side by side.

At every step each running episode shows the policy its last `context` steps, left-padded as in training:
the returns-to-go (the target return less the reward collected so far, scaled), the normalised states, the
actions taken (a zero placeholder for the current one, which the prediction at the state token never sees)
and the timesteps; the action predicted at the newest state is applied. An episode ends when its
environment terminates or truncates it (the MuJoCo tasks' 1000-step limit, or `task.max_episode_steps`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch

from minrnn_cli.device import autocast
from minrnn_cli.errors import UserError
from minrnn_cli.models.decision import Steps

log = logging.getLogger("minrnn")
_logged_mujoco_warnings: set[str] = set()


def _log_mujoco_warning(message: str) -> None:
    if message not in _logged_mujoco_warnings:
        _logged_mujoco_warnings.add(message)
        log.debug(f"MuJoCo: {message}")


@contextlib.contextmanager
def mujoco_warnings_to_log():
    """MuJoCo prints its model compiler's warnings, and appends them to MUJOCO_LOG.TXT in the working folder,
    on every environment made (recent versions, 3.17 and 4.0 here, deprecate an attribute that gymnasium's
    HalfCheetah model still uses): send each to the debug log once instead."""
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(_log_mujoco_warning)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def make_environment(gym_id: str, max_episode_steps: int | None = None):
    try:
        import gymnasium
        import mujoco  # noqa: F401
    except ImportError:
        raise UserError("task d4rl scores its policy in MuJoCo, which needs gymnasium[mujoco]: "
                        'pip install "minrnn-cli[rl]", or task.eval_episodes=0 to score the action error alone'
                        ) from None
    options = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    try:
        with warnings.catch_warnings(), mujoco_warnings_to_log():
            # v4 on purpose: v5 changed the rewards (Hopper, Walker2d) that D4RL's reference returns assume
            warnings.simplefilter("ignore", DeprecationWarning)
            return gymnasium.make(gym_id, **options)
    except (gymnasium.error.Error, ImportError, ModuleNotFoundError) as error:
        raise UserError(f"environment {gym_id} cannot be made ({error}); "
                        f'pip install "minrnn-cli[rl]" brings gymnasium[mujoco]') from None


def check_environment(gym_id: str, state_dim: int, action_dim: int) -> None:
    """A one-line error unless `gym_id` can be made and its spaces match the dataset's."""
    env = make_environment(gym_id)
    try:
        shapes = (env.observation_space.shape, env.action_space.shape)
    finally:
        env.close()
    if shapes != ((state_dim,), (action_dim,)):
        raise UserError(f"the dataset's states and actions have sizes {state_dim} and {action_dim}, but {gym_id}'s "
                        f"have {shapes[0]} and {shapes[1]}; check task.env")


@torch.no_grad()
def run_episodes(model, task, episodes: int, seed: int, device: torch.device, precision: str
                 ) -> tuple[list[float], list[int]]:
    """(return, length) of `episodes` episodes, the i-th reset with seed `seed + i`."""
    envs = [make_environment(task.environment.gym_id, task.max_episode_steps) for _ in range(episodes)]
    try:
        return _run(model, task, envs, seed, device, precision)
    finally:
        for env in envs:
            env.close()


def _last_steps(array: np.ndarray, rows: np.ndarray, t: int, context: int) -> torch.Tensor:
    """Steps t-context+1..t of the given episodes, left-padded with zeros to `context` steps."""
    taken = array[rows, max(0, t + 1 - context) : t + 1]
    padding = np.zeros((len(rows), context - taken.shape[1], *taken.shape[2:]), dtype=taken.dtype)
    return torch.from_numpy(np.concatenate([padding, taken], axis=1))


def _run(model, task, envs, seed: int, device: torch.device, precision: str) -> tuple[list[float], list[int]]:
    count, context = len(envs), task.context
    limit = getattr(envs[0].spec, "max_episode_steps", None) or task.max_timestep
    mean, std = task.state_mean.astype(np.float32), task.state_std.astype(np.float32)
    states = np.zeros((count, limit + 1, task.state_dim), dtype=np.float32)  # normalised
    actions = np.zeros((count, limit + 1, task.action_dim), dtype=np.float32)
    rtg = np.zeros((count, limit + 1, 1), dtype=np.float32)
    timesteps = np.minimum(np.arange(limit + 1), task.max_timestep - 1)[None].repeat(count, axis=0)
    for i, env in enumerate(envs):
        states[i, 0] = (env.reset(seed=seed + i)[0] - mean) / std
    rtg[:, 0] = task.target_return / task.return_scale
    returns, lengths = np.zeros(count), np.zeros(count, dtype=np.int64)
    running = np.ones(count, dtype=bool)
    for t in range(limit):
        rows = np.flatnonzero(running)
        steps = Steps(*(_last_steps(array, rows, t, context) for array in (rtg, states, actions, timesteps)))
        with autocast(device, precision):
            predicted, _ = model(steps.to(device))
        chosen = predicted[:, -1].float().cpu().numpy()
        for row, action in zip(rows, chosen, strict=True):
            state, reward, terminated, truncated, _ = envs[row].step(action)
            actions[row, t] = action
            states[row, t + 1] = (state - mean) / std
            rtg[row, t + 1] = rtg[row, t] - reward / task.return_scale
            returns[row] += reward
            lengths[row] += 1
            running[row] = not (terminated or truncated)
        if not running.any():
            break
    return returns.tolist(), lengths.tolist()
