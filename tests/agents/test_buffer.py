"""Compact replay memory: documented bytes per transition, faithful storage, SB3 contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from activemri.agents.buffer import CompactReplayBuffer

BUILTIN = 128  # built-in image side and line count


def _space(side: int, lines: int, uncertainty: bool = False) -> spaces.Dict:
    image = spaces.Box(-1e4, 1e4, shape=(1, side, side), dtype=np.float32)
    entries: dict[str, spaces.Space[np.ndarray]] = {
        "reconstruction": image,
        "mask": spaces.MultiBinary(lines),
    }
    if uncertainty:
        entries["uncertainty"] = spaces.Box(0.0, 1e4, shape=(1, side, side), dtype=np.float32)
    return spaces.Dict(entries)


@pytest.mark.parametrize(("uncertainty", "images"), [(False, 1), (True, 2)])
def test_bytes_per_transition_as_documented_and_100k_builtin_under_2gb(
    uncertainty: bool, images: int
) -> None:
    space = _space(BUILTIN, BUILTIN, uncertainty)
    buffer = CompactReplayBuffer(100_000, space, spaces.Discrete(BUILTIN), "cpu", n_envs=16)
    # Per image map: one byte per pixel + float32 (min, step); mask: one bit per line;
    # int64 action + float32 reward + float32 done.
    expected = images * (BUILTIN * BUILTIN + 8) + BUILTIN // 8 + 8 + 4 + 4
    assert buffer.bytes_per_transition() == expected
    assert buffer.nbytes() == expected * 100_000
    if not uncertainty:  # the observation of the Double DQN presets
        assert buffer.nbytes() < 2e9


class _FakeEpisodes:
    """Episodes of random images whose mask gains the chosen line at every step."""

    def __init__(self, n_envs: int, lines: int, length: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_envs, self.lines, self.length = n_envs, lines, length
        self.steps = np.zeros(n_envs, dtype=int)
        self.obs = {"reconstruction": self._images(n_envs), "mask": self._masks(n_envs)}

    def _images(self, n: int) -> np.ndarray:
        scale = self.rng.uniform(0.1, 10.0, size=(n, 1, 1, 1))
        return (self.rng.normal(size=(n, 1, 6, 6)) * scale).astype(np.float32)

    def _masks(self, n: int) -> np.ndarray:
        masks = np.zeros((n, self.lines), dtype=np.int8)
        masks[:, :2] = 1
        return masks

    def step(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(obs, next_obs, action, done) of one batched step; ``self.obs`` moves on."""
        obs = {k: v.copy() for k, v in self.obs.items()}
        actions = np.array([self.rng.choice(np.flatnonzero(m == 0)) for m in obs["mask"]])
        nxt = {"reconstruction": self._images(self.n_envs), "mask": obs["mask"].copy()}
        nxt["mask"][np.arange(self.n_envs), actions] = 1
        self.steps += 1
        done = self.steps == self.length
        self.obs = {k: v.copy() for k, v in nxt.items()}
        if done.any():
            self.obs["reconstruction"][done] = self._images(int(done.sum()))
            self.obs["mask"][done] = self._masks(int(done.sum()))
            self.steps[done] = 0
        return obs, nxt, actions, done


def _fill(buffer: CompactReplayBuffer, episodes: _FakeEpisodes, steps: int) -> list:  # type: ignore[type-arg]
    history = []
    for _ in range(steps):
        obs, nxt, actions, done = episodes.step()
        rewards = episodes.rng.normal(size=episodes.n_envs).astype(np.float32)
        buffer.add(obs, nxt, actions, rewards, done.astype(np.float32), [{}] * episodes.n_envs)
        history.append((obs, nxt, actions, rewards, done))
    return history


def test_stored_transitions_read_back_within_half_a_quantization_level() -> None:
    n_envs = 3
    space = _space(6, 10)
    buffer = CompactReplayBuffer(3 * 50, space, spaces.Discrete(10), "cpu", n_envs=n_envs)
    episodes = _FakeEpisodes(n_envs, lines=10, length=4, seed=0)
    history = _fill(buffer, episodes, 20)
    rows = np.arange(20)
    np.random.seed(1)  # noqa: NPY002  (the buffer draws env indices from NumPy's global RNG)
    envs = np.random.randint(0, n_envs, size=rows.size)  # noqa: NPY002
    np.random.seed(1)  # noqa: NPY002
    batch = buffer._get_samples(rows)
    for i, (row, env) in enumerate(zip(rows, envs, strict=True)):
        obs, nxt, action, reward, done = history[row]
        for got, want in ((batch.observations, obs), (batch.next_observations, nxt)):
            if got is batch.next_observations and done[env]:
                continue  # a terminal step's next observation is not kept (never bootstrapped)
            image = want["reconstruction"][env]
            half_level = (image.max() - image.min()) / 255 / 2
            err = np.abs(got["reconstruction"][i].numpy() - image).max()
            assert err <= half_level * 1.001 + 1e-6
            np.testing.assert_array_equal(got["mask"][i].numpy(), want["mask"][env])
        assert int(batch.actions[i, 0]) == action[env]
        assert float(batch.rewards[i, 0]) == reward[env]
        assert float(batch.dones[i, 0]) == float(done[env])
    assert batch.observations["reconstruction"].dtype == torch.float32


def test_after_wraparound_samples_are_whole_transitions() -> None:
    space = _space(6, 10)
    buffer = CompactReplayBuffer(2 * 5, space, spaces.Discrete(10), "cpu", n_envs=2)
    _fill(buffer, _FakeEpisodes(2, lines=10, length=3, seed=2), 23)  # wraps 4 times
    assert buffer.full
    np.random.seed(0)  # noqa: NPY002
    batch = buffer.sample(400)
    live = batch.dones[:, 0] == 0
    mask, nxt = batch.observations["mask"], batch.next_observations["mask"]
    onehot = torch.nn.functional.one_hot(batch.actions[:, 0], 10).float()
    # A transition whose observation had been overwritten by the row being written would
    # break "next mask = mask + chosen line".
    torch.testing.assert_close(nxt[live], mask[live] + onehot[live])
    assert (mask[range(400), batch.actions[:, 0]] == 0).all()


def test_refuses_what_it_cannot_store() -> None:
    space = _space(6, 10)
    with pytest.raises(TypeError, match="Dict"):
        CompactReplayBuffer(10, space["reconstruction"], spaces.Discrete(10), "cpu")
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        CompactReplayBuffer(10, space, spaces.Discrete(10), "cpu", optimize_memory_usage=True)
    buffer = CompactReplayBuffer(10, space, spaces.Discrete(10), "cpu")
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4)
    obs, nxt, actions, _ = _FakeEpisodes(1, 10, 3, 0).step()
    with pytest.raises(ValueError, match="truncated"):
        buffer.add(obs, nxt, actions, np.zeros(1), np.ones(1), [{"TimeLimit.truncated": True}])


def test_state_dict_keeps_only_written_rows_and_restores_full_capacity(tmp_path) -> None:
    space = _space(6, 10)
    buffer = CompactReplayBuffer(2 * 1000, space, spaces.Discrete(10), "cpu", n_envs=2)
    _fill(buffer, _FakeEpisodes(2, lines=10, length=3, seed=3), 10)
    path = tmp_path / "replay.pt"
    torch.save(buffer.state_dict(), path)
    assert path.stat().st_size < buffer.nbytes() / 20  # 11 of 1000 rows
    restored = CompactReplayBuffer(2 * 1000, space, spaces.Discrete(10), "cpu", n_envs=2)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.nbytes() == buffer.nbytes() and restored.pos == buffer.pos == 10
    for name in ("actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name))
    for key in buffer.images:
        np.testing.assert_array_equal(restored.images[key], buffer.images[key])
        np.testing.assert_array_equal(restored.ranges[key], buffer.ranges[key])
    np.testing.assert_array_equal(restored.masks["mask"], buffer.masks["mask"])
    _fill(restored, _FakeEpisodes(2, lines=10, length=3, seed=4), 5)  # still writable
    assert restored.pos == 15


def test_load_state_dict_refuses_another_layout() -> None:
    buffer = CompactReplayBuffer(40, _space(6, 10), spaces.Discrete(10), "cpu", n_envs=2)
    _fill(buffer, _FakeEpisodes(2, lines=10, length=3, seed=3), 5)
    state = buffer.state_dict()
    other = CompactReplayBuffer(60, _space(6, 10), spaces.Discrete(10), "cpu", n_envs=2)
    with pytest.raises(ValueError, match="does not fit"):
        other.load_state_dict(state)
    wider = CompactReplayBuffer(40, _space(8, 10), spaces.Discrete(10), "cpu", n_envs=2)
    with pytest.raises(ValueError, match="images/reconstruction"):
        wider.load_state_dict(state)
    with pytest.raises(ValueError, match="not an activemri replay memory"):
        buffer.load_state_dict({"format": "something else"})
    bad = {**state, "pos": 99}
    with pytest.raises(ValueError, match="write position"):
        buffer.load_state_dict(bad)
