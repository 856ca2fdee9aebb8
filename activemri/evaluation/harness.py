"""``activemri evaluate``: policies x env presets x budgets, with statistics and plots.

Each (policy, preset, run budget) is played once over the chosen slices and written to
``OUT/runs/`` atomically, with the settings that define it; a rerun with the same settings
loads it instead of playing it again (so an interrupted evaluation resumes). Policies that
are not budget-aware run once at the largest budget and the smaller budgets are read off
their trajectories. ``results.json``, ``results.csv``, the paired-test table and the plots are
then rebuilt from the runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from activemri._dist import barrier, is_main
from activemri._io import atomic_path, atomic_write_text
from activemri._version import __version__
from activemri.agents.policy_specs import PolicySpec, parse_policy
from activemri.agents.rollout import Trajectories, run_policy
from activemri.envs.config import build_dataset, describe_reconstructor, load_env_config
from activemri.envs.vector import ActiveMRIVectorEnv
from activemri.evaluation.results import build_results, write_csv

__all__ = ["EvalSettings", "evaluate"]


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation runs.

    Attributes:
        policies: Policy specs (see :func:`~activemri.agents.policy_specs.parse_policy`).
        presets: Env presets (names or YAML paths).
        accelerations: Budgets as accelerations: an episode ends at
            ``round(measured lines / acceleration)`` lines.
        split: Data split (``train``, ``val``, ``test``, or ``all`` for every volume, e.g. a
            folder that is only a test set).
        max_slices: Evaluate a seeded subset of at most this many slices (``None``: all).
        policy_slices: Per policy label, a smaller subset (nested in the main one: the first
            slices of the same seeded permutation), e.g. for the costly oracle on CPU.
        subset_seed: Seed of the subsets.
        seed: Seed of the policies and of the env resets.
        batch_size: Episodes stepped together.
        device: ``auto``, ``cpu`` or ``cuda``.
        overrides: Env config overrides for every preset (e.g. ``data_root``).
    """

    policies: tuple[str, ...]
    presets: tuple[str, ...] = ("builtin-v0",)
    accelerations: tuple[float, ...] = (4.0, 8.0)
    split: str = "test"
    max_slices: int | None = None
    policy_slices: Mapping[str, int] = field(default_factory=dict)
    subset_seed: int = 0
    seed: int = 0
    batch_size: int = 16
    device: str = "auto"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.policies or not self.presets or not self.accelerations:
            raise ValueError("an evaluation needs at least one policy, preset and acceleration")
        if any(a < 1 for a in self.accelerations):
            raise ValueError(f"accelerations must be >= 1, got {list(self.accelerations)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        chosen = self.overrides.get("device")
        if chosen is not None and self.device not in ("auto", str(chosen)):
            raise ValueError(
                f"device is given twice: device={self.device!r} and overrides device={chosen!r}"
            )
        labels = [parse_policy(p).label for p in self.policies]
        if len(set(labels)) != len(labels):
            raise ValueError(f"policy labels must be distinct, got {labels} (use LABEL=SPEC)")
        unknown = set(self.policy_slices) - set(labels)
        if unknown:
            raise ValueError(f"policy_slices names unknown policies {sorted(unknown)}")

    def label_of(self, preset: str) -> str:
        """How a preset's runs are named in reports: by the data when it was overridden.

        ``builtin-v0`` on its own data; ``builtin-v0@knee_val`` when ``data_root`` (or
        ``data``) points it at another folder, so results on a user's data are never labelled
        as the built-in benchmark.
        """
        data = self.overrides.get("data_root", self.overrides.get("data"))
        if data is None:
            return preset
        text = str(data)
        name = text if text.startswith("builtin:") else Path(text).expanduser().name or text
        return f"{Path(preset).stem}@{name}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON fields."""
        out = asdict(self)
        out["policies"], out["presets"] = list(self.policies), list(self.presets)
        out["preset_labels"] = [self.label_of(p) for p in self.presets]
        out["accelerations"] = list(self.accelerations)
        out["policy_slices"], out["overrides"] = dict(self.policy_slices), dict(self.overrides)
        return out


def _balanced_batch(num_slices: int, batch_size: int) -> int:
    """Fewest rows that still take ``ceil(N / batch)`` episodes each (no idle second pass)."""
    rounds = math.ceil(num_slices / batch_size)
    return math.ceil(num_slices / rounds)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class _Envs:
    """Builds one batched env per (preset, acceleration, subset) and reuses it."""

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings
        self._envs: dict[tuple[str, float, int | None], ActiveMRIVectorEnv] = {}

    def config_overrides(self, acceleration: float, max_slices: int | None) -> dict[str, Any]:
        s = self.settings
        return {
            **s.overrides,
            "split": None if s.split == "all" else s.split,
            "order": "sequential",
            "acceleration": acceleration,
            # every step's metrics are the curves, whatever reward a preset trains with
            "reward_timing": "dense",
            "max_slices": max_slices,
            "subset_seed": s.subset_seed,
            "device": s.overrides.get("device", s.device),  # --set device= wins over auto
            "cache_slices": True,
        }

    def get(self, preset: str, acceleration: float, max_slices: int | None) -> ActiveMRIVectorEnv:
        key = (preset, acceleration, max_slices)
        if key not in self._envs:
            overrides = self.config_overrides(acceleration, max_slices)
            config = load_env_config(preset, **overrides)
            if config.scenario.reward == "self_supervised":
                # the curves are the info metrics (against the target): skip the held-out
                # reconstructions a self-supervised reward would add to every step
                config = load_env_config(preset, **{**overrides, "reward": "ssim"})
            _, indices = build_dataset(config)  # how many slices the (sub)split holds
            batch = _balanced_batch(len(indices), self.settings.batch_size)
            self._envs[key] = ActiveMRIVectorEnv(batch, config)
        return self._envs[key]


_NOT_NUMBERS = ("device", "cache_slices", "candidate_chunk", "domain_check", "source",
                "description", "cache_dir")  # fmt: skip
"""Env config fields that change speed, logging or where things are, not the numbers.

Where the preset file or the built-in data cache lives does not matter: the config's values
and the data files' identity are keyed instead.
"""


def _data_identity(venv: ActiveMRIVectorEnv) -> list[list[Any]]:
    """Path (relative to the data root), size and mtime of every h5 file of the split.

    The split's volumes and the files that could not be opened at all: a file edited
    (rewriting it changes its mtime), or added or removed so that the split changes, changes
    this list. Sizes and mtimes rather than content hashes: hashing a fastMRI split would
    read tens of GB on every rerun.
    """
    dataset = venv.dataset
    root = Path(dataset.root)
    paths = [v.path for v in dataset.volumes] + [p for p, _ in dataset.skipped]
    out = []
    for path in sorted(set(paths)):
        st = Path(path).stat()
        out.append([str(Path(path).relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


def _reconstructor_identity(model: Any) -> dict[str, Any]:
    """Class, configuration and a SHA-256 of every parameter and buffer of the model."""
    from activemri.recon_models.checkpoint import weights_digest

    config = getattr(model, "config", None)
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": json.loads(json.dumps(config, default=str, sort_keys=True)),
        "state_sha256": weights_digest(model),
    }


def _config_identity(venv: ActiveMRIVectorEnv) -> dict[str, Any]:
    """Every env config field that determines the numbers (the preset file's, too)."""
    config = venv.config
    out: dict[str, Any] = {}
    for f in fields(config):
        if f.name in _NOT_NUMBERS:
            continue
        value = getattr(config, f.name)
        if f.name == "reconstructor":
            value = describe_reconstructor(value)
        out[f.name] = value
    return dict(
        json.loads(
            json.dumps(
                out,
                default=_jsonable,
                sort_keys=True,
            )
        )
    )


def _jsonable(value: Any) -> Any:
    """JSON stand-in for a config value: dataclasses by fields, paths and the rest as text."""
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return f"{type(value).__module__}.{type(value).__qualname__}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (several evaluations into one folder)."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _shared(identity: Mapping[str, Any]) -> dict[str, Any]:
    """What two policies' runs must share to be compared: all but the policy and subset."""
    out = {k: v for k, v in identity.items() if k not in ("policy", "batch")}
    out["env"] = {k: v for k, v in identity["env"].items() if k != "max_slices"}
    out["config"] = {k: v for k, v in identity["config"].items() if k != "max_slices"}
    return dict(json.loads(json.dumps(out)))


def _changed(stored: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """Top-level identity keys whose values differ, with the data files that did."""
    fresh = json.loads(json.dumps(identity))
    out = []
    for key in sorted(set(stored) | set(fresh)):
        if stored.get(key) == fresh.get(key):
            continue
        if key == "data" and isinstance(stored.get(key), list):
            old = {str(row[0]): row[1:] for row in stored[key] if isinstance(row, list) and row}
            new = {str(row[0]): row[1:] for row in fresh[key]}
            files = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
            shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            key = f"data ({shown})" if files else key
        out.append(key)
    return out


def _run_file(out: Path, preset: str, label: str, acceleration: float) -> Path:
    return out / "runs" / _slug(Path(preset).stem) / f"{_slug(label)}@{acceleration:g}x.json"


def _read_run(path: Path) -> tuple[dict[str, Any], Trajectories] | None:
    """A run file's document and trajectories, or ``None`` (with a warning) if unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        runs = Trajectories.from_dict(doc["trajectories"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"{path}: unreadable run ({exc}); not using it", stacklevel=3)
        return None
    example = path.with_suffix(".npz")
    if example.is_file():
        with np.load(example) as data:
            runs.example = {k: data[k] for k in data.files}
    return doc, runs


def _load_run(
    path: Path, identity: Mapping[str, Any], log: Callable[[str], None] | None = None
) -> Trajectories | None:
    """The saved run at ``path`` if its identity is ``identity``, else ``None`` (run again)."""
    if not path.is_file():
        return None
    read = _read_run(path)
    if read is None:
        return None
    doc, runs = read
    stored = doc.get("identity")
    if stored != json.loads(json.dumps(identity)):
        if log is not None:
            changed = _changed(stored if isinstance(stored, dict) else {}, identity)
            log(f"{path}: {', '.join(changed)} changed since it was run; running it again")
        return None
    return runs


def _save_run(
    path: Path, identity: Mapping[str, Any], runs: Trajectories, label: str, budget_aware: bool
) -> None:
    if runs.example is not None:
        with atomic_path(path.with_suffix(".npz")) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **runs.example)  # type: ignore[arg-type]
    doc = {"identity": identity, "label": label, "budget_aware": budget_aware,
           "trajectories": runs.to_dict()}  # fmt: skip
    atomic_write_text(path, json.dumps(doc) + "\n")


def evaluate(
    settings: EvalSettings,
    out: str | Path,
    *,
    plots: bool = True,
    log: Callable[[str], None] | None = print,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) an evaluation and write its results.

    Writes ``OUT/results.json`` (schema: :mod:`activemri.evaluation.results`),
    ``OUT/results.csv`` (long format), ``OUT/paired_tests.csv`` and, with ``plots``, the PNG
    figures of :mod:`activemri.evaluation.plots`.

    Args:
        settings: What to run.
        out: Output folder.
        plots: Draw the figures.
        log: Where progress lines go (``None``: silent).
        show_progress: tqdm bars.

    Returns:
        The results document (as written to ``results.json``).
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs: list[PolicySpec] = [parse_policy(p) for p in settings.policies]
    envs = _Envs(settings)
    largest = min(settings.accelerations)
    runs: dict[tuple[str, str, float], Trajectories] = {}
    budget_aware: dict[str, bool] = {}
    env_info: dict[str, dict[str, Any]] = {}
    bases: dict[tuple[str, float], dict[str, Any]] = {}
    cache: dict[int, dict[str, Any]] = {}

    def _base_identity(
        venv: ActiveMRIVectorEnv, preset: str, acceleration: float, slices: int | None
    ) -> dict[str, Any]:
        """Everything but the policy that determines a run's numbers."""
        if id(venv) not in cache:
            cache[id(venv)] = {
                "config": _config_identity(venv),
                "data": _data_identity(venv),
                "reconstructor": _reconstructor_identity(venv.reconstructor),
            }
        return {
            "preset": preset,
            "env": {
                k: v
                for k, v in envs.config_overrides(acceleration, slices).items()
                if k not in _NOT_NUMBERS
            },
            "seed": settings.seed,
            **cache[id(venv)],
            "version": __version__,
        }

    for preset in settings.presets:
        name = settings.label_of(preset)
        # The example figure shows a slice every policy ran on: the smallest subset's first.
        sizes = [settings.policy_slices.get(s.label, settings.max_slices) for s in specs]
        smallest = min((n for n in sizes if n is not None), default=None)
        example_index = envs.get(preset, largest, smallest).slice_indices[0]
        for spec in specs:
            slices = settings.policy_slices.get(spec.label, settings.max_slices)
            if settings.max_slices is not None and slices is not None:
                slices = min(slices, settings.max_slices)
            probe = envs.get(preset, largest, slices)
            policy = spec.build(probe, settings.seed)
            budget_aware[spec.label] = policy.budget_aware
            accelerations = settings.accelerations if policy.budget_aware else (largest,)
            for acceleration in accelerations:
                venv = envs.get(preset, acceleration, slices)
                env_info.setdefault(settings.label_of(preset), _describe_env(venv))
                identity = {
                    "policy": spec.identity(),
                    **_base_identity(venv, preset, acceleration, slices),
                    "batch": venv.num_envs,  # a seeded random policy draws per batch
                }
                bases[(preset, acceleration)] = identity
                path = _run_file(out, settings.label_of(preset), spec.label, acceleration)
                barrier()  # sharded: every process decides on the same files on disk
                loaded = _load_run(path, identity, log)
                if loaded is not None:
                    if log:
                        log(f"{spec.label} @ {acceleration:g}x on {name}: loaded {path}")
                    runs[(preset, spec.label, acceleration)] = loaded
                    continue
                policy = spec.build(venv, settings.seed)
                total = len(venv.slice_indices)
                desc = f"{spec.label} @ {acceleration:g}x"
                with tqdm(total=total, unit="slice", desc=desc, disable=not show_progress,
                          leave=False) as bar:  # fmt: skip

                    def tick(n: int, bar: Any = bar) -> None:
                        bar.update(n)

                    try:
                        result = run_policy(venv, policy, seed=settings.seed, progress=tick,
                                            example_index=example_index)  # fmt: skip
                    except FloatingPointError as exc:
                        raise FloatingPointError(
                            f"{spec.label} @ {acceleration:g}x on {name}: {exc}"
                        ) from exc
                if is_main():
                    _save_run(path, identity, result, spec.label, policy.budget_aware)
                if log:
                    dropped = f", {len(result.dropped)} dropped" if result.dropped else ""
                    log(f"{spec.label} @ {acceleration:g}x on {name}: {len(result)} slices"
                        f"{dropped}, ran {venv.actual_acceleration:.3g}x")  # fmt: skip
                runs[(preset, spec.label, acceleration)] = result
    labels = [s.label for s in specs]
    for preset in settings.presets:  # what other policies' runs must match, at every budget
        for acceleration in settings.accelerations:
            if (preset, acceleration) not in bases:
                venv = envs.get(preset, acceleration, settings.max_slices)
                bases[(preset, acceleration)] = _base_identity(
                    venv, preset, acceleration, settings.max_slices
                )
    barrier()
    if not is_main():  # sharded: rank 0 writes the files; the others return the same numbers
        return build_results(settings, labels, runs, budget_aware, env_info)
    # Another evaluation may write into this folder at the same time: the summary is
    # rebuilt, under a lock, from every run on disk that is comparable with these.
    with _locked(out / ".evaluate.lock"):
        other: list[str] = []
        merged = _comparable_runs(out, settings, labels, bases, other)
        for (preset, label, acceleration), (run, aware) in merged.items():
            runs[(preset, label, acceleration)] = run
            budget_aware[label] = aware
        extra = sorted({label for _, label, _ in merged})
        if extra and log:
            log(f"{out}: the summary also holds {', '.join(extra)} (comparable runs on disk)")
        if other and log:
            log(f"{out}: left out of the summary, made on other data or settings: "
                f"{', '.join(other)}")  # fmt: skip
        labels += extra
        doc = build_results(settings, labels, runs, budget_aware, env_info)
        doc["merged_policies"] = extra
        text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
        atomic_write_text(out / "results.json", text)
        write_csv(out / "results.csv", settings, labels, runs, budget_aware)
        write_paired_csv(out / "paired_tests.csv", doc)
        if plots:
            from activemri.evaluation.plots import plot_all

            plot_all(doc, runs, out)
    return doc


def _comparable_runs(
    out: Path,
    settings: EvalSettings,
    labels: Sequence[str],
    bases: Mapping[tuple[str, float], Mapping[str, Any]],
    other: list[str] | None = None,
) -> dict[tuple[str, str, float], tuple[Trajectories, bool]]:
    """Runs of other policies in ``out/runs`` made on the same data, env and model.

    A budget-aware policy is taken when it has a run at every acceleration of ``settings``,
    any other when it has one at the largest budget (the shorter ones are its prefixes).
    The run files of other policies that do not qualify are appended to ``other`` (by
    file name), so the caller can say what the summary leaves out.
    """
    largest = min(settings.accelerations)
    found: dict[tuple[str, str], dict[float, tuple[Trajectories, bool]]] = {}
    for preset in settings.presets:
        folder = out / "runs" / _slug(Path(settings.label_of(preset)).stem)
        for path in sorted(folder.glob("*.json")):
            read = _read_run(path)
            if read is None:
                continue
            doc, run = read
            label, identity = doc.get("label"), doc.get("identity")
            if not isinstance(label, str) or label in labels or not isinstance(identity, dict):
                continue
            try:
                acceleration = float(identity["env"]["acceleration"])
                base = bases.get((preset, acceleration))
                comparable = base is not None and _shared(identity) == _shared(base)
            except (KeyError, TypeError, ValueError):
                comparable = False
            if not comparable:
                if other is not None and _acceleration_of(identity) in settings.accelerations:
                    other.append(path.name)
                continue
            found.setdefault((preset, label), {})[acceleration] = (run, bool(doc["budget_aware"]))
    merged: dict[tuple[str, str, float], tuple[Trajectories, bool]] = {}
    for (preset, label), by_acc in found.items():
        aware = any(a for _, a in by_acc.values())
        needed = settings.accelerations if aware else (largest,)
        if all(float(a) in by_acc for a in needed):
            for a in needed:
                merged[(preset, label, float(a))] = by_acc[float(a)]
    return merged


def _acceleration_of(identity: Mapping[str, Any]) -> float | None:
    """The acceleration a run file's identity was run at, if it says."""
    try:
        return float(identity["env"]["acceleration"])
    except (KeyError, TypeError, ValueError):
        return None


def _describe_env(venv: ActiveMRIVectorEnv) -> dict[str, Any]:
    config = venv.config
    dataset = venv.dataset
    scenario = asdict(config.scenario)
    scenario.pop("acceleration", None)
    scenario.pop("budget", None)
    return {
        "data": config.data,
        "split": config.split,
        "split_seed": config.split_seed,
        "reconstructor": describe_reconstructor(config.reconstructor),
        "reconstructor_class": type(venv.reconstructor).__name__,
        "kspace_shape": list(venv.kspace_shape),
        "recon_size": list(venv.recon_size),
        "scenario": scenario,
        "domain_check": venv.domain_check,
        # Whole files of the data folder that could not be opened (each also warned about).
        "skipped_files": [
            {"file": Path(path).name, "reason": reason} for path, reason in dataset.skipped
        ],
    }


def write_paired_csv(path: Path, doc: Mapping[str, Any]) -> None:
    """The paired-test table of ``doc`` as CSV."""
    import csv
    import io

    buffer = io.StringIO()
    columns = ["preset", "acceleration", "actual_acceleration", "metric", "a", "b", "n",
               "mean_difference", "ci_low", "ci_high", "median_difference", "wins",
               "statistic", "p_value", "p_holm", "significant", "better"]  # fmt: skip
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in doc["paired_tests"]:
        writer.writerow({k: row.get(k) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def format_table(doc: Mapping[str, Any], sort: Sequence[str] | None = None) -> str:
    """The comparison table (SSIM AUC and final metrics with 95% CIs) as plain text."""
    lines = []
    settings = doc["settings"]
    for preset in settings.get("preset_labels", settings["presets"]):
        for acceleration in settings["accelerations"]:
            rows = [r for r in doc["results"]
                    if r["preset"] == preset and r["acceleration"] == acceleration]  # fmt: skip
            if not rows:
                continue
            lines_end = rows[0]["lines"][-1]
            # Policies on different subsets may end at slightly different accelerations.
            ran = sorted({f"{r.get('actual_acceleration', acceleration):.3g}x" for r in rows},
                         key=lambda t: float(t[:-1]))  # fmt: skip
            actual = ran[0] if len(ran) == 1 else f"{ran[0]}-{ran[-1]}"
            lines.append(f"{preset}, {acceleration:g}x requested, {actual} run (ends at "
                         f"{lines_end:g} lines)")  # fmt: skip
            dropped = {(d["file"], d["slice"]) for r in rows for d in r.get("dropped", [])}
            if dropped:
                lines.append(f"  {len(dropped)} slice(s) left out as unreadable or unusable "
                             "(listed in results.json)")  # fmt: skip
            lines.append(f"  {'policy':<16}{'n':>4}  {'ran':>6}  {'SSIM AUC':>20}  "
                         f"{'final SSIM':>20}  {'final PSNR':>18}  {'final NMSE':>18}")  # fmt: skip
            for r in sorted(rows, key=lambda r: -r["auc"]["ssim"]["mean"]):
                cells = [_ci(r["auc"]["ssim"], 4), _ci(r["final"]["ssim"], 4),
                         _ci(r["final"]["psnr"], 2), _ci(r["final"]["nmse"], 4)]  # fmt: skip
                ran_x = f"{r.get('actual_acceleration', acceleration):.3g}x"
                lines.append(f"  {r['policy']:<16}{r['num_slices']:>4}  {ran_x:>6}  "
                             f"{cells[0]:>20}  {cells[1]:>20}  {cells[2]:>18}  "
                             f"{cells[3]:>18}")  # fmt: skip
            tests = [t for t in doc["paired_tests"]
                     if t["preset"] == preset and t["acceleration"] == acceleration]  # fmt: skip
            if tests:
                lines.append("  paired tests (Wilcoxon signed-rank on per-slice SSIM AUC, Holm):")
                for t in tests:
                    verdict = f"{t['better']} better" if t["significant"] else "n.s."
                    diff = _signed(t["mean_difference"])
                    ci = f"[{_signed(t['ci_low'])}, {_signed(t['ci_high'])}]"
                    lines.append(f"    {t['a']:>14} vs {t['b']:<14} n={t['n']:<3} diff {diff} "
                                 f"{ci:<19} p_holm={t['p_holm']:.2g}  {verdict}")  # fmt: skip
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _ci(entry: Mapping[str, float | None], digits: int) -> str:
    mean, low, high = entry["mean"], entry["ci_low"], entry["ci_high"]
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"
