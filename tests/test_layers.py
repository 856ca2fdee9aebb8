"""The package's structure: lazy imports, no import cycles, layers that only point down."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _code_stats() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "code_stats", ROOT / "benchmarks" / "code_stats.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_stats"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


stats = _code_stats()


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


HEAVY = ("gymnasium", "stable_baselines3", "sb3_contrib")


@pytest.mark.parametrize("module", ["activemri.kspace", "activemri.metrics", "activemri.masks",
                                    "activemri.data", "activemri"])  # fmt: skip
def test_low_layers_import_no_gymnasium_sb3_or_model(module: str) -> None:
    loaded = _run(
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(("
        "'gymnasium', 'stable_baselines3', 'sb3_contrib', 'activemri.recon_models', "
        "'activemri.agents', 'activemri.evaluation', 'activemri.envs.core', "
        "'activemri.envs.config')))))"
    )
    assert loaded == [], f"import {module} loaded {loaded}"


@pytest.mark.parametrize("first", ["activemri", "gymnasium"])
def test_ids_registered_whichever_is_imported_first(first: str) -> None:
    second = "gymnasium" if first == "activemri" else "activemri"
    registered = _run(
        f"import json; import {first}; import {second}; import gymnasium as gym; "
        "print(json.dumps(sorted(i for i in gym.registry if i.startswith('ActiveMRI/'))))"
    )
    from activemri.envs.registration import ENV_IDS

    assert registered == sorted(ENV_IDS)


def test_no_import_cycles() -> None:
    found = stats.cycles(stats.parse_package(ROOT / "activemri"))
    assert found == [], "import cycles (counting function-level imports):\n" + "\n".join(
        " <-> ".join(group) for group in found
    )


def test_no_upward_imports() -> None:
    upward = stats.upward_imports(stats.parse_package(ROOT / "activemri"))
    assert upward == [], "imports of a higher layer:\n" + "\n".join(upward)


def test_every_module_has_a_layer() -> None:
    modules = stats.parse_package(ROOT / "activemri")
    top = len(stats.LAYERS) - 1
    unplaced = [
        name
        for name in modules
        if stats.layer_of(name) == top
        and not any(name == p or name.startswith(p + ".") for p in stats.LAYERS[top][1])
    ]
    assert unplaced == []


def test_checker_sees_function_level_cycles_and_upward_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "activemri"
    (pkg / "envs").mkdir(parents=True)
    (pkg / "recon_models").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "envs" / "__init__.py").write_text("")
    (pkg / "recon_models" / "__init__.py").write_text("")
    (pkg / "recon_models" / "a.py").write_text("from activemri.recon_models import b\n")
    (pkg / "recon_models" / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from activemri.envs import core\n"
        "def f():\n    from activemri.recon_models.a import x\n"
    )
    (pkg / "envs" / "core.py").write_text("")
    (pkg / "kspace.py").write_text("def g():\n    import activemri.envs.core\n")
    modules = stats.parse_package(pkg)
    assert stats.cycles(modules) == [["activemri.recon_models.a", "activemri.recon_models.b"]]
    upward = stats.upward_imports(modules)
    assert len(upward) == 1 and upward[0].startswith("activemri.kspace:2 imports activemri.envs")
