"""``activemri demo``: the baselines compared on built-in data, from a fresh machine.

Builds (and caches) the built-in ``default`` data, loads the shipped default U-Net and the
shipped learned ordering (made by the command in its provenance; ``learn=True`` learns a new
one), then evaluates random, low-to-high, equispaced, the learned fixed mask, the
uncertainty-driven policy and the greedy oracle at 4x and 8x on the test split, prints the
comparison and writes the plots.

On CPU the greedy oracle (one U-Net forward per candidate line per step: about a minute per
slice on 2 cores) and the other policies run on documented, nested, seeded subsets of the
test split, so the demo stays within a few minutes; on CUDA every test slice is used. The
full comparison is ``activemri evaluate`` (README).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from activemri.envs.config import resolve_device
from activemri.evaluation.harness import EvalSettings, evaluate, format_table

__all__ = ["CPU_ORACLE_SLICES", "CPU_SLICES", "DEMO_POLICIES", "run_demo"]

DEMO_POLICIES = ("random", "low_to_high", "equispaced", "learned", "uncertainty", "greedy_oracle")
CPU_SLICES = 24
"""Test slices the demo evaluates on CPU (a seeded subset; ``subset_seed`` 0)."""
CPU_ORACLE_SLICES = 2
"""Test slices the greedy oracle runs on, on CPU (the first of the same seeded subset)."""


def run_demo(
    out: str | Path = "outputs/demo",
    *,
    device: str = "auto",
    max_slices: int | None = -1,
    oracle_slices: int | None = -1,
    learn: bool = False,
    learn_sample: int = 16,
    preset: str = "builtin-v0",
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the demo and print its report.

    Args:
        out: Output folder (results, plots, runs; rerunning resumes).
        device: ``auto``, ``cpu`` or ``cuda``.
        max_slices: Test slices for every policy; ``-1``: :data:`CPU_SLICES` on CPU, all on
            CUDA; ``None``: all.
        oracle_slices: Test slices for the greedy oracle; ``-1``: :data:`CPU_ORACLE_SLICES`
            on CPU, all on CUDA; ``None``: as ``max_slices``.
        learn: Learn the fixed mask here (``activemri mask learn`` settings) instead of
            loading the shipped ordering (about 20 minutes on a 2-core CPU).
        learn_sample: Training slices for ``learn``.
        preset: Env preset (other data or reconstructors; the shipped ordering fits only
            ``builtin-v0``, so pair another preset with ``learn``).
        overrides: Env config overrides.
        log: Where the report goes.
        show_progress: tqdm bars.

    Returns:
        The results document.
    """
    start = time.perf_counter()
    out = Path(out)
    on_cpu = resolve_device(device).type == "cpu"
    if max_slices == -1:
        max_slices = CPU_SLICES if on_cpu else None
    if oracle_slices == -1:
        oracle_slices = CPU_ORACLE_SLICES if on_cpu else None
    policies = list(DEMO_POLICIES)
    if learn:
        from activemri.agents.learned_mask import learn_ordering

        path = out / "learned_ordering.json"
        log(f"learning the fixed mask on {learn_sample} training slices -> {path}")
        learn_ordering(preset, sample_size=learn_sample, out=path,
                       **{**dict(overrides or {}), "device": device})  # fmt: skip
        policies[policies.index("learned")] = f"learned:{path}"
    settings = EvalSettings(
        policies=tuple(policies),
        presets=(preset,),
        accelerations=(4.0, 8.0),
        split="test",
        max_slices=max_slices,
        policy_slices={} if oracle_slices is None else {"greedy_oracle": oracle_slices},
        device=device,
        overrides=dict(overrides or {}),
    )
    doc = evaluate(settings, out, log=None, show_progress=show_progress)
    elapsed = time.perf_counter() - start
    sizes = {r["policy"]: r["num_slices"] for r in doc["results"]}
    env = doc["envs"][settings.label_of(preset)]
    log(
        f"activemri demo: built-in {env['data']} test split, reconstructor "
        f"{env['reconstructor']} ({env['reconstructor_class']}), {env['scenario']['initial_lines']}"
        f" initial lines of {env['kspace_shape'][-1]}, device {resolve_device(device)}"
    )
    if max_slices is not None or oracle_slices is not None:
        log(
            f"subsets: {sizes['random']} test slices (seeded, subset_seed 0) for every policy; "
            f"greedy oracle on the first {sizes['greedy_oracle']} of them (one forward per "
            "candidate line per step). Full comparison: activemri evaluate (README)."
        )
    log(format_table(doc))
    log(f"wrote {out}/results.json, results.csv, paired_tests.csv, ssim_vs_lines.png, "
        f"final_metrics.png, example_{Path(settings.label_of(preset)).stem}.png")  # fmt: skip
    log(f"demo wall time: {elapsed:.0f} s")
    return doc
