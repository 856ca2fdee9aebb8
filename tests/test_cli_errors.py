"""The CLI's failure contract: one line on stderr, exit 2 for bad input, 1 for unusable data,
3 for a bug, and the traceback only with ``--debug``."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from activemri.cli import describe_failure, main
from activemri.data import CorruptSliceError, make_builtin

ZERO_FILLED = str(Path(__file__).parents[1] / "recon_models" / "zero_filled.yaml")


def _fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert err.startswith("activemri: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_yaml_with_python_tag_is_refused_in_one_line(tmp_path, tiny_data, capsys):
    marker = tmp_path / "ran"
    preset = tmp_path / "evil.yaml"
    preset.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    err = _fails_in_one_line(
        ["recon", "eval", "--preset", str(preset), "--data", str(tiny_data), "--split", "all"],
        capsys,
    )
    assert "evil.yaml:1" in err and "not valid YAML" in err
    assert not marker.exists()


def test_non_reconstructor_class_and_bad_scenario_are_one_line(tmp_path, tiny_data, capsys):
    preset = tmp_path / "cls.yaml"
    preset.write_text("model: collections:OrderedDict\n")
    err = _fails_in_one_line(
        ["recon", "eval", "--preset", str(preset), "--data", str(tiny_data), "--split", "all"],
        capsys,
    )
    assert "not a subclass" in err
    err = _fails_in_one_line(
        ["evaluate", "--policies", "random", "--out", str(tmp_path / "e"), "--no-plots",
         "--quiet", "--set", f"data_root={tiny_data}", "--set", "scenario=5"],
        capsys,
    )  # fmt: skip
    assert "a scenario is a name" in err


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_invalid_accelerations_are_refused_at_parsing(value, tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["recon", "eval", "--preset", ZERO_FILLED, "--data", str(tiny_data),
              "--acceleration", value])  # fmt: skip
    assert exc.value.code == 2
    assert "--acceleration" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--policies", "random", "--out", str(tmp_path), "--accelerations",
              "4", value])  # fmt: skip


def test_data_make_bad_seed_and_bad_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "make", "--preset", "tiny", "--out", str(tmp_path / "d"), "--seed", "-1"])
    assert exc.value.code == 2
    assert "--seed" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    err = _fails_in_one_line(["data", "make", "--preset", "tiny", "--out", str(a_file),
                              "--quiet"], capsys)  # fmt: skip
    assert "is a file" in err
    blocked = a_file / "sub"  # a folder under a file cannot be created
    err = _fails_in_one_line(["data", "make", "--preset", "tiny", "--out", str(blocked),
                              "--quiet"], capsys)  # fmt: skip
    assert str(blocked) in err or str(a_file) in err


def test_data_make_refuses_a_folder_of_another_data_set(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "make", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    assert len(before) == 6
    err = _fails_in_one_line(["data", "make", "--preset", "tiny", "--out", str(out), "--seed",
                              "1", "--volumes", "3", "--quiet"], capsys)  # fmt: skip
    assert "6 h5 file(s)" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == before  # nothing lost
    assert main(["data", "make", "--preset", "tiny", "--out", str(out), "--seed", "1",
                 "--volumes", "3", "--quiet", "--overwrite"]) == 0  # fmt: skip
    assert "removed 6" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.h5")) == [f"vol0000{i}.h5" for i in range(3)]
    with h5py.File(out / "vol00000.h5") as hf:
        assert '"seed": 1' in str(hf.attrs["activemri_builtin"])
    # The same command again resumes: every volume is kept.
    assert main(["data", "make", "--preset", "tiny", "--out", str(out), "--seed", "1",
                 "--volumes", "3", "--quiet"]) == 0  # fmt: skip
    assert "kept 3" in capsys.readouterr().out


def test_recon_train_refuses_to_replace_a_run(tmp_path, tiny_data, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text(
        "model: unet\nconfig: {recon_size: [32, 32], chans: 4, num_pool_layers: 2}\n"
        "train: {epochs: 2, batch_size: 4, max_val_slices: 2, val_accelerations: [4]}\n"
    )
    out = tmp_path / "run"
    args = ["recon", "train", "--preset", str(preset), "--data", str(tiny_data), "--out",
            str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    model = (out / "model.pt").read_bytes()
    err = _fails_in_one_line([*args, "--epochs", "1"], capsys)
    assert "already holds a run" in err and "--resume" in err
    assert (out / "model.pt").read_bytes() == model
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert main([*args, "--epochs", "1", "--overwrite"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 1


def test_train_setting_of_the_wrong_type_is_one_line(tmp_path, tiny_data, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: unet\nconfig: {recon_size: [32, 32], chans: 4}\n"
                      'train: {epochs: "two"}\n')  # fmt: skip
    err = _fails_in_one_line(["recon", "train", "--preset", str(preset), "--data",
                              str(tiny_data), "--out", str(tmp_path / "o"), "--quiet"],
                             capsys)  # fmt: skip
    assert "p.yaml: train.epochs must be int" in err and "two" in err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


def test_data_problems_exit_1_and_bugs_exit_3():
    assert describe_failure(CorruptSliceError("f.h5 slice 0: k-space has NaN"))[0] == 1
    assert describe_failure(FloatingPointError("non-finite reward"))[0] == 2
    assert describe_failure(FileNotFoundError(2, "No such file or directory", "x.pt")) == (
        2,
        "x.pt: No such file or directory",
    )
    status, message = describe_failure(ZeroDivisionError("float division by zero"))
    assert status == 3 and "--debug" in message and "ZeroDivisionError" in message


def test_unusable_data_is_exit_1(tmp_path, capsys):
    make_builtin(tmp_path, "tiny", seed=0, num_volumes=2)
    for path in tmp_path.glob("*.h5"):
        with h5py.File(path, "r+") as hf:
            hf["kspace"][...] = np.nan
    err = _fails_in_one_line(
        ["evaluate", "--policies", "random", "--out", str(tmp_path / "e"), "--no-plots",
         "--quiet", "--split", "all", "--accelerations", "4", "--set", f"data_root={tmp_path}",
         "--set", "reconstructor=zero_filled", "--set", "domain_check=false",
         "--set", "initial_lines=4"],
        capsys, status=1,
    )  # fmt: skip
    assert "unreadable" in err or "NaN" in err


def test_debug_shows_the_traceback_anywhere_on_the_line(tmp_path):
    preset = tmp_path / "cls.yaml"
    preset.write_text("model: collections:OrderedDict\n")
    with pytest.raises(Exception, match="not a subclass"):  # raised, not caught
        main(["recon", "eval", "--preset", str(preset), "--data", str(tmp_path), "--debug"])


def test_every_option_has_help():
    import argparse

    from activemri.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {action.option_strings or action.dest}")

    walk(build_parser(), "activemri")
    assert not missing


def test_help_texts_show_single_percent_signs(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in out and "%%" not in out


def test_unknown_env_ids_are_one_line(tmp_path, capsys):
    preset = tmp_path / "agent.yaml"
    preset.write_text("algorithm: ddqn\nenv: Foo/Bar-v0\n")
    err = _fails_in_one_line(["agent", "train", "--preset", str(preset), "--out",
                              str(tmp_path / "a"), "--quiet"], capsys)  # fmt: skip
    assert "Foo" in err
    err = _fails_in_one_line(["evaluate", "--policies", "random", "--presets", "Foo/Bar-v0",
                              "--out", str(tmp_path / "e"), "--quiet"], capsys)  # fmt: skip
    assert "ActiveMRI/Builtin-v0" in err  # the message lists what exists


def test_recon_size_mismatch_is_one_line(tmp_path, tiny_data, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: unet\nconfig: {recon_size: [64, 64], chans: 4, num_pool_layers: 2}\n"
                      "train: {epochs: 1, batch_size: 2}\n")  # fmt: skip
    for argv in (
        ["recon", "train", "--preset", str(preset), "--data", str(tiny_data), "--out",
         str(tmp_path / "o"), "--quiet"],
        ["recon", "eval", "--preset", str(preset), "--data", str(tiny_data), "--split", "all"],
    ):  # fmt: skip
        err = _fails_in_one_line(argv, capsys)
        assert "recon size (64, 64)" in err
