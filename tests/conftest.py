"""Shared fixtures: devices, seeded generators and a session-scoped tiny built-in data set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from activemri.data import make_builtin

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every test that takes ``device`` runs on the CPU and, when present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in ``tiny`` preset (single-coil, padded edge columns)."""
    out = tmp_path_factory.mktemp("tiny")
    make_builtin(out, "tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_multicoil(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in ``tiny`` preset with 4 coils."""
    out = tmp_path_factory.mktemp("tiny_mc")
    make_builtin(out, "tiny", seed=0, num_coils=4, num_volumes=3)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` where CUDA is absent (CI); they run on GPU machines."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def batch_factory():
    """``(b, c, h, w, seed=0) -> (kspace, mask)``: random complex k-space and a mask with ACS."""
    from recon_helpers import kspace_batch

    return kspace_batch
