from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from activemri.cli import main


def test_data_make_and_check(tmp_path, capsys):
    out = tmp_path / "d"
    assert (
        main(
            [
                "data",
                "make",
                "--preset",
                "tiny",
                "--out",
                str(out),
                "--volumes",
                "2",
                "--coils",
                "2",
                "--slices",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("*.h5")) == ["vol00000.h5", "vol00001.h5"]
    assert ": 2 volumes x 2 slices (2-coil" in capsys.readouterr().out
    assert main(["data", "check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "files: 2 (2 valid, 0 broken), slices: 4" in text and "coils: {2: 2}" in text


def test_data_check_fails_on_broken_folder(tmp_path, capsys):
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "bad.h5: cannot open" in capsys.readouterr().out


def test_data_check_missing_folder_is_usage_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "activemri: error:" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "make", "--preset", "nope", "--out", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["data", "make", "--out", "x", "--volumes", "0"])
    assert exc.value.code == 2


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "activemri.cli", "data", "make", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "knee-multicoil" in result.stdout and "--coils" in result.stdout


def test_env_list_and_check(tiny_data, capsys):
    assert main(["env", "list"]) == 0
    assert "ActiveMRI/Builtin-v0" in capsys.readouterr().out
    status = main(
        [
            "env",
            "check",
            "ActiveMRI/Builtin-v0",
            "--set",
            f"data_root={tiny_data}",
            "--set",
            "split=null",
            "--set",
            "reconstructor=zero_filled",
            "--set",
            "initial_lines=4",
            "--set",
            "device=cpu",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and "ActiveMRI/Builtin-v0: passed" in out and "ok    telescoping" in out


def test_env_check_fails_cleanly(capsys):
    assert main(["env", "check", "ActiveMRI/KneeSingleCoil-v0"]) == 1
    assert "data_root" in capsys.readouterr().out
    assert main(["env", "check", "Nope-v0"]) == 2


def test_bench_prints_breakdown_and_reference_ratio(capsys):
    threads = torch.get_num_threads()
    assert (
        main(
            [
                "bench",
                "--device",
                "cpu",
                "--sizes",
                "builtin",
                "--reconstructors",
                "zero_filled",
                "--batch-sizes",
                "2",
                "--steps",
                "2",
                "--threads",
                "1",
                "--load",
                "0",
                "1",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("dev"))
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    # one row idle and one beside a busy process, both at one torch thread
    assert [row[:7] for row in rows] == [
        ["cpu", "builtin", "zero_filled", "fp32", "1", "0", "2"],
        ["cpu", "builtin", "zero_filled", "fp32", "1", "1", "2"],
    ]
    assert all(float(row[7]) > 0 and row[-1].endswith("x") for row in rows)
    assert torch.get_num_threads() == threads  # restored


def test_bench_reports_the_ssim_change_of_other_precisions(capsys):
    args = ["bench", "--device", "cpu", "--sizes", "builtin", "--reconstructors", "unet",
            "--batch-sizes", "1", "--steps", "1", "--precisions", "fp32", "bf16-cl",
            "--no-reference"]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("dev"))
    plain, other = lines[header + 1], lines[header + 2]
    assert plain.split()[3] == "fp32" and "dSSIM" not in plain
    assert other.split()[3] == "bf16-cl"
    change = float(other.split("dSSIM")[1])
    assert 0.0 <= change <= 2e-3  # the U-Net's SSIM hardly moves (0 where bf16 is emulated)
