"""``activemri demo`` and ``activemri evaluate`` smoke tests with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from env_helpers import CUSTOM, tiny_config

from activemri.cli import main
from activemri.evaluation import validate_results
from activemri.evaluation.demo import DEMO_POLICIES, run_demo


def test_demo_smoke(tiny_data: Path, tmp_path: Path) -> None:
    overrides = tiny_config(tiny_data, reconstructor=CUSTOM, trust_class_path=True)
    del overrides["budget"], overrides["split"]
    overrides["initial_lines"] = 2  # 8x of 32 measured lines ends at 4: above the initial ones
    lines: list[str] = []
    doc = run_demo(tmp_path, device="cpu", max_slices=3, oracle_slices=2, learn=True,
                   learn_sample=2, overrides=overrides, log=lines.append,
                   show_progress=False)  # fmt: skip
    validate_results(doc)
    report = "\n".join(lines)
    assert len(DEMO_POLICIES) == 6
    for label in ("random", "low_to_high", "equispaced", "learned_fixed", "uncertainty",
                  "greedy_oracle"):  # fmt: skip
        assert label in report
    assert "greedy oracle on the first 2" in report and "demo wall time" in report
    assert {r["acceleration"] for r in doc["results"]} == {4.0, 8.0}
    assert (tmp_path / "learned_ordering.json").is_file()
    assert (tmp_path / "ssim_vs_lines.png").is_file()


def test_cli_evaluate(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = [f"--set=data_root={tiny_data}", "--set=reconstructor=zero_filled",
            "--set=initial_lines=4"]  # fmt: skip
    common = ["--split", "train", "--accelerations", "4", "--max-slices", "4", "--device", "cpu",
              "--no-plots", "--quiet", "--out", str(tmp_path), *sets]  # fmt: skip
    assert main(["evaluate", *common, "--policies", "random", "low_to_high"]) == 0
    out = capsys.readouterr().out
    assert "SSIM AUC" in out and "paired tests" in out
    doc = json.loads((tmp_path / "results.json").read_text())
    validate_results(doc)
    assert [r["num_slices"] for r in doc["results"]] == [4, 4]
    assert main(["evaluate", *common, "--policies", "nonsense"]) == 2
    assert "unknown policy" in capsys.readouterr().err
