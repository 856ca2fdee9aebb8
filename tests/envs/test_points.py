"""The points geometry: 3-D volumes' ky-kz planes, point actions, their policies and checks."""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
from env_helpers import CUSTOM

from activemri.agents import FixedMaskPolicy, GreedyOraclePolicy, LowToHighPolicy, RandomPolicy
from activemri.agents.rollout import run_policy
from activemri.data import CorruptSliceError, SliceDataset, make_builtin
from activemri.envs import ActiveMRIEnv, ActiveMRIVectorEnv
from activemri.geometry import Lines, Points, geometry_from_spec
from activemri.kspace import center_crop, ifft2c, rss, zero_filled
from activemri.masks2d import MASK_TYPES_2D, make_mask_2d, normalized_radius


@pytest.fixture(scope="module")
def tiny3d(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny3d")
    make_builtin(out, "tiny3d", seed=0)
    return out


@pytest.fixture(scope="module")
def tiny3d_multicoil(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny3d_mc")
    make_builtin(out, "tiny3d", seed=0, num_coils=3, num_volumes=2)
    return out


def _config(data, **overrides):
    config = {
        "data_root": str(data), "split": None, "reconstructor": "zero_filled",
        "geometry": "points", "initial_lines": 4, "budget": 12, "device": "cpu",
    }  # fmt: skip
    config.update(overrides)
    return config


def test_3d_volumes_load_as_planes_of_the_inverse_transformed_readout(tiny3d):
    ds = SliceDataset(tiny3d)
    assert ds.volumes[0].encoding == "3d" and ds.slice_meta(0).encoding == "3d"
    assert len(ds) == 4 * 4 and ds.slice_shape(0) == (1, 16, 12)
    with h5py.File(ds.volumes[0].path, "r") as hf:
        volume = hf["kspace"][()]
    # the loader's plane x is the readout inverse FFT of the 3-D k-space at x
    hybrid = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(volume, axes=0), axis=0, norm="ortho"),
                             axes=0)  # fmt: skip
    for x in range(4):
        sample = ds[x]
        np.testing.assert_allclose(sample.kspace[0].numpy(), hybrid[x], rtol=1e-5, atol=1e-9)
        image = center_crop(rss(ifft2c(sample.kspace[None]), dim=1), (16, 12))[0]
        torch.testing.assert_close(image, sample.target, rtol=1e-4, atol=1e-9)


def test_a_3d_volume_with_nan_is_unreadable_in_every_plane(tiny3d, tmp_path):
    src = sorted(tiny3d.glob("*.h5"))[0]
    shutil.copy(src, tmp_path / src.name)
    with h5py.File(tmp_path / src.name, "r+") as hf:
        k = hf["kspace"][()]
        k[1, 3, 3] = np.nan
        hf["kspace"][...] = k
    ds = SliceDataset(tmp_path)
    for x in range(4):
        with pytest.raises(CorruptSliceError, match=rf"{src.name} slice {x}: k-space has NaN"):
            ds[x]


def test_geometries_map_actions_to_entries():
    points = Points(ellipse=True)
    measured = points.measured(np.ones(12, bool), 16).reshape(16, 12)
    assert not measured[0, 0] and measured[8, 6] and measured.sum() < 16 * 12
    assert points.center(16, 12, 4).reshape(16, 12)[6:10, 4:8].all()
    assert points.center(16, 12, 4).sum() == 16
    rank = points.center_rank(16, 12)
    assert rank[8 * 12 + 6] == 0 and sorted(rank.tolist()) == list(range(16 * 12))
    k = torch.randn(2, 3, 16, 12, dtype=torch.complex64)
    taken = points.take(k, torch.tensor([0, 1]), torch.tensor([5, 12 * 7 + 3]))
    torch.testing.assert_close(taken, torch.stack([k[0, :, 0, 5], k[1, :, 7, 3]]))
    assert geometry_from_spec("lines") == Lines() and geometry_from_spec(points) is points
    with pytest.raises(ValueError, match="elliptical shutter needs the 'points'"):
        geometry_from_spec("lines", ellipse=True)
    with pytest.raises(ValueError, match="unknown geometry"):
        geometry_from_spec("spiral")


@pytest.mark.parametrize("mask_type", sorted(MASK_TYPES_2D))
def test_point_masks_are_exact_seeded_and_within_the_shutter(mask_type):
    shape = (32, 24)
    valid = Points(ellipse=True).measured(np.ones(24, bool), 32).reshape(shape)
    for count in (40, 96, 200):
        mask, side = make_mask_2d(mask_type, shape, count, 4, np.random.default_rng(1), valid)
        again, _ = make_mask_2d(mask_type, shape, count, 4, np.random.default_rng(1), valid)
        assert mask.shape == shape and mask.sum() == count and side == 4
        assert not (mask & ~valid).any() and mask[14:18, 10:14].all()
        assert np.array_equal(mask, again)
    with pytest.raises(ValueError, match="cannot acquire"):
        make_mask_2d(mask_type, shape, int(valid.sum()) + 1, 4, np.random.default_rng(0), valid)


def test_poisson_disc_spreads_points_more_evenly_than_random():
    shape, count = (64, 48), 300
    gaps = {}
    for kind in ("poisson", "random"):
        mask, _ = make_mask_2d(kind, shape, count, 0, np.random.default_rng(3))
        ys, zs = np.nonzero(mask)
        pts = np.stack([ys, zs], 1).astype(float)
        d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.eye(len(pts)) * 1e9
        gaps[kind] = np.percentile(d.min(1), 5)  # the closest neighbours
    assert gaps["poisson"] > 1.5 * gaps["random"]
    mask, _ = make_mask_2d("poisson", shape, count, 0, np.random.default_rng(3))
    radius = normalized_radius(shape)
    assert mask[radius < 0.4].mean() > mask[radius > 0.8].mean()  # variable density


def test_point_env_passes_the_checkers_and_steps_points(tiny3d):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = ActiveMRIEnv(**_config(tiny3d, elliptical_shutter=True, reconstructor=CUSTOM))
    assert env.action_space == gym.spaces.Discrete(16 * 12)
    assert env.observation_space["mask"].n == 16 * 12
    gym_check(env, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the expected float-image notes (see envs/check.py)
        sb3_check(env, warn=True)
    obs, _ = env.reset(seed=0)
    start = obs["mask"].reshape(16, 12)
    assert start.sum() == 16 and start[6:10, 4:8].all()
    free = env.action_masks()
    assert not free[0] and free.sum() == env.venv.state.valid.sum() - 16  # corners: shutter
    action = int(np.flatnonzero(free)[0])
    obs, *_ = env.step(action)
    assert obs["mask"][action] == 1 and obs["mask"].sum() == 17
    frame = ActiveMRIEnv(**_config(tiny3d), render_mode="rgb_array")
    frame.reset(seed=0)
    image = frame.render()
    assert image.shape[1] == 4 * (12 + 2) - 2  # target, recon, error, mask panel


def test_unacquired_points_never_reach_the_agent(tiny3d, tmp_path):
    """Perturb every 3-D k-space entry whose plane point an episode never acquires."""
    src = sorted(tiny3d.glob("*.h5"))[0]
    actions = [3, 40, 41, 100, 150, 40]
    runs = []
    for variant in ("clean", "perturbed"):
        folder = tmp_path / variant
        folder.mkdir()
        shutil.copy(src, folder / src.name)
        if variant == "perturbed":
            probe = ActiveMRIEnv(**_config(folder, order="sequential"))
            obs, _ = probe.reset(seed=4)
            acquired = obs["mask"].astype(bool)
            acquired[actions] = True
            with h5py.File(folder / src.name, "r+") as hf:
                k = hf["kspace"][()]  # (kx, ky, kz): a (ky, kz) point is a whole readout line
                noise = np.random.default_rng(0).standard_normal(k.shape).astype(np.float32)
                unseen = ~acquired.reshape(16, 12)
                k[:, unseen] = (1e3 * noise - 1j * noise)[:, unseen]
                hf["kspace"][...] = k
        config = _config(folder, order="sequential", reconstructor=CUSTOM, domain_check=False,
                         observe_kspace=True, budget=len(actions))  # fmt: skip
        env = ActiveMRIEnv(**config)
        obs, _ = env.reset(seed=4)
        trace = [obs]
        for a in actions:
            obs, reward, _, _, info = env.step(a)
            trace.append((obs, reward, {k: v for k, v in info.items() if k != "file"}))
        runs.append(trace)
    assert len(runs[0]) == len(runs[1])
    for a, b in zip(*runs, strict=True):
        if isinstance(a, tuple):
            assert a[1] == b[1] and a[2] == b[2]
            a, b = a[0], b[0]
        for key in a:
            assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("data", ["tiny3d", "tiny3d_multicoil"])
def test_linear_fast_path_and_candidate_scores_match_the_plain_forward(data, request):
    root = request.getfixturevalue(data)
    venv = ActiveMRIVectorEnv(2, **_config(root, elliptical_shutter=True))
    assert venv.core.fast_linear
    venv.torch_reset(seed=1)
    for actions in ([20, 21], [100, 35], [20, 22]):
        venv.torch_step(torch.tensor(actions))
        state = venv.state
        mask = state.mask.view(2, 16, 12)
        plain = zero_filled(state.observed, mask, venv.recon_size)
        torch.testing.assert_close(state.recon, plain, rtol=1e-4, atol=1e-9)
    candidates = torch.nonzero(venv.state.free_lines()[0]).flatten()[:6]
    lines = torch.stack([candidates, candidates])
    scores = venv.torch_score_candidates(lines)
    for j, a in enumerate(candidates.tolist()):
        nxt = venv.core.transition(venv.state, torch.tensor([a, a]))
        torch.testing.assert_close(scores[:, j], nxt.score, rtol=1e-5, atol=1e-6)


def test_point_policies(tiny3d):
    venv = ActiveMRIVectorEnv(2, **_config(tiny3d, split=None, order="sequential"))
    obs, _ = venv.torch_reset(seed=0)
    policy_obs = venv.torch_policy_observation(obs)
    assert policy_obs["action_grid"].tolist() == [16, 12]
    first = LowToHighPolicy().act(policy_obs)
    radius = normalized_radius((16, 12)).reshape(-1)
    free = policy_obs["action_mask"][0].numpy()
    assert radius[int(first[0])] == radius[free].min()

    results = {}
    for name, policy in {
        "poisson": FixedMaskPolicy("poisson"),
        "equispaced": FixedMaskPolicy("equispaced"),
        "random": RandomPolicy(0),
        "low_to_high": LowToHighPolicy(),
        "oracle": GreedyOraclePolicy(venv.torch_score_candidates),
    }.items():
        results[name] = run_policy(venv, policy, seed=0)
    finals = {k: float(np.mean([row[-1] for row in v.metrics["ssim"]])) for k, v in results.items()}
    assert all(len(v) == len(venv.slice_indices) for v in results.values())
    assert finals["oracle"] >= max(v for k, v in finals.items() if k != "oracle") - 1e-6
    with pytest.raises(ValueError, match="for lines; this env acquires points"):
        run_policy(venv, FixedMaskPolicy("variable_density_polynomial"), seed=0)


def test_varnet_and_tv_take_point_masks(tiny3d_multicoil):
    from activemri.recon_models import resolve

    ds = SliceDataset(tiny3d_multicoil)
    sample = ds[1]
    mask, side = make_mask_2d("poisson", (16, 12), 60, 4, np.random.default_rng(0))
    kspace, mask_t = sample.kspace[None], torch.from_numpy(mask)[None]
    for name in ("tv", "varnet_default"):
        config = {} if name == "tv" else {"num_cascades": 2, "chans": 4, "sens_chans": 4,
                                          "pools": 2, "sens_pools": 2}  # fmt: skip
        model = resolve(name if name == "tv" else "varnet", recon_size=(16, 12), config=config,
                        allow_untrained=True)  # fmt: skip
        out = model(kspace, mask_t, num_low_frequencies=side)
        assert out.image.shape == (1, 16, 12) and torch.isfinite(out.image).all()
        # only acquired points are read
        perturbed = torch.where(mask_t[:, None], kspace, 1e3 + 0j)
        again = model(perturbed, mask_t, num_low_frequencies=side)
        torch.testing.assert_close(out.image, again.image)


def test_reconstructors_train_and_evaluate_on_point_masks(tiny3d, tmp_path):
    from activemri.recon_models import resolve
    from activemri.recon_models.evaluate import evaluate_reconstructor
    from activemri.recon_models.training import train

    preset = {
        "model": "unet",
        "config": {"recon_size": [16, 12], "chans": 4, "num_pool_layers": 1,
                   "uncertainty": True, "residual": True, "head_chans": 4},
        "train": {"data": str(tiny3d), "epochs": 1, "batch_size": 4, "augment": True,
                  "patterns": ["variable_density", "random", "equispaced", "low_to_high"],
                  "val_accelerations": [4], "seed": 0},
    }  # fmt: skip
    result = train(preset, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.pt").is_file() and result["history"]
    model = resolve(str(tmp_path / "run" / "model.pt"))
    ds = SliceDataset(tiny3d)
    report = evaluate_reconstructor(model, ds, "poisson", 4.0, seed=0, batch_size=4)
    assert 0 < report["model"]["ssim"]["mean"] <= 1
    with pytest.raises(ValueError, match="mask type 'variable_density_polynomial' is for lines"):
        evaluate_reconstructor(model, ds, "variable_density_polynomial", 4.0, seed=0)


def test_evaluation_of_point_policies_with_2d_mask_figures(tiny3d, tmp_path):
    from activemri.evaluation.harness import EvalSettings, evaluate

    overrides = {k: v for k, v in _config(tiny3d).items() if k not in ("budget",)}
    settings = EvalSettings(
        policies=("random", "low_to_high", "poisson=mask:poisson", "equispaced"),
        accelerations=(4.0, 8.0), split="all", max_slices=4, batch_size=2, device="cpu",
        overrides=overrides,
    )  # fmt: skip
    doc = evaluate(settings, tmp_path / "eval", plots=True, log=None, show_progress=False)
    labels = {(r["policy"], r["acceleration"]) for r in doc["results"]}
    assert ("poisson", 8.0) in labels and ("low_to_high", 4.0) in labels
    example = np.load(next((tmp_path / "eval" / "runs").rglob("poisson@4x.npz")))
    assert example["mask"].shape == (16, 12)  # drawn as an image of the plane
    assert example["mask"].sum() == round(16 * 12 / 4)
    assert list((tmp_path / "eval").glob("*example*.png"))


def test_the_volume_cache_follows_the_file(tiny3d, tmp_path):
    src = sorted(tiny3d.glob("*.h5"))[0]
    shutil.copy(src, tmp_path / src.name)
    ds = SliceDataset(tmp_path, volume_cache_bytes=0)  # keeps only the latest volume
    before = ds[0].kspace.clone()
    with h5py.File(tmp_path / src.name, "r+") as hf:
        hf["kspace"][...] = 2 * hf["kspace"][()]
    torch.testing.assert_close(ds[0].kspace, 2 * before)  # rewritten on disk: read again
    assert make_mask_2d("variable_density", (4, 4), 16, 4, np.random.default_rng(0))[0].all()


def test_a_greedy_point_ordering_is_learned_and_played(tiny3d, tmp_path):
    from activemri.agents.learned_mask import learn_ordering, load_ordering
    from activemri.agents.policies import FixedOrderPolicy

    config = _config(tiny3d, split=None, order="sequential")
    ordering = learn_ordering(config, sample_size=3, max_lines=24, out=tmp_path / "o.json")
    assert ordering.width == 16 * 12 and len(ordering.initial) == 16
    assert len(ordering.order) == 8 and not set(ordering.order) & set(ordering.initial)
    assert np.all(np.diff(ordering.scores) > 0)  # each point added raises the sample's score
    policy = FixedOrderPolicy(load_ordering(tmp_path / "o.json").order)
    venv = ActiveMRIVectorEnv(2, **{**config, "budget": 8})
    obs, _ = venv.torch_reset(seed=0)
    first = policy.act(venv.torch_policy_observation(obs))
    assert first.tolist() == [ordering.order[0]] * 2
