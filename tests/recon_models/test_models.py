from __future__ import annotations

import numpy as np
import pytest
import torch
from recon_helpers import make_model

from activemri.kspace import fft2c, rss
from activemri.metrics import ssim
from activemri.recon_models import UnetReconstructor, VarNetReconstructor, ZeroFilled
from activemri.recon_models.losses import gaussian_nll
from activemri.recon_models.varnet import VarNetBlock

NAMES = ["zero_filled", "tv", "unet", "varnet"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("b", "c", "h", "w"), [(1, 1, 37, 31), (3, 1, 24, 22), (2, 4, 25, 27)])
def test_shape_contract(name, b, c, h, w, batch_factory, device):
    model = make_model(name, recon_size=(20, 18)).to(device).eval()
    k, mask = batch_factory(b, c, h, w)
    with torch.no_grad():
        out = model(k.to(device), mask.to(device), num_low_frequencies=4)
    assert out.image.shape == (b, 20, 18) and out.image.dtype == torch.float32
    assert out.image.device.type == device.type
    assert torch.isfinite(out.image).all()
    assert out.uncertainty is None


@pytest.mark.parametrize("name", ["unet", "varnet"])
def test_uncertainty_is_positive_and_image_shaped(name, batch_factory):
    model = make_model(name, uncertainty=True).eval()
    assert model.has_uncertainty
    k, mask = batch_factory(2, 1, 24, 22)
    out = model(k, mask, num_low_frequencies=4)
    assert out.uncertainty is not None and out.uncertainty.shape == out.image.shape
    assert (out.uncertainty > 0).all()


def test_eval_mode_is_deterministic(batch_factory):
    model = UnetReconstructor((20, 18), chans=4, num_pool_layers=2, drop_prob=0.5).eval()
    k, mask = batch_factory(2, 1, 24, 22)
    assert torch.equal(model(k, mask).image, model(k, mask).image)
    model.train()
    assert not torch.equal(model(k, mask).image, model(k, mask).image)


def test_input_errors(batch_factory):
    k, mask = batch_factory(2, 1, 24, 22)
    model = make_model("unet")
    with pytest.raises(ValueError, match="mask must be bool"):
        model(k, mask[:, :-1])
    with pytest.raises(ValueError, match="complex"):
        model(k.real, mask)
    with pytest.raises(ValueError, match="smaller than the recon size"):
        UnetReconstructor((30, 30), chans=4, num_pool_layers=2)(k, mask)
    with pytest.raises(ValueError, match="num_low_frequencies is required"):
        make_model("varnet")(k, mask)
    with pytest.raises(ValueError, match="num_low_frequencies"):
        make_model("varnet")(k, mask, num_low_frequencies=torch.tensor([4, 4, 4]))


def test_varnet_dc_residual_shrinks_as_dc_weight_grows(batch_factory):
    class Zero(torch.nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    block = VarNetBlock(Zero())
    k0, mask = batch_factory(2, 3, 16, 12, seed=1)
    current, _ = batch_factory(2, 3, 16, 12, seed=2)
    acquired = mask[:, None, None, :].expand_as(k0)
    sens = torch.ones(2, 3, 16, 12, dtype=torch.complex64) / np.sqrt(3)
    residuals = []
    for weight in (0.0, 0.5, 0.9, 1.0):
        block.dc_weight.data.fill_(weight)
        out = block(current, k0, mask, sens)
        residuals.append((out - k0)[acquired].abs().max().item())
        assert torch.allclose(out[~acquired], current[~acquired])
    assert residuals[0] > residuals[1] > residuals[2] > residuals[3]
    assert residuals[3] < 1e-6


def test_varnet_uses_explicit_acs_count(batch_factory):
    model = make_model("varnet").eval()
    k, mask = batch_factory(1, 2, 24, 22)
    mask[:, :] = False
    mask[:, 8:14] = True  # a contiguous center of 6 lines
    a = model(k, mask, num_low_frequencies=2).image
    b = model(k, mask, num_low_frequencies=6).image
    assert not torch.allclose(a, b)  # the ACS size is taken as given, not inferred


def test_tv_beats_zero_filled_on_piecewise_constant_image():
    h = w = 48
    img = torch.zeros(h, w)
    img[10:30, 12:40] = 1.0
    img[20:44, 6:20] = 0.5
    phase = torch.exp(1j * torch.linspace(0, 1, w))[None, :]
    k = fft2c((img * phase).to(torch.complex64))[None, None]
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(np.isin(np.arange(w), rng.choice(w, 16, replace=False)))
    mask[w // 2 - 3 : w // 2 + 3] = True
    mask = mask[None]
    from activemri.recon_models import TVReconstructor

    tv = TVReconstructor((h, w), lam=0.02, iterations=150)(k, mask).image
    zf = ZeroFilled((h, w))(k, mask).image
    assert ssim(tv, img[None], 1.0) > ssim(zf, img[None], 1.0) + 0.05


def test_multicoil_tv_with_estimated_maps(batch_factory):
    from activemri.recon_models import TVReconstructor

    k, mask = batch_factory(2, 4, 24, 22)
    out = TVReconstructor((20, 18), iterations=5)(k, mask, num_low_frequencies=4)
    assert out.image.shape == (2, 20, 18)
    with pytest.raises(ValueError, match="num_low_frequencies"):
        TVReconstructor((20, 18), iterations=5)(k, mask)


def test_nll_training_lowers_nll(batch_factory):
    torch.manual_seed(0)
    model = UnetReconstructor((20, 18), chans=4, num_pool_layers=2, uncertainty=True)
    k, mask = batch_factory(4, 1, 24, 22)
    target = rss(torch.fft.ifft2(k), dim=1)[:, 2:22, 2:20].abs().float()
    dr = target.flatten(1).amax(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def nll() -> torch.Tensor:
        out = model(k, mask)
        return gaussian_nll(out.image, out.uncertainty, target, dr)

    before = nll().item()
    for _ in range(30):
        opt.zero_grad()
        nll().backward()
        opt.step()
    assert nll().item() < before - 0.1


def test_varnet_single_and_multicoil_forward_kspace(batch_factory):
    model = VarNetReconstructor(
        (20, 18), num_cascades=1, sens_chans=4, sens_pools=2, chans=4, pools=2
    )
    for coils in (1, 3):
        k, mask = batch_factory(2, coils, 24, 22)
        pred = model.forward_kspace(k, mask, num_low_frequencies=4)
        assert pred.shape == k.shape and pred.is_complex()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("coils", [1, 3])
def test_output_does_not_depend_on_unacquired_kspace(name, coils, batch_factory):
    model = make_model(name, uncertainty=name in ("unet", "varnet")).eval()
    k, mask = batch_factory(2, coils, 24, 22)
    mask[:, 10] = False  # the ACS block is not fully acquired: estimators must not peek
    perturbed = k.clone()
    perturbed[..., ~mask[0]] = 0  # differs from k only where sample 0 acquired nothing
    perturbed[1] = k[1]
    with torch.no_grad():
        a = model(k, mask, num_low_frequencies=4)
        b = model(perturbed, mask, num_low_frequencies=4)
    assert torch.equal(a.image[0], b.image[0])
    if a.uncertainty is not None:
        assert torch.equal(a.uncertainty[0], b.uncertainty[0])
