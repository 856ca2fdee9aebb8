from pathlib import Path

import gymnasium as gym
import pytest
import yaml

from activemri.envs import ENV_IDS, load_env_config
from activemri.envs.check import check_env_id
from activemri.envs.config import preset_dir

pytestmark = pytest.mark.slow


def test_every_preset_is_registered_and_every_id_has_a_preset():
    files = {p.stem: yaml.safe_load(p.read_text()) for p in Path(preset_dir()).glob("*.yaml")}
    assert set(files) == set(ENV_IDS.values())
    for env_id, preset in ENV_IDS.items():
        assert files[preset]["id"] == env_id
        assert env_id in gym.registry
        assert gym.registry[env_id].vector_entry_point == "activemri.envs.vector:ActiveMRIVectorEnv"
        assert load_env_config(preset).id == env_id


def test_miccai_and_acceleration_scenarios_are_selectable():
    config = load_env_config("knee-singlecoil-v0")
    assert (config.scenario.initial_lines, config.scenario.budget) == (30, 70)
    assert load_env_config("knee-singlecoil-v0", scenario="miccai-2l").scenario.budget == 98
    assert load_env_config("knee-singlecoil-v0", scenario="8x").scenario.acceleration == 8.0


def _overrides(env_id, knee_like, knee_like_multicoil):
    if env_id == "ActiveMRI/KneeSingleCoil-v0":
        return {"data_root": str(knee_like), "split": None, "budget": 3}
    if env_id == "ActiveMRI/KneeMultiCoil-v0":
        # 12x: round(334 / 12) = 28 lines, one step past the 27 central ones
        return {"data_root": str(knee_like_multicoil), "split": None, "acceleration": 12.0}
    if env_id == "ActiveMRI/BuiltinMultiCoil-v0":
        return {"budget": 3}  # the real 8-coil data and model; short episodes keep it quick
    return {}  # the real preset: builds built-in default data, shipped U-Net


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_check_env_passes_on_every_registered_id(env_id, knee_like, knee_like_multicoil):
    report = check_env_id(
        env_id, device="cpu", **_overrides(env_id, knee_like, knee_like_multicoil)
    )
    assert report.ok, report.failed
    assert {"gymnasium.check_env", "sb3.check_env", "reproducible", "telescoping", "render"} <= set(
        report.passed
    )
    if env_id == "ActiveMRI/Builtin-v0":
        assert report.summary["reconstructor"] == "UnetReconstructor"
        assert report.summary["lines_acquired"] == 32
    if env_id == "ActiveMRI/BuiltinMultiCoil-v0":
        assert report.summary["reconstructor"] == "UnetReconstructor"
    if env_id == "ActiveMRI/Builtin3D-v0":  # ky-kz points of the built-in 3-D volumes
        assert report.summary["reconstructor"] == "UnetReconstructor"
        assert report.summary["actions"] == 64 * 48
        assert report.summary["lines_acquired"] == 299  # points at 8x of 2,395 measured
    if env_id == "ActiveMRI/KneeSingleCoil-v0":
        assert report.summary["reconstructor"] == "UnetReconstructor"
        assert report.summary["actions"] == 368
        assert report.summary["lines_acquired"] == 33


def test_knee_preset_keeps_padding_columns_out(knee_like):
    env = gym.make(
        "ActiveMRI/KneeSingleCoil-v0", data_root=str(knee_like), split=None, device="cpu"
    )
    obs, _ = env.reset(seed=0)
    masks = env.unwrapped.action_masks()
    assert not masks[:17].any() and not masks[-17:].any() and masks.sum() == 334 - 30
    assert obs["reconstruction"].shape == (1, 320, 320)


def test_wheel_ships_every_subpackage_and_the_presets():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    config = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    packages = set(config["tool"]["setuptools"]["packages"])
    root = Path(__file__).parents[2]
    found = {
        ".".join(p.parent.relative_to(root).parts)
        for p in (root / "activemri").rglob("__init__.py")
    }
    assert found <= packages
    mapped = config["tool"]["setuptools"]["package-dir"]
    assert mapped == {
        "activemri.presets.envs": "envs",
        "activemri.presets.recon_models": "recon_models",
    }
