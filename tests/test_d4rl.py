"""D4RL: episodes read from D4RL's HDF5 and the Decision Transformer's pickle, returns-to-go, training windows,
the Decision model's causality, rollouts (a scripted environment, and MuJoCo's Hopper), the normalised
score, and a tiny run end to end."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from cli_faults import assert_one_line_error
from conftest import TINY_TRAINER, make_task, run_minrnn, run_ok

from minrnn_cli.errors import UserError
from minrnn_cli.models import build_decision_model
from minrnn_cli.models.decision import Steps
from minrnn_cli.tasks.d4rl import ENVIRONMENTS, normalised_score, read_episodes, returns_to_go
from minrnn_cli.tasks.rollouts import _run, make_environment
from minrnn_cli.tracking.records import read_metrics, read_results

STATE_DIM, ACTION_DIM = 11, 3  # Hopper's


def flat_dataset(lengths: list[int], seed: int = 0, timeout_last: bool = True) -> dict[str, np.ndarray]:
    """D4RL's flat layout for episodes of the given lengths: all but the last end in a terminal."""
    rng = np.random.default_rng(seed)
    total = sum(lengths)
    terminals, timeouts = np.zeros(total, dtype=bool), np.zeros(total, dtype=bool)
    ends = np.cumsum(lengths) - 1
    terminals[ends[:-1]] = True
    timeouts[ends[-1]] = timeout_last
    return {"observations": rng.normal(size=(total, STATE_DIM)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(total, ACTION_DIM)).astype(np.float32),
            "rewards": rng.uniform(0, 2, size=total).astype(np.float32), "terminals": terminals,
            "timeouts": timeouts}


def write_hdf5(path, columns) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        for key, value in columns.items():
            handle[key] = value


def write_pickle(path, columns, lengths) -> None:
    bounds = np.cumsum([0, *lengths])
    episodes = [{key: columns[key][a:b] for key in ("observations", "actions", "rewards", "terminals")}
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    path.write_bytes(pickle.dumps(episodes))


def test_returns_to_go_are_the_sums_of_the_rewards_still_to_come():
    rewards = np.random.default_rng(1).normal(size=9)
    expected = [sum(rewards[t:]) for t in range(len(rewards))]
    np.testing.assert_allclose(returns_to_go(rewards), expected, rtol=1e-12)


def test_hdf5_and_pickle_give_the_same_episodes_cut_at_terminals_and_timeouts(tmp_path):
    lengths = [5, 1, 7, 4]
    columns = flat_dataset(lengths)
    columns["timeouts"][2] = True  # a timeout inside the first episode cuts it too
    write_hdf5(tmp_path / "hopper_medium-v2.hdf5", columns)
    from_hdf5 = read_episodes(tmp_path / "hopper_medium-v2.hdf5")
    assert [len(episode.rewards) for episode in from_hdf5] == [3, 2, 1, 7, 4]
    np.testing.assert_array_equal(from_hdf5[3].states, columns["observations"][6:13])

    write_pickle(tmp_path / "hopper-medium-v2.pkl", columns, [3, 2, 1, 7, 4])
    from_pickle = read_episodes(tmp_path / "hopper-medium-v2.pkl")
    for a, b in zip(from_hdf5, from_pickle, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.fixture
def dataset(tmp_path):
    lengths = [30, 4, 25]
    path = tmp_path / "hopper-medium-v2.pkl"
    write_pickle(path, flat_dataset(lengths), lengths)
    return path


def build(dataset, **options):
    return make_task("d4rl", **{"data_path": str(dataset), "eval_episodes": 0, "test_episodes": 0,
                       "context": 5, "batch_size": 6, "eval_batches": 2, **options})


def one_window(task, episode: int, start: int):
    """(Steps, ActionTargets) of one window, without the batch dimension."""
    steps, targets = task.windows(torch.tensor([episode]), torch.tensor([start]))
    return type(steps)(*(field[0] for field in steps)), type(targets)(*(field[0] for field in targets))


def test_a_window_is_normalised_scaled_and_left_padded_at_the_episode_end(dataset):
    task = build(dataset, return_scale=10.0)
    episode = task.episodes[1]  # 4 steps: a window from step 2 holds steps 2 and 3, after 3 padding steps
    steps, targets = one_window(task, 1, 2)
    among_others = task.windows(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 24]))  # the same window in a batch
    for alone, batched in zip((*steps, *targets), (*among_others[0], *among_others[1]), strict=True):
        assert torch.equal(alone, batched[1])
    assert targets.mask.tolist() == [0, 0, 0, 1, 1]
    assert steps.timesteps.tolist() == [0, 0, 0, 2, 3]
    np.testing.assert_allclose(steps.states[3:].numpy(), (episode.states[2:] - task.state_mean) / task.state_std,
                               rtol=1e-5)
    np.testing.assert_allclose(steps.returns_to_go[3:, 0].numpy(),
                               [episode.rewards[2:].sum() / 10, episode.rewards[3] / 10], rtol=1e-5)
    assert torch.equal(steps.actions[3:], torch.from_numpy(episode.actions[2:]))
    assert not steps.states[:3].any() and not steps.actions[:3].any() and not steps.returns_to_go[:3].any()
    assert task.env == "hopper" and task.primary_metric == "loss" and task.splits == ("val",)


def test_every_window_matches_slicing_its_episode_and_padding_in_front(dataset):
    task = build(dataset, return_scale=7.0)
    pairs = [(e, start) for e, episode in enumerate(task.episodes) for start in range(len(episode.rewards))]
    steps, targets = task.windows(torch.tensor([e for e, _ in pairs]), torch.tensor([t for _, t in pairs]))
    for row, (e, start) in enumerate(pairs):
        episode, stop = task.episodes[e], start + task.context
        real = len(episode.rewards[start:stop])
        expected = [returns_to_go(episode.rewards)[start:stop, None] / 7.0,
                    (episode.states[start:stop] - task.state_mean) / task.state_std,
                    episode.actions[start:stop], np.arange(start, start + real)]
        for got, want in zip(steps, expected, strict=True):
            np.testing.assert_allclose(got[row, task.context - real :].numpy(), want, rtol=1e-5, atol=1e-6)
            assert not got[row, : task.context - real].any()
        assert targets.mask[row].tolist() == [0] * (task.context - real) + [1] * real


def test_training_windows_are_seeded_and_lie_inside_their_episodes(dataset):
    task = build(dataset)
    first, again = (task.train_batch(torch.Generator().manual_seed(5)) for _ in range(2))
    for a, b in zip((*first[0], *first[1]), (*again[0], *again[1]), strict=True):
        assert torch.equal(a, b)
    steps, targets = task.sample_windows(400, torch.Generator().manual_seed(0))
    real = targets.mask.bool()
    assert real[:, -1].all()  # every window ends on a real step (padding only in front)
    assert (steps.timesteps[real] < 30).all()
    fixed = task.eval_set("val")
    assert len(fixed) == 2 and all(torch.equal(a, b) for a, b in zip(fixed[0][0], task.eval_set("val")[0][0],
                                                                     strict=True))


def test_the_score_is_the_squared_action_error_over_real_steps_only(dataset):
    task = build(dataset)
    steps, targets = one_window(task, 1, 2)
    predicted = targets.actions.clone()
    predicted[:3] = 5.0  # wrong only on padding
    predicted[4, 0] += 0.3
    loss, _, _ = task.score(predicted[None], type(targets)(targets.actions[None], targets.mask[None]))
    assert loss.item() == pytest.approx(0.09 / (2 * ACTION_DIM), rel=1e-5)


@pytest.mark.parametrize("name", ["mingru", "minlstm", "gru", "transformer", "mamba"])
def test_each_action_is_predicted_from_the_past_and_its_own_state_only(name):
    torch.manual_seed(0)
    model = build_decision_model(name, STATE_DIM, ACTION_DIM, 100, d_model=16, n_layers=2, mlp=True).eval()
    steps = Steps(torch.randn(2, 6, 1), torch.randn(2, 6, STATE_DIM), torch.randn(2, 6, ACTION_DIM),
                  torch.arange(6).expand(2, 6))
    base, _ = model(steps)
    t = 3
    later = Steps(steps.returns_to_go.clone(), steps.states.clone(), steps.actions.clone(), steps.timesteps)
    later.actions[:, t:] += 1.0  # the action itself and everything after step t
    later.states[:, t + 1 :] += 1.0
    later.returns_to_go[:, t + 1 :] += 1.0
    changed, _ = model(later)
    torch.testing.assert_close(changed[:, : t + 1], base[:, : t + 1])
    own_state = Steps(steps.returns_to_go, steps.states.clone(), steps.actions, steps.timesteps)
    own_state.states[:, t] += 1.0
    assert not torch.allclose(model(own_state)[0][:, t], base[:, t])


def test_the_normalised_score_is_zero_for_random_and_100_for_expert_returns():
    for environment in ENVIRONMENTS.values():
        assert normalised_score(environment.random_return, environment) == pytest.approx(0)
        assert normalised_score(environment.expert_return, environment) == pytest.approx(100)
    assert normalised_score(1607.0138475, ENVIRONMENTS["hopper"]) == pytest.approx(50.0, abs=1e-6)


class CountingEnv:
    """Reward 1 a step; the state is (step, 0, ...); episode i ends after 3 + i steps."""

    class spec:  # noqa: N801 - what gymnasium's env.spec offers
        max_episode_steps = 50

    def __init__(self, index):
        self.index, self.t = index, 0

    def reset(self, seed=None):
        self.t, self.seed = 0, seed
        return self.state(), {}

    def state(self):
        return np.array([self.t] + [0.0] * (STATE_DIM - 1), dtype=np.float32)

    def step(self, action):
        self.t += 1
        return self.state(), 1.0, self.t >= 3 + self.index, False, {}


class RecordingPolicy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen: list[Steps] = []

    def forward(self, steps):
        self.seen.append(steps)
        return torch.full((*steps.states.shape[:2], ACTION_DIM), 0.5), None


def test_a_rollout_conditions_on_the_return_still_wanted_and_stops_each_episode_on_its_own(dataset):
    task = build(dataset, context=4, target_return=10.0, return_scale=2.0)
    task.state_mean[:], task.state_std[:] = 0.0, 1.0
    envs = [CountingEnv(i) for i in range(2)]
    policy = RecordingPolicy()
    returns, lengths = _run(policy, task, envs, seed=7, device=torch.device("cpu"), precision="fp32")
    assert returns == [3.0, 4.0] and lengths == [3, 4] and [env.seed for env in envs] == [7, 8]
    assert [len(steps.states) for steps in policy.seen] == [2, 2, 2, 1]  # episode 0 ended after 3 steps
    at_step_2 = policy.seen[2]
    assert at_step_2.returns_to_go[0, :, 0].tolist() == [0, 5.0, 4.5, 4.0]  # (10 - rewards so far) / 2, padded
    assert at_step_2.timesteps[0].tolist() == [0, 0, 1, 2]
    assert at_step_2.states[0, :, 0].tolist() == [0, 0, 1, 2]
    assert at_step_2.actions[0].tolist() == [[0.0] * 3, [0.5] * 3, [0.5] * 3, [0.0] * 3]  # current one: 0
    last = policy.seen[3]  # step 3: the window slides, no padding left
    assert last.timesteps[0].tolist() == [0, 1, 2, 3] and last.returns_to_go[0, -1, 0] == 3.5


@pytest.fixture
def hopper_data(tmp_path):
    """A small dataset gathered in MuJoCo's Hopper with random actions (in D4RL's HDF5 layout)."""
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    env = make_environment("Hopper-v4")
    rng = np.random.default_rng(0)
    columns = {key: [] for key in ("observations", "actions", "rewards", "terminals", "timeouts")}
    state, _ = env.reset(seed=0)
    for _ in range(300):
        action = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
        following, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(columns, (state, action, reward, terminated, truncated), strict=True):
            columns[key].append(value)
        state = env.reset()[0] if terminated or truncated else following
    path = tmp_path / "hopper_random-v2.hdf5"
    write_hdf5(path, {key: np.array(value) for key, value in columns.items()})
    return path


def test_tiny_d4rl_run_scores_the_policy_in_mujoco(hopper_data, tmp_path):
    args = ["train", "task=d4rl", f"task.data_path={hopper_data}", "task.batch_size=4", "task.context=4",
            "task.eval_batches=1", "task.eval_episodes=2", "task.test_episodes=1", "task.max_episode_steps=15",
            "model.d_model=8", "model.n_layers=1", "model.conv=false", *TINY_TRAINER]
    run_ok(tmp_path, *args)
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    results = read_results(run_dir)
    for key in ("val_loss", "val_return", "val_score", "val_episode_length", "test_return", "test_score"):
        assert key in results, results
    assert 1 <= results["test_episode_length"] <= 15
    env = ENVIRONMENTS["hopper"]
    assert results["test_score"] == pytest.approx(normalised_score(results["test_return"], env), rel=1e-9)
    evals = [row for row in read_metrics(run_dir) if "val_score" in row]
    assert results["val_score"] == max(row["val_score"] for row in evals)  # the best checkpoint, by score
    run_ok(tmp_path, "eval", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "trainer.device=cpu")


def test_a_dataset_that_does_not_fit_the_environment_is_refused(tmp_path):
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    lengths = [6, 6]
    write_pickle(tmp_path / "walker2d-medium-v2.pkl", flat_dataset(lengths), lengths)  # Hopper-sized data
    with pytest.raises(UserError, match="sizes 11 and 3, but Walker2d-v4's have"):
        make_task("d4rl", data_path=str(tmp_path / "walker2d-medium-v2.pkl"))


def test_without_gymnasium_scoring_says_what_to_install(dataset, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gymnasium", None)
    with pytest.raises(UserError, match=r'minrnn-cli\[rl\]".*task.eval_episodes=0'):
        make_task("d4rl", data_path=str(dataset))
    assert build(dataset).primary_metric == "loss"  # without rollouts nothing needs gymnasium


@pytest.mark.parametrize(("options", "message"), [
    ({"env": "ant"}, "task.env='ant' is invalid: choose one of halfcheetah, hopper, walker2d"),
    ({"context": 0}, "task.context=0 is invalid"),
    ({"return_scale": 0}, "task.return_scale=0 is invalid"),
])
def test_bad_settings_name_the_key(dataset, options, message):
    with pytest.raises(UserError, match=message):
        build(dataset, **options)


def test_bad_files_give_one_line(tmp_path):
    (tmp_path / "hopper.txt").write_text("no")
    (tmp_path / "hopper.pkl").write_bytes(pickle.dumps({"not": "a list"}))
    (tmp_path / "data.pkl").write_bytes(pickle.dumps([]))
    for path, message in ((tmp_path / "hopper.txt", "unknown suffix '.txt'"),
                          (tmp_path / "nope.hdf5", "is not a file"),
                          (tmp_path / "hopper.pkl", "expected a list of episodes"),
                          (tmp_path / "data.pkl", "starts with none of halfcheetah, hopper, walker2d; set task.env")):
        with pytest.raises(UserError, match=message):
            make_task("d4rl", data_path=str(path), eval_episodes=0)
    result = run_minrnn(tmp_path, "train", "task=d4rl", f"task.data_path={tmp_path / 'hopper.txt'}", *TINY_TRAINER)
    assert "unknown suffix" in assert_one_line_error(result)


def test_making_environments_prints_nothing_and_leaves_no_log_file(capfd, tmp_path, monkeypatch):
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # MuJoCo's model compiler warns about gymnasium's HalfCheetah model at every make
        make_environment("HalfCheetah-v4").close()
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""
    assert not list(tmp_path.iterdir())  # MuJoCo's own handler would append to MUJOCO_LOG.TXT here
