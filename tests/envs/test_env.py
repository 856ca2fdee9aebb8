import pickle
import shutil
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from env_helpers import CUSTOM, NAN_RECON, SINGLE_COIL_ONLY, tiny_env
from gymnasium.utils.env_checker import check_env as gym_check_env

from activemri.data import DataWarning
from activemri.envs.check import EXPECTED_SB3_WARNINGS
from activemri.envs.render import MASK_STRIP_HEIGHT
from activemri.envs.scenario import BudgetError


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    trace = [(obs, 0.0, info)]
    for a in actions:
        obs, reward, terminated, _, info = env.step(a)
        trace.append((obs, reward, info))
        if terminated:
            obs, info = env.reset()
            trace.append((obs, 0.0, info))
    return trace


def _equal(trace_a, trace_b):
    assert len(trace_a) == len(trace_b)
    for (oa, ra, ia), (ob, rb, ib) in zip(trace_a, trace_b, strict=True):
        assert ra == rb and ia == ib
        assert oa.keys() == ob.keys()
        for k in oa:
            assert np.array_equal(oa[k], ob[k]), k


def test_gymnasium_checkers_are_clean(tiny_data):
    env = tiny_env(tiny_data, reconstructor=CUSTOM, observe_kspace=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env, skip_render_check=True)
        passive = gym.make(
            "ActiveMRI/Builtin-v0",
            data_root=str(tiny_data),
            split=None,
            reconstructor="zero_filled",
            budget=3,
            initial_lines=4,
            device="cpu",
        )
        passive.reset(seed=0)
        for _ in range(3):
            passive.step(
                passive.action_space.sample(passive.unwrapped.action_masks().astype(np.int8))
            )


def test_sb3_checker_warns_only_about_float_images(tiny_data):
    from stable_baselines3.common.env_checker import check_env

    env = tiny_env(tiny_data, reconstructor=CUSTOM)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, warn=True)
    import re

    texts = [str(w.message) for w in caught]
    assert texts, "SB3 flags float image observations; the explanation list must stay in use"
    for text in texts:
        assert any(re.search(p, text) for p in EXPECTED_SB3_WARNINGS), text


def test_spaces_and_info(tiny_data):
    env = tiny_env(tiny_data, reconstructor=CUSTOM)
    obs, info = env.reset(seed=3)
    assert set(obs) == {"reconstruction", "mask", "uncertainty"}
    assert obs["reconstruction"].shape == (1, 32, 32) and obs["mask"].shape == (36,)
    assert env.action_space.n == 36
    assert obs in env.observation_space
    masks = env.action_masks()
    assert not masks[:2].any() and not masks[-2:].any()  # padding columns never valid
    assert masks.sum() == 32 - 4
    with h5py.File(info["file"]) as hf:
        assert info["data_range"] == pytest.approx(float(hf.attrs["max"]))
    obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(masks)[0]))
    assert type(reward) is float and type(terminated) is bool and truncated is False
    assert info["lines_acquired"] == 5 and info["acceleration"] == pytest.approx(32 / 5)
    assert info["repeated"] is False and set(info) >= {"ssim", "psnr", "nmse", "mse", "slice"}


def test_seeded_rollouts_are_exactly_reproducible(tiny_data):
    actions = [10, 11, 2, 12, 13, 30, 20, 21, 22, 23, 24]
    _equal(
        _rollout(tiny_env(tiny_data, extra_random_lines=2), 5, actions),
        _rollout(tiny_env(tiny_data, extra_random_lines=2), 5, actions),
    )
    other = _rollout(tiny_env(tiny_data, extra_random_lines=2), 6, actions)
    assert any(
        not np.array_equal(a[0]["mask"], b[0]["mask"])
        for a, b in zip(
            other, _rollout(tiny_env(tiny_data, extra_random_lines=2), 5, actions), strict=True
        )
    )


def test_pickle_round_trip_continues_identically(tiny_data):
    env = tiny_env(tiny_data, reconstructor=CUSTOM)
    env.reset(seed=0)
    env.step(10)
    clone = pickle.loads(pickle.dumps(env))
    actions = [11, 12, 13, 14, 15, 16, 20]
    for a in actions:
        out_a, out_b = env.step(a), clone.step(a)
        assert out_a[1:] == out_b[1:]
        for k in out_a[0]:
            assert np.array_equal(out_a[0][k], out_b[0][k])
        if out_a[2]:
            assert env.reset()[1] == clone.reset()[1]


@pytest.mark.parametrize("bad", [-1, 36, 2.5, "7"])
def test_invalid_actions_raise(tiny_data, bad):
    env = tiny_env(tiny_data)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(bad)


def test_repeat_is_harmless_and_budget_terminates(tiny_data):
    env = tiny_env(tiny_data, repeat_penalty=0.1, budget=3)
    obs, _ = env.reset(seed=0)
    center = int(np.flatnonzero(obs["mask"])[0])
    obs2, reward, terminated, _, info = env.step(center)
    assert reward == pytest.approx(-0.1) and info["repeated"] and not terminated
    assert np.array_equal(obs["reconstruction"], obs2["reconstruction"])
    _, _, terminated, _, info = env.step(0)  # padding column: a repeat as well
    assert info["repeated"] and not terminated
    _, _, terminated, _, info = env.step(10)
    assert terminated and info["steps"] == 3 and info["lines_acquired"] == 5


def test_episode_ends_when_all_lines_acquired(tiny_data):
    env = tiny_env(tiny_data, initial_lines=30, budget=None)
    env.reset(seed=0)
    left = np.flatnonzero(env.action_masks())
    assert left.size == 2
    assert env.step(int(left[0]))[2] is False
    assert env.step(int(left[1]))[2] is True


def test_observed_kspace_observation(tiny_multicoil):
    env = tiny_env(tiny_multicoil, observe_kspace=True)
    obs, _ = env.reset(seed=0)
    assert obs["kspace"].shape == (8, 40, 36)
    unseen = obs["kspace"][:, :, obs["mask"] == 0]
    assert np.all(unseen == 0) and not np.signbit(unseen).any()
    assert np.abs(obs["kspace"][:, :, obs["mask"] == 1]).sum() > 0


def test_sequential_order_is_one_pass_and_shuffle_permutes(tiny_data):
    env = tiny_env(tiny_data, order="sequential")
    n = len(env.unwrapped.venv.slice_indices)
    seen = []
    _, info = env.reset(seed=0)
    for _ in range(n):
        seen.append((info["file"], info["slice"], info["pass_index"]))
        _, info = env.reset()
    assert len(set(seen)) == n and {p for *_, p in seen} == {0} and info["pass_index"] == 1
    assert seen == sorted(seen)
    env = tiny_env(tiny_data, order="shuffle")
    _, info = env.reset(seed=1)
    shuffled = []
    for _ in range(n):
        shuffled.append((info["file"], info["slice"]))
        _, info = env.reset()
    assert len(set(shuffled)) == n and shuffled != [s[:2] for s in seen]


def test_splits_are_selectable(tiny_data):
    files = {s: set() for s in ("train", "val", "test")}
    for split in files:
        env = tiny_env(tiny_data, split=split, order="sequential")
        _, info = env.reset(seed=0)
        for _ in range(len(env.venv.slice_indices)):
            files[split].add(info["file"])
            _, info = env.reset()
    assert files["train"] and files["val"] and files["test"]
    assert not (files["train"] & files["val"]) and not (files["train"] & files["test"])


def test_data_range_falls_back_to_target_max(tiny_data, tmp_path):
    src = sorted(tiny_data.glob("*.h5"))[0]
    shutil.copy(src, tmp_path / src.name)
    with h5py.File(tmp_path / src.name, "r+") as hf:
        del hf.attrs["max"]
        target_max = float(hf["reconstruction_esc"][0].max())
    env = tiny_env(tmp_path, order="sequential")
    _, info = env.reset(seed=0)
    assert info["data_range"] == pytest.approx(target_max)


def test_render_frames(tiny_data):
    env = tiny_env(tiny_data, reconstructor=CUSTOM, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (32 + 2 + MASK_STRIP_HEIGHT, 4 * 34 - 2, 3) and frame.dtype == np.uint8
    strip = frame[-1]
    assert (strip == 255).all(axis=1).sum() > 0 and frame[:32].max() > 0
    plain = tiny_env(tiny_data, render_mode="rgb_array")
    plain.reset(seed=0)
    assert plain.render().shape == (46, 3 * 34 - 2, 3)


def test_configuration_errors_are_clear(tiny_data):
    with pytest.raises(ValueError, match="data_root"):
        gym.make("ActiveMRI/KneeSingleCoil-v0")
    with pytest.raises(ValueError, match="untrained"):
        tiny_env(tiny_data, reconstructor="unet")
    with pytest.raises(ValueError, match="targets"):
        tiny_env(tiny_data, reconstructor="recon_models/unet_default.yaml")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['budgett'\]"):
        tiny_env(tiny_data, budgett=3)
    with pytest.raises(FileNotFoundError):
        gym.make("ActiveMRI/Builtin-v0", data_root=str(tiny_data / "missing"))
    with pytest.raises(RuntimeError, match="reset"):
        tiny_env(tiny_data).step(3)
    with pytest.raises(ValueError, match="untrained"):
        tiny_env(tiny_data, reconstructor="activemri.recon_models.unet:UnetReconstructor")
    with pytest.raises(ValueError, match="nothing is left"):
        tiny_env(tiny_data, initial_lines=40).reset(seed=0)


def test_preset_mappings_take_data_root_and_scenario_fields(tiny_data):
    from activemri.envs import load_env_config

    config = load_env_config({"data_root": str(tiny_data), "budget": 3, "scenario": "miccai-2l"})
    assert config.data == str(tiny_data)
    assert (config.scenario.initial_lines, config.scenario.budget) == (2, 3)


def test_unreadable_slices_are_skipped_and_recorded(tiny_data, tmp_path):
    for src in sorted(tiny_data.glob("*.h5"))[:2]:
        shutil.copy(src, tmp_path / src.name)
    broken = sorted(tmp_path.glob("*.h5"))[0]
    with h5py.File(broken, "r+") as hf:
        k = hf["kspace"][()]
        k[1, 0, 0] = np.nan
        hf["kspace"][...] = k
    env = tiny_env(tmp_path, order="sequential")
    seen = []
    with pytest.warns(DataWarning, match="NaN"):
        _, info = env.reset(seed=0)
        for _ in range(5):
            seen.append((Path(info["file"]).name, info["slice"]))
            _, info = env.reset()
    assert (broken.name, 1) not in seen and len(set(seen)) == 5
    assert list(env.venv.bad_slices) == [1]


def test_custom_reconstructor_plugs_in_by_class_path(tiny_data):
    env = tiny_env(tiny_data, reconstructor=CUSTOM, reconstructor_config={"weight": 0.25})
    assert type(env.reconstructor).__name__ == "BlurredZeroFilled"
    assert env.reconstructor.weight.item() == 0.25
    obs, _ = env.reset(seed=0)
    assert obs["uncertainty"].max() > 0


def test_unacquired_kspace_in_the_file_never_reaches_the_agent(tiny_data, tmp_path):
    """Rewrite every column an episode never acquires: observations and rewards are unchanged."""
    src = sorted(tiny_data.glob("*.h5"))[0]
    actions = [10, 12, 20, 25, 12]
    runs = []
    for variant in ("clean", "perturbed"):
        folder = tmp_path / variant
        folder.mkdir()
        shutil.copy(src, folder / src.name)
        env = tiny_env(
            folder,
            reconstructor=CUSTOM,
            observe_kspace=True,
            order="sequential",
            extra_random_lines=2,
            budget=len(actions) + 1,
        )
        if variant == "perturbed":
            probe = tiny_env(folder, observe_kspace=True, order="sequential", extra_random_lines=2)
            obs, _ = probe.reset(seed=4)
            acquired = obs["mask"].astype(bool)
            acquired[actions] = True
            with h5py.File(folder / src.name, "r+") as hf:
                k = hf["kspace"][()]
                noise = np.random.default_rng(0).standard_normal(k.shape).astype(np.float32)
                k[..., ~acquired] = (1e3 * noise - 1j * noise)[..., ~acquired]
                hf["kspace"][...] = k
        runs.append(_rollout(env, 4, actions))
    for (oa, ra, ia), (ob, rb, ib) in zip(*runs, strict=True):
        assert ra == rb
        assert {k: v for k, v in ia.items() if k != "file"} == {
            k: v for k, v in ib.items() if k != "file"
        }
        for key in oa:
            assert np.array_equal(oa[key], ob[key]), key


def test_score_candidates_through_the_env(tiny_data):
    env = tiny_env(tiny_data, reconstructor=CUSTOM)
    obs, info = env.reset(seed=0)
    lines = [10, int(np.flatnonzero(obs["mask"])[0]), 0]
    scores = env.score_candidates(lines)
    assert scores[1] == pytest.approx(info["score"]) and scores[2] == pytest.approx(info["score"])
    step_info = env.step(10)[4]
    assert scores[0] == pytest.approx(step_info["score"], abs=1e-6)
    with pytest.raises(ValueError, match="lines must be"):
        env.score_candidates([99])


def test_human_render_draws_a_window_and_closes(tiny_data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = tiny_env(tiny_data, render_mode="human")
    env.reset(seed=0)
    env.step(10)  # human mode renders on every step
    figure = env._window["figure"]
    assert plt.fignum_exists(figure.number)
    assert env._window["image"].get_array().shape[:2] == (46, 3 * 34 - 2)
    env.close()
    assert not plt.fignum_exists(figure.number)


def test_cache_slices_reads_each_slice_once(tiny_data, monkeypatch):
    from activemri.data import SliceDataset

    env = tiny_env(tiny_data, order="sequential", cache_slices=True)
    n = len(env.venv.slice_indices)
    reads = []
    original = SliceDataset.__getitem__
    monkeypatch.setattr(
        SliceDataset, "__getitem__", lambda self, i: reads.append(i) or original(self, i)
    )
    first = [env.reset(seed=0)[0]["reconstruction"]] + [
        env.reset()[0]["reconstruction"] for _ in range(n - 1)
    ]
    second = [env.reset()[0]["reconstruction"] for _ in range(n)]
    assert sorted(reads) == sorted(set(reads)) and len(reads) == n
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_step_after_the_episode_ended_raises_until_reset(tiny_data):
    from gymnasium.error import ResetNeeded

    env = tiny_env(tiny_data, budget=1)
    env.reset(seed=0)
    *_, terminated, _, info = env.step(10)
    assert terminated and info["lines_acquired"] == 5
    for action in (11, 10):
        with pytest.raises(ResetNeeded, match="ended"):
            env.step(action)
    with pytest.raises(RuntimeError, match="ended"):  # still a RuntimeError, as before reset
        env.step(11)
    env.reset()
    assert env.step(11)[2] is True


def test_an_acceleration_that_cannot_be_honoured_is_an_error_naming_files(knee_like, tiny_data):
    # 16x of 334 measured lines is 21, below the 27 central lines of the 4x center fraction.
    with pytest.raises(BudgetError, match=r"vol00000\.h5.*round\(334 / 16\) = 21 lines.*27"):
        tiny_env(
            knee_like, initial_lines=None, center_fraction=0.08, budget=None, acceleration=16.0
        )
    with pytest.raises(BudgetError, match=r"round\(32 / 1000\) = 0 lines"):
        tiny_env(tiny_data, acceleration=1000.0, budget=None)
    with pytest.raises(BudgetError, match="budget 40 exceeds the 28 measured lines"):
        tiny_env(tiny_data, budget=40)


def test_the_acceleration_actually_run_is_reported(tiny_data):
    # 3x of 32 measured lines is round(10.67) = 11 lines: 32 / 11 = 2.91x, 7 steps after 4.
    env = tiny_env(tiny_data, acceleration=3.0, budget=None)
    assert env.actual_acceleration == pytest.approx(32 / 11)
    assert set(env.venv.actual_accelerations) == set(env.venv.slice_indices)
    _, info = env.reset(seed=0)
    assert info["actual_acceleration"] == pytest.approx(32 / 11) and info["budget"] == 7
    free = np.flatnonzero(env.action_masks())
    for t in range(7):
        *_, terminated, _, info = env.step(int(free[t]))
    assert terminated and info["acceleration"] == pytest.approx(info["actual_acceleration"])
    assert env.venv.episodes[0].actual_acceleration == pytest.approx(32 / 11)


def test_multicoil_files_are_refused_by_the_single_coil_env_and_vice_versa(
    knee_like, knee_like_multicoil
):
    with pytest.raises(ValueError, match=r"single-coil environment.*vol00000\.h5 \(4 coils\)"):
        gym.make("ActiveMRI/KneeSingleCoil-v0", data_root=str(knee_like_multicoil), split=None,
                 device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match=r"multi-coil environment.*\(1 coils\)"):
        gym.make("ActiveMRI/KneeMultiCoil-v0", data_root=str(knee_like), split=None,
                 device="cpu")  # fmt: skip


def test_a_single_coil_model_on_multicoil_data_fails_at_construction(tiny_multicoil):
    with pytest.raises(ValueError, match="single-coil data only, but the data have 4 coils"):
        tiny_env(tiny_multicoil, reconstructor=SINGLE_COIL_ONLY, domain_check=False)


def test_kspace_narrower_than_the_targets_fails_at_construction(tiny_data, tmp_path):
    src = sorted(tiny_data.glob("*.h5"))[0]
    shutil.copy(src, tmp_path / src.name)
    with h5py.File(tmp_path / src.name, "r+") as hf:
        del hf["ismrmrd_header"]  # the target then defines the reconstruction size
        slices = hf["reconstruction_esc"].shape[0]
        del hf["reconstruction_esc"]
        hf["reconstruction_esc"] = np.ones((slices, 32, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="36 k-space is smaller than their 32x40 targets"):
        tiny_env(tmp_path)


def _copy_with(tiny_data, folder, edit):
    folder.mkdir()
    for src in sorted(tiny_data.glob("*.h5"))[:2]:
        shutil.copy(src, folder / src.name)
    first = sorted(folder.glob("*.h5"))[0]
    with h5py.File(first, "r+") as hf:
        edit(hf)
    return first


def test_finite_but_huge_kspace_is_skipped_and_observations_stay_finite(tiny_data, tmp_path):
    def huge(hf):
        k = hf["kspace"][()]
        k[1, 20, 18] = 3e38  # finite in complex64; its images overflow float32
        hf["kspace"][...] = k

    broken = _copy_with(tiny_data, tmp_path / "huge", huge)
    env = tiny_env(tmp_path / "huge", order="sequential", observe_kspace=True)
    seen = []
    with pytest.warns(DataWarning, match="k-space energy 3e\\+38"):
        obs, info = env.reset(seed=0)
        for _ in range(5):
            assert all(np.isfinite(v).all() for v in obs.values())
            assert np.isfinite(info["ssim"])
            seen.append((Path(info["file"]).name, info["slice"]))
            obs, info = env.reset()
    assert (broken.name, 1) not in seen and list(env.venv.bad_slices) == [1]


def test_an_all_zero_target_without_max_is_skipped(tiny_data, tmp_path):
    def blank(hf):
        del hf.attrs["max"]
        t = hf["reconstruction_esc"][()]
        t[0] = 0.0
        hf["reconstruction_esc"][...] = t

    _copy_with(tiny_data, tmp_path / "blank", blank)
    env = tiny_env(tmp_path / "blank", order="sequential")
    with pytest.warns(DataWarning, match="zero everywhere"):
        _, info = env.reset(seed=0)
    assert info["slice"] == 1 and np.isfinite(info["ssim"]) and list(env.venv.bad_slices) == [0]


def test_a_reconstructor_returning_nan_fails_at_reset(tiny_data):
    env = tiny_env(tiny_data, reconstructor=NAN_RECON, order="sequential")
    with pytest.raises(FloatingPointError, match=r"vol00000\.h5 slice 0"):
        env.reset(seed=0)
