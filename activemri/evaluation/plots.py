"""Figures of an evaluation: SSIM curves with CI bands, final metrics, an example slice."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from activemri._io import atomic_path
from activemri.evaluation.runner import Trajectories

__all__ = ["plot_all", "plot_curves", "plot_example", "plot_final"]


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
        ax.set_title(f"{Path(preset).stem}, {acceleration:g}x")
        ax.set_xlabel("lines acquired")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_final(doc: Mapping[str, Any], path: Path) -> Path:
    """SSIM AUC and final SSIM per policy and budget, with 95% CI error bars."""
    plt = _pyplot()
    groups = _groups(doc)
    colors = _colors(doc)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (block, title) in zip(
        axes, (("auc", "SSIM AUC"), ("final", "final SSIM")), strict=True
    ):
        labels = list(colors)
        width = 0.8 / max(1, len(labels))
        for j, label in enumerate(labels):
            xs, means, errs = [], [], []
            for g, (preset, acceleration) in enumerate(groups):
                for r in doc["results"]:
                    if (r["policy"], r["preset"], r["acceleration"]) == (
                        label,
                        preset,
                        acceleration,
                    ):
                        entry = r[block]["ssim"]
                        xs.append(g + (j - (len(labels) - 1) / 2) * width)
                        means.append(entry["mean"])
                        half = 0.0 if entry["ci_high"] is None else entry["ci_high"] - entry["mean"]
                        errs.append(half)
            ax.bar(xs, means, width, yerr=errs, color=colors[label], label=label, capsize=2)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{Path(p).stem}\n{a:g}x" for p, a in groups])
        ax.set_title(title)
        lows = [r[block]["ssim"]["mean"] for r in doc["results"]]
        if lows:
            ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.03))
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_example(examples: Mapping[str, Mapping[str, np.ndarray]], path: Path, title: str) -> Path:
    """Target, then each policy's final reconstruction with its mask underneath."""
    plt = _pyplot()
    names = list(examples)
    first = examples[names[0]]
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(2.2 * (len(names) + 1), 3.2),
                             gridspec_kw={"height_ratios": [5, 1]})  # fmt: skip
    vmax = float(np.max(first["target"]))
    axes[0, 0].imshow(first["target"], cmap="gray", vmin=0, vmax=vmax)
    axes[0, 0].set_title("target", fontsize=8)
    for j, name in enumerate(names, start=1):
        example = examples[name]
        axes[0, j].imshow(example["reconstruction"], cmap="gray", vmin=0, vmax=vmax)
        axes[0, j].set_title(f"{name}\n{int(example['mask'].sum())} lines", fontsize=8)
        axes[1, j].imshow(np.tile(example["mask"][None].astype(float), (8, 1)), cmap="gray",
                          aspect="auto", vmin=0, vmax=1)  # fmt: skip
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
            paths.append(plot_example(examples, out / name, f"{Path(shown).stem}, {largest:g}x: "
                                      "first evaluated slice"))  # fmt: skip
    return paths
