"""The ``results.json`` document: building, validating, and the long-format CSV.

Schema (``"schema": "activemri.evaluation/1"``)::

    {
      "schema": "activemri.evaluation/1",
      "activemri_version": str,
      "settings": EvalSettings fields (policies, presets, accelerations, split, max_slices,
                  policy_slices, subset_seed, seed, batch_size, device, overrides) and
                  preset_labels (how each preset is named below),
      "conventions": {name: str}   # SSIM window, data range, crop, AUC, CI, paired tests
      "envs": {label: {data, split, split_seed, reconstructor, reconstructor_class,
                       kspace_shape, recon_size, scenario,
                       domain_check,   # null, or the reconstructor-vs-zero-filled check
                                       # (activemri.recon_models.domain) on this data
                       skipped_files: [{"file", "reason"}]}},  # h5 files not opened at all
      "results": [                 # one per policy x preset x acceleration
        {"policy": str, "preset": label, "acceleration": float,   # as requested
         "actual_acceleration": float,   # mean over slices of measured / acquired lines at
                                         # the end (whole lines: 16x of 334 lines is 15.9x)
         "budget_aware": bool, "num_slices": int,
         "dropped": [{"file", "slice", "reason"}],   # slices left out: unreadable, NaN, ...
         "lines": [float],         # mean lines acquired at each record (initial mask first)
         "n": [int],               # slices with that record
         "curves": {metric: {"mean": [..], "ci_low": [..], "ci_high": [..]}},
         "auc":    {metric: {"mean", "ci_low", "ci_high"}},   # normalized AUC per slice
         "final":  {metric: {"mean", "ci_low", "ci_high"}}}   # at the episode's end
      ],
      "paired_tests": [            # every pair of policies per preset x acceleration
        {"preset", "acceleration", "metric": "ssim_auc", "a", "b", "n", "mean_difference",
         "ci_low", "ci_high", "median_difference", "wins", "statistic", "p_value", "p_holm",
         "significant", "better",
         "actual_acceleration"}    # mean over the slices both ran on
      ],
      "merged_policies": [str]     # policies of earlier or concurrent evaluations into the
                                   # same folder whose comparable runs are summarized too
    }

``results.csv`` has one row per policy, preset, requested ``acceleration``, file, slice and
record, with the slice's ``actual_acceleration`` (measured / lines at its end).

A preset's label is its name, or ``NAME@DATA`` when ``data_root``/``data`` was overridden, so
results on other data are never labelled as the built-in benchmark. Metrics are ``ssim``,
``psnr`` (dB) and ``nmse``; intervals are 95% (``null`` when fewer than
two slices). Every number is finite or ``null``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from activemri._io import atomic_write_text
from activemri._version import __version__
from activemri.agents.rollout import RECORDED_METRICS, Trajectories
from activemri.envs.scenario import Scenario
from activemri.evaluation.stats import mean_ci, normalized_auc, paired_tests

__all__ = ["CONVENTIONS", "SCHEMA", "build_results", "slice_accelerations", "truncate",
           "validate_results", "write_csv"]  # fmt: skip

SCHEMA = "activemri.evaluation/1"

CONVENTIONS = {
    "ssim": "fastMRI's: 7x7 uniform window, K1=0.01, K2=0.03, sample covariance N/(N-1), "
    "mean over the valid region, per 2-D slice",
    "data_range": "the volume's maximum (the h5 'max' attribute; else the slice target's "
    "maximum), as fastMRI's evaluation uses for SSIM and PSNR",
    "crop": "reconstructions and targets are center-cropped to the data's recon_size",
    "psnr": "10 log10(data_range^2 / MSE), dB",
    "nmse": "||x - y||^2 / ||y||^2 per slice",
    "records": "metrics at the initial mask and after every acquired line",
    "auc": "trapezoidal area under metric vs lines acquired, from the initial mask to the "
    "budget, divided by the span of lines (the mean metric over the episode)",
    "ci": "95% Student-t interval of the mean across slices",
    "paired_tests": "Wilcoxon signed-rank (two-sided, zero differences dropped) on per-slice "
    "SSIM AUC over the slices both policies ran on; Holm-corrected over all pairs of one "
    "preset and acceleration; significant at 0.05",
    "budgets": "an episode ends at round(measured lines / acceleration) lines; policies that "
    "are not budget-aware run once at the largest budget and shorter budgets are prefixes of "
    "their trajectories",
}


def _episode_end(valid_lines: int, initial: int, acceleration: float) -> int:
    """Lines at the end of an episode, by the env's own rule (:class:`Scenario`)."""
    return Scenario(initial_lines=initial, acceleration=acceleration).end_lines(
        valid_lines, initial
    )


def truncate(runs: Trajectories, acceleration: float) -> Trajectories:
    """The trajectories as an episode at ``acceleration`` would have ended them."""
    out = Trajectories(files=list(runs.files), slices=list(runs.slices),
                       valid_lines=list(runs.valid_lines), example=runs.example,
                       dropped=list(runs.dropped))  # fmt: skip
    for i, lines in enumerate(runs.lines):
        end = _episode_end(runs.valid_lines[i], lines[0], acceleration)
        keep = sum(1 for x in lines if x <= end)
        if lines[keep - 1] != end:
            raise ValueError(
                f"{runs.files[i]} slice {runs.slices[i]}: the run ended at {lines[-1]} lines, "
                f"before the {acceleration:g}x budget of {end}"
            )
        out.lines.append(lines[:keep])
        for metric in RECORDED_METRICS:
            out.metrics[metric].append(runs.metrics[metric][i][:keep])
    return out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _ragged(rows: Sequence[Sequence[float]]) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _summary(values: np.ndarray) -> dict[str, float | None]:
    mean, low, high, _ = mean_ci(values[:, None])
    return {"mean": _num(mean[0]), "ci_low": _num(low[0]), "ci_high": _num(high[0])}


def slice_aucs(runs: Trajectories, metric: str = "ssim") -> np.ndarray:
    """Normalized AUC of ``metric`` per slice."""
    return np.array([
        normalized_auc(np.asarray(lines), np.asarray(values)[None])[0]
        for lines, values in zip(runs.lines, runs.metrics[metric], strict=True)
    ])  # fmt: skip


def slice_accelerations(runs: Trajectories) -> list[float]:
    """Per slice, the acceleration actually run: measured lines / lines at the end."""
    return [v / r[-1] for v, r in zip(runs.valid_lines, runs.lines, strict=True)]


Runs = Mapping[tuple[str, str, float], Trajectories]


def budget_views(
    settings: Any, labels: Sequence[str], runs: Runs, budget_aware: Mapping[str, bool]
) -> dict[tuple[str, float], dict[str, Trajectories]]:
    """Per ``(preset label, acceleration)``, each policy's trajectories as that budget ends them.

    Runs are found by preset; views are named by ``settings.label_of(preset)`` (the data,
    when it was overridden).

    A budget-aware policy's own run at that budget; any other policy's run at the largest
    budget, truncated (:func:`truncate`). Policies without a run are left out.
    """
    largest = min(settings.accelerations)
    views: dict[tuple[str, float], dict[str, Trajectories]] = {}
    for preset in settings.presets:
        for acceleration in settings.accelerations:
            view = views.setdefault((settings.label_of(preset), float(acceleration)), {})
            for label in labels:
                source = acceleration if budget_aware[label] else largest
                if (preset, label, source) in runs:
                    view[label] = truncate(runs[(preset, label, source)], acceleration)
    return views


def build_results(
    settings: Any,
    labels: Sequence[str],
    runs: Runs,
    budget_aware: Mapping[str, bool],
    envs: Mapping[str, Any],
) -> dict[str, Any]:
    """Assemble ``results.json`` from the runs (see the module docstring).

    Args:
        settings: The :class:`~activemri.evaluation.harness.EvalSettings`.
        labels: Policy labels in report order.
        runs: Trajectories by ``(preset, label, run acceleration)``.
        budget_aware: Per label, whether it was run per budget.
        envs: Per preset, a description of its env.
    """
    results, tests = [], []
    for (preset, acceleration), view in budget_views(settings, labels, runs, budget_aware).items():
        per_slice: dict[str, dict[tuple[str, int], float]] = {}
        ran: dict[str, dict[tuple[str, int], float]] = {}
        for label, run in view.items():
            values = {m: _ragged(run.metrics[m]) for m in RECORDED_METRICS}
            mean_lines = np.nanmean(_ragged([[float(x) for x in r] for r in run.lines]), axis=0)
            curves, auc, final = {}, {}, {}
            for m in RECORDED_METRICS:
                mean, low, high, n = mean_ci(values[m])
                curves[m] = {"mean": [_num(x) for x in mean], "ci_low": [_num(x) for x in low],
                             "ci_high": [_num(x) for x in high]}  # fmt: skip
                auc[m] = _summary(slice_aucs(run, m))
                final[m] = _summary(np.array([r[-1] for r in run.metrics[m]]))
            actual = float(np.mean(slice_accelerations(run)))
            results.append({
                "policy": label, "preset": preset, "acceleration": float(acceleration),
                "actual_acceleration": actual, "dropped": list(run.dropped),
                "budget_aware": bool(budget_aware[label]), "num_slices": len(run),
                "lines": [float(x) for x in mean_lines], "n": [int(x) for x in n],
                "curves": curves, "auc": auc, "final": final,
            })  # fmt: skip
            per_slice[label] = dict(zip(run.keys(), slice_aucs(run).tolist(), strict=True))
            ran[label] = dict(zip(run.keys(), slice_accelerations(run), strict=True))
        for test in paired_tests(per_slice):
            row = {"preset": preset, "acceleration": float(acceleration), "metric": "ssim_auc"}
            row.update({k: (_num(v) if isinstance(v, float) else v)
                        for k, v in test.to_dict().items()})  # fmt: skip
            common = set(ran[test.a]) & set(ran[test.b])
            row["actual_acceleration"] = (
                float(np.mean([ran[test.a][k] for k in sorted(common)])) if common else None
            )
            tests.append(row)
    doc = {
        "schema": SCHEMA,
        "activemri_version": __version__,
        "settings": settings.to_dict(),
        "conventions": dict(CONVENTIONS),
        "envs": dict(envs),
        "results": results,
        "paired_tests": tests,
    }
    validate_results(doc)
    return doc


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"invalid results document: {message}")


def _is_num(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)
                         and math.isfinite(x))  # fmt: skip


def validate_results(doc: Mapping[str, Any]) -> None:
    """Check a ``results.json`` document against the schema (module docstring).

    Raises:
        ValueError: Naming the first violation.
    """
    _require(doc.get("schema") == SCHEMA, f"schema must be {SCHEMA!r}")
    for key in ("activemri_version", "settings", "conventions", "envs", "results", "paired_tests"):
        _require(key in doc, f"missing {key!r}")
    for key in ("ssim", "data_range", "crop", "auc", "ci", "paired_tests"):
        _require(isinstance(doc["conventions"].get(key), str), f"conventions.{key} missing")
    for r in doc["results"]:
        where = f"result {r.get('policy')}/{r.get('preset')}/{r.get('acceleration')}"
        for key in ("policy", "preset", "acceleration", "actual_acceleration", "num_slices",
                    "lines", "n", "curves", "auc", "final", "budget_aware", "dropped"):  # fmt: skip
            _require(key in r, f"{where}: missing {key!r}")
        _require(r["preset"] in doc["envs"], f"{where}: preset not described in envs")
        t = len(r["lines"])
        _require(
            t >= 1 and len(r["n"]) == t, f"{where}: lines and n must have one entry per record"
        )
        _require(
            all(b > a for a, b in itertools.pairwise(r["lines"])), f"{where}: lines must increase"
        )
        for metric in RECORDED_METRICS:
            curve = r["curves"].get(metric, {})
            for part in ("mean", "ci_low", "ci_high"):
                values = curve.get(part)
                _require(isinstance(values, list) and len(values) == t,
                         f"{where}: curves.{metric}.{part} must have {t} entries")  # fmt: skip
                _require(
                    all(_is_num(v) for v in values), f"{where}: curves.{metric}.{part} not finite"
                )
            for block in ("auc", "final"):
                entry = r[block].get(metric, {})
                _require(all(_is_num(entry.get(p)) for p in ("mean", "ci_low", "ci_high"))
                         and entry.get("mean") is not None,
                         f"{where}: {block}.{metric} needs mean, ci_low, ci_high")  # fmt: skip
                low, high = entry.get("ci_low"), entry.get("ci_high")
                if low is not None and high is not None:
                    _require(
                        low <= entry["mean"] <= high,
                        f"{where}: {block}.{metric} CI excludes the mean",
                    )
    for t in doc["paired_tests"]:
        for key in ("preset", "acceleration", "metric", "a", "b", "n", "p_value", "p_holm",
                    "significant", "better", "mean_difference"):  # fmt: skip
            _require(key in t, f"paired test missing {key!r}")
        _require(0.0 <= t["p_value"] <= t["p_holm"] <= 1.0, "paired test p-values out of order")


def write_csv(
    path: Any,
    settings: Any,
    labels: Sequence[str],
    runs: Runs,
    budget_aware: Mapping[str, bool],
) -> None:
    """Long-format CSV: one row per policy, preset, acceleration, slice and record."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["policy", "preset", "acceleration", "actual_acceleration", "file",
                     "slice", "step", "lines", *RECORDED_METRICS])  # fmt: skip
    for (preset, acceleration), view in budget_views(settings, labels, runs, budget_aware).items():
        for label, run in view.items():
            actual = slice_accelerations(run)
            for i, (file, index) in enumerate(run.keys()):
                for step, lines in enumerate(run.lines[i]):
                    values = [repr(run.metrics[m][i][step]) for m in RECORDED_METRICS]
                    writer.writerow([label, preset, f"{acceleration:g}", f"{actual[i]:.6g}",
                                     file, index, step, lines, *values])  # fmt: skip
    atomic_write_text(path, buffer.getvalue())
