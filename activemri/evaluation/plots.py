"""Figures of an evaluation: SSIM curves with CI bands, final metrics, an example slice."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from activemri._io import atomic_path
from activemri.agents.rollout import Trajectories

__all__ = ["final_figure", "plot_all", "plot_curves", "plot_example", "plot_final"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _groups(doc: Mapping[str, Any]) -> list[tuple[str, float]]:
    settings = doc["settings"]
    labels = settings.get("preset_labels", settings["presets"])
    return [(p, float(a)) for p in labels for a in settings["accelerations"]]


def _colors(doc: Mapping[str, Any]) -> dict[str, Any]:
    plt = _pyplot()
    labels = list(dict.fromkeys(r["policy"] for r in doc["results"]))
    cycle = plt.get_cmap("tab10")
    return {label: cycle(i % 10) for i, label in enumerate(labels)}


def plot_curves(doc: Mapping[str, Any], path: Path, metric: str = "ssim") -> Path:
    """Mean ``metric`` versus lines acquired, with 95% CI bands; one panel per budget."""
    plt = _pyplot()
    groups = _groups(doc)
    colors = _colors(doc)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4), squeeze=False)
    for ax, (preset, acceleration) in zip(axes[0], groups, strict=True):
        for r in doc["results"]:
            if r["preset"] != preset or r["acceleration"] != acceleration:
                continue
            curve = r["curves"][metric]
            x = np.array(r["lines"])
            mean = np.array(curve["mean"], dtype=float)
            low = np.array([np.nan if v is None else v for v in curve["ci_low"]], dtype=float)
            high = np.array([np.nan if v is None else v for v in curve["ci_high"]], dtype=float)
            ax.plot(
                x, mean, color=colors[r["policy"]], label=f"{r['policy']} (n={r['num_slices']})"
            )
            ax.fill_between(x, low, high, color=colors[r["policy"]], alpha=0.2, linewidth=0)
        ax.set_title(f"{Path(preset).stem}, {_budget_label(doc, preset, acceleration)}")
        ax.set_xlabel("lines acquired")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _budget_label(doc: Mapping[str, Any], preset: str, acceleration: float) -> str:
    """``4x`` requested, with the acceleration actually run (whole lines per slice).

    ``4x (3.98x run)``; a range when policies ran on subsets that end differently.
    """
    ran = sorted({f"{float(r.get('actual_acceleration', acceleration)):.3g}"
                  for r in doc["results"]
                  if r["preset"] == preset and r["acceleration"] == acceleration},
                 key=float)  # fmt: skip
    if not ran:
        return f"{acceleration:g}x"
    shown = f"{ran[0]}x" if len(ran) == 1 else f"{ran[0]}x-{ran[-1]}x"
    return f"{acceleration:g}x ({shown} run)"


def _limits(extents: list[float]) -> tuple[float, float]:
    """Y limits covering every error bar with a margin, kept in SSIM's [0, 1] when they are."""
    low, high = min(extents), max(extents)
    margin = max(0.02, 0.1 * (high - low))
    bottom, top = low - margin, high + margin
    if low >= 0.0:
        bottom = max(0.0, bottom)
    if high <= 1.0:
        top = min(1.0, top)
    return bottom, top


def final_figure(doc: Mapping[str, Any]) -> Any:
    """The figure of :func:`plot_final` (not saved)."""
    plt = _pyplot()
    groups = _groups(doc)
    colors = _colors(doc)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (block, title) in zip(
        axes, (("auc", "SSIM AUC"), ("final", "final SSIM")), strict=True
    ):
        labels = list(colors)
        width = 0.8 / max(1, len(labels))
        extents: list[float] = []
        for j, label in enumerate(labels):
            xs, means, errs = [], [], []
            for g, (preset, acceleration) in enumerate(groups):
                for r in doc["results"]:
                    if (r["policy"], r["preset"], r["acceleration"]) != (
                        label, preset, acceleration,
                    ):  # fmt: skip
                        continue
                    entry = r[block]["ssim"]
                    low = entry["mean"] if entry["ci_low"] is None else entry["ci_low"]
                    high = entry["mean"] if entry["ci_high"] is None else entry["ci_high"]
                    xs.append(g + (j - (len(labels) - 1) / 2) * width)
                    means.append(entry["mean"])
                    errs.append((entry["mean"] - low, high - entry["mean"]))
                    extents += [low, high]
            yerr = np.array(errs, dtype=float).T if errs else None
            ax.bar(xs, means, width, yerr=yerr, color=colors[label], label=label, capsize=2)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(
            [f"{Path(p).stem}\n{_budget_label(doc, p, a)}" for p, a in groups], fontsize=8
        )
        ax.set_title(title)
        ax.set_ylabel(f"{title} (mean, 95% CI)")
        if extents:
            ax.set_ylim(*_limits(extents))
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()
    fig.tight_layout(rect=(0.0, 0.0, 0.84, 1.0))
    fig.legend(handles, names, fontsize=7, loc="center left", bbox_to_anchor=(0.85, 0.5))
    return fig


def plot_final(doc: Mapping[str, Any], path: Path) -> Path:
    """SSIM AUC and final SSIM per policy and budget, with 95% CI error bars.

    The y axis covers every error bar; the legend sits to the right of both panels.
    """
    return _save(final_figure(doc), path)


def plot_example(examples: Mapping[str, Mapping[str, np.ndarray]], path: Path, title: str) -> Path:
    """Target, then each policy's final reconstruction with its mask underneath.

    A line mask (``(W,)``) is drawn as a strip; a point mask of a ky-kz plane (``(H, W)``)
    as an image of the plane (white: acquired).
    """
    plt = _pyplot()
    names = list(examples)
    first = examples[names[0]]
    planes = any(np.ndim(examples[n]["mask"]) == 2 for n in names)
    size = (2.2 * (len(names) + 1), 4.6 if planes else 3.2)
    ratios = [1, 1] if planes else [5, 1]
    fig, axes = plt.subplots(2, len(names) + 1, figsize=size, gridspec_kw={"height_ratios": ratios})
    vmax = float(np.max(first["target"]))
    axes[0, 0].imshow(first["target"], cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("target", fontsize=8)
    for j, name in enumerate(names, start=1):
        example = examples[name]
        mask = np.asarray(example["mask"], dtype=float)
        unit = "points" if mask.ndim == 2 else "lines"
        axes[0, j].imshow(example["reconstruction"], cmap="gray", vmin=0, vmax=vmax)
        axes[0, j].set_title(f"{name}\n{int(mask.sum())} {unit}", fontsize=8)
        shown = mask if mask.ndim == 2 else np.tile(mask[None], (8, 1))
        axes[1, j].imshow(shown, cmap="gray", aspect="equal" if mask.ndim == 2 else "auto",
                          vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_all(
    doc: Mapping[str, Any], runs: Mapping[tuple[str, str, float], Trajectories], out: Path
) -> list[Path]:
    """Every figure of an evaluation into ``out``; returns their paths."""
    paths = [
        plot_curves(doc, out / "ssim_vs_lines.png"),
        plot_final(doc, out / "final_metrics.png"),
    ]
    largest = min(doc["settings"]["accelerations"])
    settings = doc["settings"]
    labels = settings.get("preset_labels", settings["presets"])
    for preset, shown in zip(settings["presets"], labels, strict=True):
        examples = {}
        for (p, label, acceleration), run in runs.items():
            if p == preset and acceleration == largest and run.example is not None:
                examples[label] = run.example
        order = [r["policy"] for r in doc["results"] if r["preset"] == shown]
        examples = {k: examples[k] for k in dict.fromkeys(order) if k in examples}
        if examples:
            name = f"example_{Path(shown).stem}.png"
            budget = _budget_label(doc, shown, largest)
            title = f"{Path(shown).stem}, {budget}: first evaluated slice"
            paths.append(plot_example(examples, out / name, title))
    return paths
