"""How well the self-supervised reward ranks candidate lines against the true SSIM gain.

For seeded test-split episodes played by a random policy, at every step every free line is
scored twice with the env's oracle handle: its self-supervised score gain (held-out data
predicted from the rest; never the target) and its true SSIM gain (against the target). The
script prints the per-step Spearman rank correlation between the two, averaged over steps
and episodes (with its spread and the share of steps where it is positive), and the same for
the agreement of the two rewards' best line (the true SSIM gain of the self-supervised
reward's pick, as a share of the best possible gain).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/self_supervised_reward.py --preset builtin-v0 \
        --episodes 8 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

import activemri  # noqa: F401  (registers the env ids)
from activemri.envs import ActiveMRIVectorEnv


def _step_figures(venv: ActiveMRIVectorEnv, candidates: int) -> list[tuple[float, float]]:
    """Spearman and pick quality of every episode at the current step."""
    state = venv.state
    free = state.free_lines()
    k = min(int(free.sum(dim=1).min()), candidates)
    # the same number of candidates per episode (all of them when the counts agree)
    keys = torch.where(free, torch.rand(free.shape, device=free.device), 2.0)
    lines = keys.argsort(dim=1)[:, :k]
    core = venv.core
    ss = core.score_candidates(state, lines) - state.score[:, None]
    true = core.score_candidates(state, lines, metric="ssim") - state.metrics["ssim"][:, None]
    out = []
    for s, t in zip(ss.cpu().numpy(), true.cpu().numpy(), strict=True):
        rho = float(spearmanr(s, t).statistic) if np.ptp(s) > 0 and np.ptp(t) > 0 else 0.0
        best, worst = float(t.max()), float(t.min())
        pick = float(t[int(np.argmax(s))])
        out.append((rho, (pick - worst) / (best - worst) if best > worst else 1.0))
    return out


def main() -> None:
    """Run the measurement and print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="builtin-v0", help="env preset")
    parser.add_argument("--episodes", type=int, default=8, help="episodes (in batches)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reconstructor", default=None, help="override the preset's")
    parser.add_argument("--holdout-fraction", type=float, default=0.4)
    parser.add_argument("--holdout-splits", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=1000, help="most lines per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    overrides = {"device": args.device, "split": "test", "autoreset_mode": "disabled",
                 "reward": "self_supervised", "holdout_fraction": args.holdout_fraction,
                 "holdout_splits": args.holdout_splits}  # fmt: skip
    if args.reconstructor:
        overrides["reconstructor"] = args.reconstructor
    venv = ActiveMRIVectorEnv(args.batch_size, args.preset, **overrides)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # the candidate subsets
    figures: list[tuple[float, float]] = []
    start = time.perf_counter()
    for batch in range(max(1, args.episodes // args.batch_size)):
        venv.torch_reset(seed=args.seed + 1000 * batch)
        while not bool(venv.state.done().all()):
            figures += _step_figures(venv, args.candidates)
            free = venv.state.free_lines().float()
            actions = torch.multinomial(free.cpu() + 1e-12, 1, generator=gen).flatten()
            venv.torch_step(actions)
    rho = np.array([f[0] for f in figures])
    pick = np.array([f[1] for f in figures])
    result = {
        "preset": args.preset,
        "reconstructor": type(venv.reconstructor).__name__,
        "holdout_fraction": args.holdout_fraction,
        "holdout_splits": args.holdout_splits,
        "candidates": args.candidates,
        "steps": len(figures),
        "spearman_mean": float(rho.mean()),
        "spearman_std": float(rho.std()),
        "spearman_positive_share": float((rho > 0).mean()),
        "pick_quality_mean": float(pick.mean()),
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
