"""Training throughput of an agent preset: env steps per second while learning.

Runs ``activemri.agents.training.train_agent`` for ``--steps`` env steps into a temporary
folder with periodic evaluation off and learning from the first batch of transitions on
(``learning_starts`` lowered for Double DQN), so every timed step includes the algorithm's
updates. Prints steps/s for the whole run and the setting.

Usage::

    python benchmarks/agent_train_bench.py --preset agents/ddqn-builtin.yaml --device cuda
    python benchmarks/agent_train_bench.py --preset agents/maskable-ppo-builtin.yaml --steps 2112
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from activemri.agents.preset import load_agent_preset
from activemri.agents.training import train_agent


def main() -> None:
    """Parse arguments, train briefly, print the throughput."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="agents/ddqn-builtin.yaml")
    parser.add_argument("--steps", type=int, default=2048, help="env steps to time")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--n-envs", type=int, help="episodes stepped together (default: preset)")
    args = parser.parse_args()
    preset = load_agent_preset(args.preset)
    hyper = dict(preset.hyperparameters)
    if preset.algorithm == "ddqn":
        hyper["learning_starts"] = min(int(hyper.get("learning_starts", 0)), 256)
    preset = preset.replace(
        hyperparameters=hyper,
        eval={"every": 0, "split": preset.eval.split, "slices": preset.eval.slices},
        checkpoint_every=10**9,
        n_envs=args.n_envs or preset.n_envs,
        source=preset.source,
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = train_agent(preset, out, total_steps=args.steps, device=args.device, log=None)
        elapsed = time.perf_counter() - start
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(
        f"{args.preset} on {device} ({name}, {torch.get_num_threads()} CPU threads), "
        f"{preset.n_envs} envs: {result.steps} env steps in {elapsed:.1f} s "
        f"(setup included) = {result.steps / elapsed:.1f} steps/s"
    )


if __name__ == "__main__":
    main()
