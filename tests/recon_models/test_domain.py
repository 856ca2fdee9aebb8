"""The domain guard: recon check, cached checks in the env, warnings, results.json records."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from activemri.cli import main
from activemri.data import SliceDataset
from activemri.kspace import center_crop, ifft2c, rss
from activemri.recon_models import Reconstructor, UnetReconstructor
from activemri.recon_models import domain as domain_module
from activemri.recon_models.base import ReconOutput
from activemri.recon_models.domain import (
    DomainWarning,
    check_domain,
    guarded_domain_check,
    in_training_domain,
)


class _Blank(Reconstructor):
    """Returns zeros: always worse than zero-filled."""

    def __init__(self, recon_size) -> None:
        super().__init__(recon_size)
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, kspace, mask, **aux):
        return ReconOutput(torch.zeros(kspace.shape[0], *self.recon_size) + self.weight)


class _Oracle(_Blank):
    """Returns the target (reads the full k-space, as only a test double may)."""

    def forward(self, kspace, mask, **aux):
        return ReconOutput(center_crop(rss(ifft2c(kspace), dim=1), self.recon_size).float())


def test_check_says_which_model_helps(tiny_data):
    ds = SliceDataset(tiny_data)
    bad = check_domain(_Blank((32, 32)), ds, num_slices=6)
    good = check_domain(_Oracle((32, 32)), ds, num_slices=6)
    assert not bad.helps and good.helps
    assert bad.num_slices == 6 and set(bad.ssim) == {"4x", "8x"}
    assert bad.ssim_zero_filled == good.ssim_zero_filled  # same slices, same masks
    assert all(v == 1.0 for v in good.wins.values()) and all(v == 0 for v in bad.wins.values())
    assert "NOT better" in bad.summary()


def test_guard_caches_warns_and_skips_what_needs_no_check(tiny_data, tmp_path, monkeypatch):
    ds = SliceDataset(tiny_data)
    calls = []
    real = domain_module.check_domain
    monkeypatch.setattr(domain_module, "check_domain",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    model = _Blank((32, 32))
    with pytest.warns(DomainWarning, match="NOT better than zero-filled"):
        first = guarded_domain_check(model, ds, data=str(tiny_data), cache_dir=tmp_path)
    with pytest.warns(DomainWarning):
        second = guarded_domain_check(model, ds, data=str(tiny_data), cache_dir=tmp_path)
    assert len(calls) == 1 and not first["cached"] and second["cached"]
    assert second["ssim"] == first["ssim"]
    # Another model (other weights) is checked anew.
    other = _Blank((32, 32))
    with torch.no_grad():
        other.weight.fill_(1e-9)
    with pytest.warns(DomainWarning):
        guarded_domain_check(other, ds, data=str(tiny_data), cache_dir=tmp_path)
    assert len(calls) == 2
    # A model without parameters, or on its own training data, is not checked.
    from activemri.recon_models import ZeroFilled

    assert guarded_domain_check(ZeroFilled((32, 32)), ds, data="x", cache_dir=tmp_path) is None
    model.training_domain = {"data": str(tiny_data)}
    assert in_training_domain(model, str(tiny_data), tiny_data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert guarded_domain_check(model, ds, data=str(tiny_data), cache_dir=tmp_path) is None
    model.training_domain = {"data": "builtin:default"}
    assert in_training_domain(model, "builtin:default", tiny_data)
    assert not in_training_domain(model, "builtin:tiny", tiny_data)


def test_recon_check_cli_exit_status(tiny_data, tmp_path, capsys):
    torch.manual_seed(0)
    model = UnetReconstructor((32, 32), chans=4, num_pool_layers=2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)  # an untrained, badly scaled network: far worse than zero-filled
    model.save(tmp_path / "bad.pt")
    out = tmp_path / "check.json"
    code = main(["recon", "check", "--checkpoint", str(tmp_path / "bad.pt"), "--data",
                 str(tiny_data), "--slices", "6", "--json", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 1
    assert "NOT better than zero-filled" in text and "not recorded" in text
    doc = json.loads(out.read_text())
    assert doc["helps"] is False and doc["num_slices"] == 6
    zf = main(["recon", "check", "--preset", "zero_filled", "--data", str(tiny_data)])
    assert zf == 2  # a preset by name, of another size: a clear error, not a traceback
    assert "outputs (128, 128) images" in capsys.readouterr().err


def test_env_runs_the_guard_and_evaluate_records_it(tiny_data, tmp_path, monkeypatch):
    import gymnasium as gym

    import activemri  # noqa: F401  (registers the ids)

    monkeypatch.setenv("ACTIVEMRI_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = UnetReconstructor((32, 32), chans=4, num_pool_layers=2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)
    with pytest.warns(DomainWarning):
        env = gym.make("ActiveMRI/Builtin-v0", data_root=str(tiny_data), reconstructor=model,
                       device="cpu", cache_slices=False)  # fmt: skip
    check = env.unwrapped.domain_check
    assert check is not None and check["helps"] is False
    env.close()
    quiet = gym.make("ActiveMRI/Builtin-v0", data_root=str(tiny_data), reconstructor=model,
                     device="cpu", domain_check=False)  # fmt: skip
    assert quiet.unwrapped.domain_check is None
    quiet.close()
