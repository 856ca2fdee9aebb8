"""Acquisition scenarios: the initial mask and the line budget of an episode (DESIGN §2).

A scenario says where an episode starts (a central block of low-frequency lines, optionally
plus random extra lines) and how many lines the agent may add (a fixed budget, or a target
acceleration). Named presets cover the settings of the active-acquisition literature; they
are YAML files in ``envs/scenarios/`` (:data:`SCENARIOS`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from activemri._config import from_mapping
from activemri._io import read_yaml_mapping
from activemri.masks import center_block

__all__ = [
    "REWARDS",
    "REWARD_METRICS",
    "REWARD_TIMINGS",
    "SCENARIOS",
    "BudgetError",
    "Scenario",
    "load_scenario_file",
    "resolve_scenario",
    "scenario_dir",
]

REWARD_METRICS = ("ssim", "psnr", "nmse", "mse")
"""Scores a reward can be the gain of; ``nmse`` and ``mse`` are negated so higher is better."""

REWARDS = (*REWARD_METRICS, "self_supervised")
"""Every reward: a metric's gain, or the self-supervised score that never reads the target
(:mod:`activemri.envs.self_supervised`)."""

REWARD_TIMINGS = ("dense", "terminal")
"""When the reward is given: every step (its score gain) or only at the last step."""

_LENGTHS = ("budget", "acceleration", "budget_range", "acceleration_range")


class BudgetError(ValueError):
    """A scenario's budget or acceleration cannot be honoured on some data."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Scenario:
    """How an episode starts and how long it lasts.

    Exactly one of ``initial_lines`` / ``center_fraction`` sets the central (ACS) block, and
    at most one of ``budget`` / ``acceleration`` / ``budget_range`` / ``acceleration_range``
    sets the episode length (none: until every measured line is acquired). With a range, each
    episode draws its length with its own generator (seeded by ``reset(seed=...)``), so one
    policy can be trained for several accelerations; the observation entry ``budget_left``
    tells it how many lines remain.

    A length that cannot be honoured exactly on a slice is an error (:class:`BudgetError`,
    raised when the env is built, naming the file), never clamped: an acceleration whose
    line count is not above the initial mask's, or a budget larger than the measured lines
    the initial mask leaves. An acceleration is rounded to whole lines per slice
    (:meth:`end_lines`); the acceleration actually run is :meth:`actual_acceleration`.

    Attributes:
        initial_lines: Central phase-encode lines acquired at the start; the block starts at
            ``(W - n + 1) // 2`` (fastMRI) and is restricted to measured columns.
        center_fraction: Alternative to ``initial_lines``: ``round(fraction * measured)``.
        extra_random_lines: Further lines drawn uniformly from the measured non-central
            columns with the episode's generator.
        budget: Lines the agent may add (steps per episode).
        acceleration: Alternative to ``budget``: the episode ends at
            ``round(measured / acceleration)`` acquired lines.
        budget_range: ``[low, high]``: each episode's budget is drawn uniformly from these
            whole numbers of lines (both included).
        acceleration_range: ``[low, high]``: each episode ends at a line count drawn
            uniformly from the whole numbers between ``round(measured / high)`` and
            ``round(measured / low)``.
        reward: Score whose gain is the reward: one of :data:`REWARD_METRICS`, or
            ``"self_supervised"``: minus the normalized error of held-out acquired lines
            predicted from the others (:mod:`activemri.envs.self_supervised`). It never reads
            the target, so it also runs on files that have none (fastMRI test files; then
            the info metrics are NaN).
        holdout_fraction: ``reward="self_supervised"``: the fraction rho of the acquired lines
            outside the central block held out each step (SSDU's 0.4 by default).
        holdout_splits: ``reward="self_supervised"``: independent splits whose scores are
            averaged (less noise; one more reconstructor forward per split and step).
        reward_timing: ``"dense"`` (the default): every step is rewarded with its score gain.
            ``"terminal"``: every step but the last is rewarded 0 (less any
            ``repeat_penalty``) and the last with the episode's gain, final - initial score
            (the same return); the score is then
            computed only at the last step, and the reconstruction too unless the
            observation shows it (see ``envs/README.md``).
        repeat_penalty: Subtracted from the reward of a step that adds no line (a repeated or
            non-measured line); ``>= 0``. With 0 (the default of the ``-v0`` ids) a wasted
            step costs nothing but the line it could have added, and agents that do not
            mask actions (plain PPO, A2C, DQN) learn to repeat lines; see ``envs/README.md``.
    """

    initial_lines: int | None = None
    center_fraction: float | None = None
    extra_random_lines: int = 0
    budget: int | None = None
    acceleration: float | None = None
    budget_range: tuple[int, int] | None = None
    acceleration_range: tuple[float, float] | None = None
    reward: str = "ssim"
    reward_timing: str = "dense"
    repeat_penalty: float = 0.0
    holdout_fraction: float = 0.4
    holdout_splits: int = 1

    def __post_init__(self) -> None:
        if (self.initial_lines is None) == (self.center_fraction is None):
            raise ValueError("a scenario sets exactly one of initial_lines and center_fraction")
        for name in ("initial_lines", "extra_random_lines", "budget", "holdout_splits"):
            value = getattr(self, name)
            if value is not None and not _is_int(value):
                raise ValueError(f"{name} must be a whole number of lines, got {value!r}")
        for name in ("center_fraction", "acceleration", "repeat_penalty", "holdout_fraction"):
            value = getattr(self, name)
            if value is not None and not (_is_real(value) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.initial_lines is not None and self.initial_lines < 0:
            raise ValueError(f"initial_lines must be >= 0, got {self.initial_lines}")
        if self.center_fraction is not None and not 0.0 <= self.center_fraction <= 1.0:
            raise ValueError(f"center_fraction must be in [0, 1], got {self.center_fraction}")
        if self.extra_random_lines < 0:
            raise ValueError(f"extra_random_lines must be >= 0, got {self.extra_random_lines}")
        lengths = [name for name in _LENGTHS if getattr(self, name) is not None]
        if len(lengths) > 1:
            raise ValueError(
                f"a scenario sets at most one of {', '.join(_LENGTHS)}; this one sets {lengths}"
            )
        for name, check in (("budget_range", _is_int), ("acceleration_range", _is_real)):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, (str, bytes))
                or not hasattr(value, "__len__")
                or len(value) != 2
                or not all(check(v) and math.isfinite(v) for v in value)
            ):
                raise ValueError(f"{name} must be [low, high], two numbers, got {value!r}")
            low, high = value
            if low > high:
                raise ValueError(f"{name} must have low <= high, got {list(value)}")
            cast = int if name == "budget_range" else float
            object.__setattr__(self, name, (cast(low), cast(high)))
        if self.budget_range is not None and self.budget_range[0] < 1:
            raise ValueError(f"budget_range must start at >= 1, got {list(self.budget_range)}")
        if self.acceleration_range is not None and self.acceleration_range[0] < 1.0:
            raise ValueError(
                f"acceleration_range must start at >= 1, got {list(self.acceleration_range)}"
            )
        if self.reward_timing not in REWARD_TIMINGS:
            raise ValueError(
                f"reward_timing must be one of {REWARD_TIMINGS}, got {self.reward_timing!r}"
            )
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.acceleration is not None and self.acceleration < 1.0:
            # Below 1 would mean more lines than were measured.
            raise ValueError(f"acceleration must be >= 1, got {self.acceleration}")
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.holdout_splits < 1:
            raise ValueError(f"holdout_splits must be >= 1, got {self.holdout_splits}")
        if self.repeat_penalty < 0:
            raise ValueError(
                f"repeat_penalty must be >= 0 (a negative one rewards repeats), got "
                f"{self.repeat_penalty}"
            )

    def num_central(self, num_valid: int) -> int:
        """Size of the central block for ``num_valid`` measured lines.

        For points, ``num_valid`` is the plane's calibration extent and the block ``n x n``.
        """
        if self.initial_lines is not None:
            return min(self.initial_lines, num_valid)
        return min(num_valid, round(float(self.center_fraction or 0.0) * num_valid))

    def initial_mask(
        self,
        valid: np.ndarray,
        rng: np.random.Generator,
        center: Callable[[int], np.ndarray] | None = None,
        extent: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """Draw an episode's initial mask.

        Args:
            valid: Bool ``(A,)``, True for measured actions (columns, or flat points).
            rng: The episode's generator (used only for ``extra_random_lines``).
            center: ``center(n) -> bool (A,)``, the central block of size ``n`` of the
                acquisition geometry (:meth:`activemri.geometry.Geometry.center`); default:
                ``n`` central columns.
            extent: What ``center_fraction`` and ``initial_lines`` are bounded by (default:
                the measured count; for points, the plane's side).

        Returns:
            ``(mask (A,) bool, num_low_frequencies)``: the mask is a subset of ``valid``;
            ``num_low_frequencies`` is the size of the central block, for ACS-based models.
        """
        width = valid.shape[0]
        n_central = self.num_central(int(valid.sum()) if extent is None else extent)
        block = center_block(width, n_central) if center is None else center(n_central)
        mask = block & valid
        if self.extra_random_lines:
            free = np.flatnonzero(valid & ~mask)
            take = min(self.extra_random_lines, free.size)
            mask[rng.choice(free, size=take, replace=False)] = True
        return mask, n_central

    def initial_count(
        self,
        valid: np.ndarray,
        center: Callable[[int], np.ndarray] | None = None,
        extent: int | None = None,
    ) -> int:
        """Actions of the initial mask on a slice with measured actions ``valid`` (bool ``(A,)``).

        The same for every draw of the extra random lines, so it is known from metadata.
        ``center`` and ``extent`` as in :meth:`initial_mask`.
        """
        mask, _ = self.initial_mask(valid, np.random.default_rng(0), center, extent)
        return int(mask.sum())

    @property
    def variable(self) -> bool:
        """Whether episodes draw their length from a range."""
        return self.budget_range is not None or self.acceleration_range is not None

    def end_line_bounds(self, num_valid: int, num_initial: int) -> tuple[int, int]:
        """Fewest and most lines acquired when an episode ends, if every step adds a line.

        Args:
            num_valid: Measured lines of the slice.
            num_initial: Lines of the initial mask.

        Returns:
            ``(low, high)``; equal unless the length is a range. Fixed lengths give
            ``num_initial + budget``; ``round(num_valid / acceleration)``; or ``num_valid``.

        Raises:
            BudgetError: If that leaves no step (an acceleration at or below the initial
                mask's line count, or nothing left to acquire) or a budget larger than the
                measured lines the initial mask leaves.
        """
        missing = num_valid - num_initial
        if missing < 1:
            raise BudgetError(
                f"the initial mask acquires all {num_valid} measured lines: nothing is left "
                "to choose"
            )
        budgets: tuple[int, ...] | None = None
        if self.budget is not None:
            budgets = (self.budget,)
        elif self.budget_range is not None:
            budgets = self.budget_range
        if budgets is not None:
            name = "budget" if self.budget is not None else "budget_range"
            if max(budgets) > missing:
                raise BudgetError(
                    f"{name} {max(budgets)} exceeds the {missing} measured lines the initial "
                    f"mask leaves ({num_valid} measured, {num_initial} initial)"
                )
            return num_initial + min(budgets), num_initial + max(budgets)
        accelerations: tuple[float, ...] | None = None
        if self.acceleration is not None:
            accelerations = (self.acceleration,)
        elif self.acceleration_range is not None:
            accelerations = self.acceleration_range
        if accelerations is not None:
            fastest = max(accelerations)
            end = round(num_valid / fastest)
            if end <= num_initial:
                highest = num_valid / (num_initial + 1)
                name = "acceleration" if self.acceleration is not None else "acceleration_range end"
                raise BudgetError(
                    f"{name} {fastest:g} ends at round({num_valid} / {fastest:g}) = "
                    f"{end} lines, but the initial mask already has {num_initial}: choose an "
                    f"acceleration of at most {highest:.3g} or fewer initial lines"
                )
            return end, round(num_valid / min(accelerations))
        return num_valid, num_valid

    def end_lines(
        self, num_valid: int, num_initial: int, rng: np.random.Generator | None = None
    ) -> int:
        """Lines acquired when an episode ends, if every step adds a line.

        Args:
            num_valid: Measured lines of the slice.
            num_initial: Lines of the initial mask.
            rng: The episode's generator: draws the length of a range scenario (uniform
                over the whole line counts of :meth:`end_line_bounds`); without it a range
                gives its middle, rounded down.

        Raises:
            BudgetError: As :meth:`end_line_bounds`.
        """
        low, high = self.end_line_bounds(num_valid, num_initial)
        if low == high:
            return low
        if rng is None:
            return (low + high) // 2
        return int(rng.integers(low, high + 1))

    def actual_acceleration(self, num_valid: int, num_initial: int) -> float:
        """``num_valid / end_lines(...)``: the acceleration an episode actually ends at.

        It differs from :attr:`acceleration` by the rounding to whole lines, and a ``budget``
        gives different accelerations on slices with different measured widths. For a range,
        the acceleration at its middle.

        Raises:
            BudgetError: As :meth:`end_lines`.
        """
        return num_valid / self.end_lines(num_valid, num_initial)

    def episode_budget(
        self, valid: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> int:
        """Steps of an episode starting from ``mask`` (at least 1).

        Args:
            valid: Bool measured actions.
            mask: Bool initial mask.
            rng: The episode's generator (draws a range scenario's length).

        Raises:
            BudgetError: As :meth:`end_lines`.
        """
        initial = int((mask & valid).sum())
        return self.end_lines(int(valid.sum()), initial, rng) - initial


def scenario_dir() -> Path:
    """The folder of named scenarios (one ``NAME.yaml`` of :class:`Scenario` fields each).

    ``envs/scenarios/`` of the source checkout (editable installs), else the copy installed
    inside the package (``activemri/presets/envs/scenarios``, where a wheel puts it).
    ``$ACTIVEMRI_ENV_PRESETS`` does not move it: the named scenarios are part of activemri.
    """
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    folder = checkout / "envs" / "scenarios"
    if (checkout / "pyproject.toml").is_file() and folder.is_dir():
        return folder
    return package / "presets" / "envs" / "scenarios"


def load_scenario_file(path: str | Path) -> Scenario:
    """Read a scenario YAML file: a mapping of :class:`Scenario` fields.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: Naming the file, if it is not a mapping or has unknown keys or invalid
            values.
    """
    data = read_yaml_mapping(path, "scenario file")
    return from_mapping(Scenario, data, source=path, section="scenario")


class _ScenarioTable(Mapping[str, Scenario]):
    """Read-only ``name -> Scenario`` of the files in :func:`scenario_dir`, read on first use."""

    def __init__(self) -> None:
        self._table: dict[str, Scenario] | None = None

    def _load(self) -> dict[str, Scenario]:
        if self._table is None:
            folder = scenario_dir()
            self._table = {p.stem: load_scenario_file(p) for p in sorted(folder.glob("*.yaml"))}
        return self._table

    def __getitem__(self, name: str) -> Scenario:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"SCENARIOS({self._load()!r})"


SCENARIOS: Mapping[str, Scenario] = _ScenarioTable()
"""Named scenarios, selectable by name in presets and ``gymnasium.make(..., scenario=NAME)``.

Read-only, loaded on first use from ``envs/scenarios/NAME.yaml`` (:func:`scenario_dir`)."""

_SECTION = "scenario"
_FIELDS = {f.name for f in fields(Scenario)}


def resolve_scenario(spec: str | Mapping[str, Any] | Scenario, **overrides: Any) -> Scenario:
    """Build a :class:`Scenario` from a name in :data:`SCENARIOS`, a file, a mapping or one.

    Args:
        spec: The scenario: a name, a ``.yaml`` file of scenario fields, a mapping (which may
            name a ``base`` scenario and override its fields) or a :class:`Scenario`.
        **overrides: Field values that replace the spec's. Setting ``initial_lines`` clears
            ``center_fraction`` (and vice versa), and likewise ``budget`` / ``acceleration``.

    Raises:
        ValueError: For an unknown name or field, or a value of the wrong type.
        FileNotFoundError: For a ``.yaml`` file that does not exist.
    """
    if isinstance(spec, Scenario):
        base = spec
    elif isinstance(spec, str):
        if spec.endswith((".yaml", ".yml")):
            base = load_scenario_file(spec)
        elif spec not in SCENARIOS:
            raise ValueError(
                f"unknown scenario {spec!r}; choose from {sorted(SCENARIOS)} (files in "
                f"{scenario_dir()}) or give a .yaml file of scenario fields"
            )
        else:
            base = SCENARIOS[spec]
    elif isinstance(spec, Mapping):
        values = dict(spec)
        name = values.pop("base", None)
        if name is None:
            return _with(from_mapping(Scenario, values, section=_SECTION), overrides)
        if any(key in overrides for key in _LENGTHS):  # an override's length replaces
            values = {k: v for k, v in values.items() if k not in _LENGTHS}
        if {"initial_lines", "center_fraction"} & set(overrides):
            values = {
                k: v for k, v in values.items() if k not in ("initial_lines", "center_fraction")
            }
        return resolve_scenario(str(name), **{**values, **overrides})
    else:
        raise ValueError(
            f"a scenario is a name, a mapping or a Scenario, got {spec!r} ({type(spec).__name__})"
        )
    return _with(base, overrides)


def _with(base: Scenario, overrides: Mapping[str, Any]) -> Scenario:
    if not overrides:
        return base
    changes = dict(overrides)
    if "initial_lines" in changes and "center_fraction" not in changes:
        changes["center_fraction"] = None
    if "center_fraction" in changes and "initial_lines" not in changes:
        changes["initial_lines"] = None
    # A length set here replaces the base's, whichever of the four kinds it was.
    if any(name in changes for name in _LENGTHS):
        for name in _LENGTHS:
            changes.setdefault(name, None)
    unknown = [key for key in changes if key not in _FIELDS]
    if unknown:  # named against the overrides alone, not the base's fields
        return from_mapping(Scenario, changes, section=_SECTION)
    return from_mapping(Scenario, {**asdict(base), **changes}, section=_SECTION)
