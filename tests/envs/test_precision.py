"""bf16 and channels-last reconstructor paths of the env (CPU here, CUDA when present)."""

from __future__ import annotations

import numpy as np
import torch

from activemri.data import make_builtin
from activemri.envs import ActiveMRIVectorEnv
from activemri.recon_models import load_default
from activemri.recon_models.base import native_bf16


def _final_ssims(data, **options):
    venv = ActiveMRIVectorEnv(
        8,
        {"data": str(data), "split": None, "order": "sequential", "scenario": "builtin-4x"},
        reconstructor=load_default(),
        device="cpu",
        domain_check=False,
        **options,
    )
    venv.torch_reset(seed=0)
    for line in (40, 88, 30, 98, 20, 108):  # the same lines everywhere
        actions = torch.full((8,), line, dtype=torch.long)
        _, _, _, _, info = venv.torch_step(actions)
    return venv, info["ssim"].numpy()


def test_bf16_and_channels_last_keep_ssim_within_1e3_of_float32(tmp_path):
    """The shipped U-Net on built-in brain/abdomen/knee slices, six steps into an episode."""
    data = tmp_path / "builtin"
    make_builtin(data, "default", seed=5, num_volumes=4, slices_per_volume=2)
    _, plain = _final_ssims(data)
    layout, last = _final_ssims(data, channels_last=True)
    assert layout.core.channels_last
    np.testing.assert_allclose(last, plain, atol=1e-5)  # a layout, not a precision, change
    venv, low = _final_ssims(data, bf16=True)
    assert venv.core.bf16 == native_bf16(torch.device("cpu"))  # ignored where emulated
    change = np.abs(low - plain)
    assert change.mean() <= 1e-3 and change.max() <= 2e-3, change
    if not venv.core.bf16:
        np.testing.assert_array_equal(low, plain)
