"""Greedy-oracle step: batched candidate scoring vs the bare forwards vs one-by-one stepping.

One oracle step scores every measured, unacquired line of every episode. This script times:

- ``batched``: :class:`activemri.agents.GreedyOraclePolicy` (the core's ``score_candidates``:
  candidates in chunks of ``candidate_chunk`` images per forward; rank-one image updates with
  the zero-filled reconstructor);
- ``bare``: only the reconstructor forwards that scoring needs (same chunks, same inputs);
- ``bare + SSIM``: those forwards and the SSIM of every image, the least any oracle does;
- ``oracle, MSE``: the batched oracle scoring with MSE instead of SSIM, which isolates the
  cost of making the candidate images (rank-one updates with the zero-filled reconstructor);
- ``one-by-one``: the prior-art way, each candidate stepped on its own from the same state
  (the core's pure ``transition`` on a batch of one: one forward of batch 1 per candidate).

Batched and bare times are medians over ``--repeats`` runs (this machine's timings vary by
up to 2x between runs); one-by-one runs once.

Usage::

    python benchmarks/oracle_bench.py --device cpu --batch-size 4 --reconstructor unet
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import activemri  # noqa: F401  (registers the env ids)
from activemri import metrics
from activemri.agents import GreedyOraclePolicy, free_lines
from activemri.envs import ActiveMRIVectorEnv


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--reconstructor", choices=["unet", "zero_filled"], default="unet")
    parser.add_argument(
        "--chunk", type=int, default=None, help="candidate_chunk (default: per device)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    args = parser.parse_args()
    device = torch.device(args.device)
    recon = {} if args.reconstructor == "unet" else {"reconstructor": "zero_filled"}
    config = {"split": "test", "device": args.device, "candidate_chunk": args.chunk, **recon}
    chunk_note = "per device" if args.chunk is None else str(args.chunk)

    venv = ActiveMRIVectorEnv(args.batch_size, preset="builtin-v0", **config)
    obs, _ = venv.torch_reset(seed=0)
    seen = venv.torch_policy_observation(obs)
    state = venv.state  # a tool: the bare forwards below need the k-space
    oracle = GreedyOraclePolicy(venv.torch_score_candidates)
    mse_oracle = GreedyOraclePolicy(venv.torch_score_candidates, metric="mse")
    free = free_lines(seen)
    candidates = int(free.sum())
    chunk = venv.core.candidate_chunk
    rows, cols = torch.nonzero(free, as_tuple=True)
    model = venv.reconstructor

    def bare_forwards(score: bool) -> None:
        """The forwards scoring needs: the same images, in the same chunk sizes."""
        with torch.no_grad():
            for s in range(0, rows.numel(), chunk):
                r, c = rows[s : s + chunk], cols[s : s + chunk]
                mask = state.mask[r].clone()
                n = torch.arange(r.numel(), device=device)
                mask[n, c] = True
                observed = torch.where(mask[:, None, None, :], state.kspace[r], 0)
                if args.reconstructor == "unet":
                    image = model(observed, mask, num_low_frequencies=state.num_low[r]).image
                else:
                    image = model(observed, mask).image
                if score:
                    metrics.ssim(image, state.target[r], state.data_range[r])

    def median_time(fn) -> float:  # type: ignore[no-untyped-def]
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    choice = oracle.act(seen)
    batched = median_time(lambda: oracle.act(seen))
    batched_mse = median_time(lambda: mse_oracle.act(seen))
    bare = median_time(lambda: bare_forwards(False))
    bare_ssim = median_time(lambda: bare_forwards(True))

    # One by one: each candidate a transition of its own, from the same state of batch 1.
    core = venv.core
    one_by_one = 0.0
    for b in range(args.batch_size):
        row = state.select(slice(b, b + 1))
        scores = []
        _sync(device)
        t0 = time.perf_counter()
        for col in torch.nonzero(free[b]).flatten().tolist():
            nxt = core.transition(row, torch.tensor([col], device=device))
            scores.append((float(nxt.score[0]), int(col)))
        _sync(device)
        one_by_one += time.perf_counter() - t0
        assert max(scores)[1] == int(choice[b]) or np.isclose(
            max(scores)[0], next(s for s, c in scores if c == int(choice[b])), atol=1e-6
        )
    print(
        f"device {args.device}, {args.reconstructor}, B={args.batch_size}, "
        f"{candidates} candidates, chunk {chunk} ({chunk_note}), median of {args.repeats}\n"
        f"  batched oracle step (SSIM): {batched * 1e3:9.1f} ms\n"
        f"  batched oracle step (MSE) : {batched_mse * 1e3:9.1f} ms   (candidate images)\n"
        f"  bare forwards             : {bare * 1e3:9.1f} ms   (oracle / bare = "
        f"{batched / bare:.2f})\n"
        f"  bare forwards + SSIM      : {bare_ssim * 1e3:9.1f} ms   (oracle / (bare + SSIM) = "
        f"{batched / bare_ssim:.2f})\n"
        f"  one by one (step API)     : {one_by_one * 1e3:9.1f} ms   "
        f"(one-by-one / batched = {one_by_one / batched:.1f}x)"
    )


if __name__ == "__main__":
    main()
