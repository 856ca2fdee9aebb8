import numpy as np
import pytest

from activemri.envs.scenario import SCENARIOS, BudgetError, Scenario, resolve_scenario


def test_initial_mask_is_central_block_within_measured_lines():
    valid = np.zeros(36, dtype=bool)
    valid[2:34] = True
    mask, num_low = Scenario(initial_lines=4).initial_mask(valid, np.random.default_rng(0))
    assert num_low == 4
    assert np.flatnonzero(mask).tolist() == [16, 17, 18, 19]  # starts at (W - n + 1) // 2
    assert not (mask & ~valid).any()


def test_extra_random_lines_are_seeded_and_measured():
    valid = np.ones(31, dtype=bool)
    valid[:3] = False
    scenario = Scenario(initial_lines=5, extra_random_lines=6)
    a, _ = scenario.initial_mask(valid, np.random.default_rng(7))
    b, _ = scenario.initial_mask(valid, np.random.default_rng(7))
    c, _ = scenario.initial_mask(valid, np.random.default_rng(8))
    assert a.sum() == 11 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert not (a & ~valid).any()


def test_center_fraction_and_acceleration_budget():
    valid = np.ones(368, dtype=bool)
    valid[:17] = valid[-17:] = False
    scenario = SCENARIOS["4x"]
    mask, num_low = scenario.initial_mask(valid, np.random.default_rng(0))
    assert num_low == round(0.08 * 334) == mask.sum()
    assert mask.sum() + scenario.episode_budget(valid, mask) == round(334 / 4)


def test_miccai_scenarios_end_at_100_lines():
    valid = np.ones(368, dtype=bool)
    for name, start in (("miccai-30l", 30), ("miccai-2l", 2)):
        scenario = SCENARIOS[name]
        mask, _ = scenario.initial_mask(valid, np.random.default_rng(0))
        assert mask.sum() == start
        assert mask.sum() + scenario.episode_budget(valid, mask) == 100


def test_budgets_that_cannot_be_honoured_are_errors_not_clamped():
    valid = np.ones(8, dtype=bool)
    scenario = Scenario(initial_lines=6, budget=50)
    mask, _ = scenario.initial_mask(valid, np.random.default_rng(0))
    with pytest.raises(BudgetError, match="budget 50 exceeds the 2 measured lines"):
        scenario.episode_budget(valid, mask)
    assert Scenario(initial_lines=6, budget=2).episode_budget(valid, mask) == 2
    with pytest.raises(BudgetError, match="nothing is left"):
        Scenario(initial_lines=8).episode_budget(valid, np.ones(8, dtype=bool))
    # 1000x of 128 lines is round(0.128) = 0 lines, below the 10 initial ones: not 1 step.
    with pytest.raises(BudgetError, match=r"acceleration 1000 ends at round\(128 / 1000\) = 0"):
        Scenario(initial_lines=10, acceleration=1000).end_lines(128, 10)
    # fastMRI knee at "16x" with the 4x center fraction: 21 lines < 27 initial ones.
    with pytest.raises(BudgetError, match=r"at most 11\.9"):
        resolve_scenario("4x", acceleration=16.0).end_lines(334, 27)


def test_end_lines_and_actual_acceleration_follow_the_rounding():
    scenario = SCENARIOS["4x"]
    assert scenario.end_lines(334, 27) == 84  # round(83.5)
    assert scenario.actual_acceleration(334, 27) == pytest.approx(334 / 84)
    assert Scenario(initial_lines=30, budget=70).actual_acceleration(334, 30) == 3.34
    assert Scenario(initial_lines=4).actual_acceleration(32, 4) == 1.0
    valid = np.zeros(36, dtype=bool)
    valid[2:34] = True
    assert Scenario(initial_lines=4, extra_random_lines=3).initial_count(valid) == 7


def test_resolve_overrides_clear_the_alternative_field():
    s = resolve_scenario("4x", initial_lines=10, budget=5)
    assert s.initial_lines == 10 and s.center_fraction is None
    assert s.budget == 5 and s.acceleration is None
    assert resolve_scenario({"base": "miccai-2l", "reward": "psnr"}).reward == "psnr"
    assert resolve_scenario({"initial_lines": 3, "budget": 2}) == Scenario(
        initial_lines=3, budget=2
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown scenario"),
        ({"initial_lines": 3, "bogus": 1}, r"unknown key\(s\) \['bogus'\] in scenario"),
        ({"initial_lines": 3, "center_fraction": 0.1}, "exactly one"),
        ({"initial_lines": 3, "reward": "l1"}, "reward must be"),
        ({"initial_lines": 3, "budget": 0}, "budget must be"),
    ],
)
def test_invalid_scenarios_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_scenario(spec)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("acceleration", float("nan"), "acceleration must be a finite number"),
        ("acceleration", float("inf"), "acceleration must be a finite number"),
        ("budget", 2.5, r"scenario\.budget must be int or None, got 2\.5 \(float\)"),
        ("budget", True, r"scenario\.budget must be int or None, got True \(bool\)"),
        ("initial_lines", 2.5, r"scenario\.initial_lines must be int or None, got 2\.5"),
        ("repeat_penalty", -0.1, "repeat_penalty must be >= 0"),
    ],
)
def test_non_finite_fractional_or_negative_values_are_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        resolve_scenario({"initial_lines": 3, field: value})


def test_named_scenarios_are_read_only_yaml_presets():
    from activemri.envs.scenario import scenario_dir

    files = sorted(p.stem for p in scenario_dir().glob("*.yaml"))
    assert files == sorted(SCENARIOS) and "builtin-4x" in files
    assert SCENARIOS["builtin-4x"] == Scenario(initial_lines=10, budget=22)
    assert SCENARIOS["8x"] == Scenario(center_fraction=0.04, acceleration=8.0)
    assert resolve_scenario("builtin-4x") is SCENARIOS["builtin-4x"]
    with pytest.raises(TypeError):
        SCENARIOS["mine"] = Scenario(initial_lines=1)  # type: ignore[index]


def test_scenario_files_can_be_named_and_their_errors_name_them(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("initial_lines: 6\nacceleration: 5.0\n")
    assert resolve_scenario(str(good), budget=3) == Scenario(initial_lines=6, budget=3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("initial_lines: 6\nbudgett: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key\(s\) \['budgett'\] in scenario"):
        resolve_scenario(str(bad))
    bad.write_text("initial_lines: six\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: scenario\.initial_lines must be int"):
        resolve_scenario(str(bad))
    with pytest.raises(FileNotFoundError):
        resolve_scenario(str(tmp_path / "missing.yaml"))
