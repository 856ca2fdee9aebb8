"""``activemri evaluate`` under ``torchrun``: 2 gloo processes give the single-process results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activemri.cli import main
from activemri.evaluation.results import validate_results


def test_torchrun_evaluate_with_sharded_oracle_scoring_matches_one_process(
    tiny_data: Path, tmp_path: Path
) -> None:
    args = ["evaluate", "--policies", "greedy_oracle", "low_to_high", "--split", "train",
            "--accelerations", "4", "--max-slices", "4", "--device", "cpu", "--no-plots",
            "--quiet", f"--set=data_root={tiny_data}", "--set=reconstructor=zero_filled",
            "--set=initial_lines=4"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "activemri.cli", *args,
               "--out", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # only rank 0 writes and prints
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    validate_results(two)
    assert [(r["policy"], r["num_slices"]) for r in two["results"]] == [
        (r["policy"], r["num_slices"]) for r in one["results"]
    ]
    for a, b in zip(one["results"], two["results"], strict=True):
        for block in ("auc", "final"):
            for metric, stats in a[block].items():
                assert b[block][metric]["mean"] == pytest.approx(stats["mean"], rel=1e-6)
    runs = sorted(p.name for p in (tmp_path / "two").rglob("*.json") if p.name != "results.json")
    assert runs == sorted(
        p.name for p in (tmp_path / "one").rglob("*.json") if p.name != "results.json"
    )
