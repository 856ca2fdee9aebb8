"""Atomic writes keep the old file on failure and honour the umask; YAML never builds objects."""

from __future__ import annotations

import os
import stat

import pytest

from activemri._io import atomic_write, atomic_write_text, read_yaml


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_read_yaml_refuses_python_tags_naming_file_and_line(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "p.yaml"
    path.write_text(f'a: 1\nb: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ValueError, match=r"p\.yaml:2: not valid YAML"):
        read_yaml(path)
    assert not marker.exists()
    path.write_text("a: [1,\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        read_yaml(path)
    path.write_text("a: [1, 2]\n")
    assert read_yaml(path) == {"a": [1, 2]}
