"""Per-episode time with a dense SSIM-gain reward against a terminal reward (``reward_timing``).

A terminal reward scores only the last state of an episode; with an observation that shows no
reconstruction (``mask``, ``action_mask``, ``budget_left``: e.g. a policy that reads the
mask only, or a self-attending policy over acquired k-space) the reconstruction too is made
only then. Both envs play the same seeded episodes with the same actions (first free line),
so the returns must agree; the script prints both times, the speed-up and the largest return
difference.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/terminal_reward_bench.py --preset builtin-v0 \
        --batch-size 16 --episodes 3
"""

from __future__ import annotations

import argparse
import time

import torch

import activemri  # noqa: F401  (registers the env ids)
from activemri.envs import ActiveMRIVectorEnv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _episodes(venv: ActiveMRIVectorEnv, episodes: int, seed: int) -> tuple[float, torch.Tensor]:
    """Seconds per batched episode and the returns of every episode."""
    returns = []
    venv.torch_reset(seed=seed)  # warm-up episode start, off the clock
    _sync(venv.device)
    start = time.perf_counter()
    for e in range(episodes):
        venv.torch_reset(seed=seed + 1000 * e)
        total = torch.zeros(venv.num_envs, device=venv.device)
        done = torch.zeros(venv.num_envs, dtype=torch.bool, device=venv.device)
        while not bool(done.all()):
            actions = venv.state.free_lines().float().argmax(dim=1)
            _, reward, terminated, _, _ = venv.torch_step(actions, check=False)
            total += torch.where(done, 0.0, reward)
            done |= terminated
        returns.append(total)
    _sync(venv.device)
    return (time.perf_counter() - start) / episodes, torch.cat(returns)


def main() -> None:
    """Run the comparison and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="builtin-v0", help="env preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=3, help="batched episodes timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reconstructor", default=None, help="override the preset's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = {"device": args.device, "split": "test", "autoreset_mode": "disabled",
                 "observation": ["mask", "action_mask", "budget_left"]}  # fmt: skip
    if args.reconstructor:
        overrides["reconstructor"] = args.reconstructor
    times = {}
    returns = {}
    for timing in ("dense", "terminal"):
        venv = ActiveMRIVectorEnv(args.batch_size, args.preset, reward_timing=timing, **overrides)
        times[timing], returns[timing] = _episodes(venv, args.episodes, args.seed)
    model = type(venv.reconstructor).__name__
    diff = float((returns["dense"] - returns["terminal"]).abs().max())
    print(f"{args.preset}, {model}, B={args.batch_size}, {args.episodes} batched episodes, "
          f"{venv.device}")  # fmt: skip
    print(f"dense reward:    {times['dense'] * 1e3:9.1f} ms per batched episode")
    print(f"terminal reward: {times['terminal'] * 1e3:9.1f} ms per batched episode")
    print(f"speed-up: {times['dense'] / times['terminal']:.2f}x; largest return difference "
          f"{diff:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
