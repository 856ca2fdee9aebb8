from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from activemri.data import SliceDataset
from activemri.metrics import (
    metric_targets,
    metrics_against,
    mse,
    nmse,
    psnr,
    ssim,
    ssim_against,
    ssim_targets,
)


def _skimage_ssim(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    # fastMRI's evaluation: window 7, the given data range, skimage's defaults otherwise.
    return structural_similarity(target, pred, win_size=7, data_range=data_range)


def _pairs(kind: str, shape: tuple[int, int], scale: float, rng: np.random.Generator):
    b = 4
    if kind == "random":
        target = rng.random((b, *shape)) * scale
        pred = target + rng.normal(0, 0.1 * scale, (b, *shape))
    else:  # smooth structure with edges plus noise, offset from zero
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        base = (np.sin(xx / 3.0) * np.cos(yy / 5.0) > 0.2).astype(float) + 0.5 + yy / shape[0]
        target = np.stack([base * (1 + 0.1 * i) for i in range(b)]) * scale
        pred = target + rng.normal(0, 0.05 * scale, target.shape)
    return pred, target


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("shape", [(37, 31), (64, 64), (8, 9)])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 255.0])
def test_ssim_matches_skimage(kind, shape, scale, device):
    rng = np.random.default_rng(0)
    pred, target = _pairs(kind, shape, scale, rng)
    ranges = target.reshape(len(target), -1).max(axis=1) * rng.uniform(1.0, 1.5, len(target))
    expected = [_skimage_ssim(p, t, r) for p, t, r in zip(pred, target, ranges, strict=True)]
    got = ssim(
        torch.tensor(pred, dtype=torch.float32, device=device),
        torch.tensor(target, dtype=torch.float32, device=device),
        torch.tensor(ranges, dtype=torch.float32, device=device),
    )
    assert got.shape == (len(pred),) and got.device.type == device.type
    np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-4, rtol=0)


def test_ssim_on_builtin_targets_matches_skimage(tiny_data):
    ds = SliceDataset(tiny_data)
    target = torch.stack([ds[i].target for i in range(4)])
    pred = target.flip(-1)
    dr = ds[0].meta.max_value
    got = ssim(pred, target, dr)
    expected = [_skimage_ssim(p.numpy(), t.numpy(), dr) for p, t in zip(pred, target, strict=True)]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, rtol=0)


def test_ssim_batched_equals_per_image_and_identity_is_one(device):
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(6, 40, 33, generator=gen).to(device)
    pred = (target + 0.2 * torch.rand(6, 40, 33, generator=gen).to(device)).clamp(min=0)
    dr = torch.linspace(1.0, 2.0, 6, device=device)
    batched = ssim(pred, target, dr)
    single = torch.cat([ssim(pred[i : i + 1], target[i : i + 1], dr[i : i + 1]) for i in range(6)])
    assert torch.allclose(batched, single, atol=1e-6)
    assert torch.allclose(ssim(target, target, dr), torch.ones(6, device=device), atol=1e-6)
    assert (batched < 0.99).all()


def test_ssim_default_data_range_is_target_max():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(3, 20, 20, generator=gen) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    pred = target * 0.9
    dr = target.reshape(3, -1).amax(1)
    assert torch.allclose(ssim(pred, target), ssim(pred, target, dr))
    assert torch.allclose(psnr(pred, target), psnr(pred, target, dr))


def test_ssim_large_batch_chunks_agree():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(9, 200, 180, generator=gen)
    pred = target + 0.1 * torch.rand(9, 200, 180, generator=gen)
    whole = ssim(pred, target, 1.2)
    parts = torch.cat([ssim(pred[i : i + 1], target[i : i + 1], 1.2) for i in range(9)])
    assert torch.allclose(whole, parts, atol=1e-6)


def test_ssim_is_differentiable():
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(2, 16, 16, generator=gen)
    pred = torch.rand(2, 16, 16, generator=gen, requires_grad=True)
    (1 - ssim(pred, target, 1.0)).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [1e-4, 1.0])
def test_psnr_nmse_mse_match_reference(scale, device):
    rng = np.random.default_rng(5)
    target = rng.random((3, 37, 31)) * scale
    pred = target + rng.normal(0, 0.05 * scale, target.shape)
    ranges = target.reshape(3, -1).max(1)
    t = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    got_psnr = psnr(t(pred), t(target), t(ranges)).cpu().numpy()
    expected_psnr = [
        peak_signal_noise_ratio(tt, pp, data_range=r)
        for pp, tt, r in zip(pred, target, ranges, strict=True)
    ]
    np.testing.assert_allclose(got_psnr, expected_psnr, atol=1e-3)
    expected_nmse = [
        np.linalg.norm(tt - pp) ** 2 / np.linalg.norm(tt) ** 2
        for pp, tt in zip(pred, target, strict=True)
    ]
    np.testing.assert_allclose(nmse(t(pred), t(target)).cpu().numpy(), expected_nmse, rtol=1e-4)
    expected_mse = ((pred - target) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(mse(t(pred), t(target)).cpu().numpy(), expected_mse, rtol=1e-4)


def test_psnr_of_identical_images_is_inf():
    x = torch.rand(2, 8, 8)
    assert torch.isinf(psnr(x, x, 1.0)).all()


def test_metric_input_errors():
    x = torch.rand(2, 16, 16)
    with pytest.raises(ValueError, match="shape"):
        ssim(x, x[:1])
    with pytest.raises(ValueError, match="shape"):
        nmse(x[0], x[0])
    with pytest.raises(ValueError, match="window"):
        ssim(x[:, :5, :5], x[:, :5, :5])
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, torch.ones(3))
    with pytest.raises(TypeError, match="complex"):
        psnr(x.to(torch.complex64), x.to(torch.complex64))


@pytest.mark.gpu
def test_ssim_on_cuda_never_synchronizes_with_host():
    gen = torch.Generator().manual_seed(4)
    target = torch.rand(8, 64, 64, generator=gen).cuda()
    pred = target + 0.1
    dr = torch.ones(8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = ssim(pred, target, dr)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.shape == (8,) and out.is_cuda


def test_ssim_against_precomputed_targets_equals_ssim() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.rand(3, 24, 20, generator=gen) * 5
    preds = targets[[0, 0, 2, 1, 2]] + 0.3 * torch.rand(5, 24, 20, generator=gen)
    rows = torch.tensor([0, 0, 2, 1, 2])
    data_range = torch.tensor([5.0, 4.0, 6.0])
    expected = ssim(preds, targets[rows], data_range[rows])
    stats = ssim_targets(targets, data_range)
    torch.testing.assert_close(ssim_against(preds, stats, rows), expected)
    torch.testing.assert_close(ssim_against(preds[:2], stats, 0), expected[:2])  # one target
    with pytest.raises(ValueError, match="rows must have shape"):
        ssim_against(preds, stats, rows[:2])
    pred = preds[:3].clone().requires_grad_(True)
    ssim_against(pred, ssim_targets(targets, data_range)).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("shape", [(37, 31), (128, 128)])
def test_fused_metrics_match_skimage_and_fastmri_in_float64(shape, device) -> None:
    rng = np.random.default_rng(3)
    pred, target = _pairs("structured", shape, 1.0, rng)
    ranges = target.reshape(len(target), -1).max(axis=1)
    got = metrics_against(
        torch.tensor(pred, device=device),  # float64: the working dtype follows the inputs
        metric_targets(torch.tensor(target, device=device), torch.tensor(ranges, device=device)),
    )
    assert list(got) == ["ssim", "psnr", "nmse", "mse"]
    for i, (p, t, r) in enumerate(zip(pred, target, ranges, strict=True)):
        # fastMRI's evaluate.py: skimage SSIM/PSNR with the volume max, NMSE by norms
        assert float(got["ssim"][i]) == pytest.approx(_skimage_ssim(p, t, r), abs=1e-6)
        psnr_ref = peak_signal_noise_ratio(t, p, data_range=r)
        assert float(got["psnr"][i]) == pytest.approx(psnr_ref, abs=1e-6)
        nmse_ref = np.linalg.norm(t - p) ** 2 / np.linalg.norm(t) ** 2
        assert float(got["nmse"][i]) == pytest.approx(nmse_ref, rel=1e-9)
        assert float(got["mse"][i]) == pytest.approx(np.mean((t - p) ** 2), rel=1e-9)


def test_fused_metrics_equal_the_separate_functions() -> None:
    gen = torch.Generator().manual_seed(1)
    targets = torch.rand(3, 40, 36, generator=gen) * 5
    rows = torch.tensor([0, 2, 2, 1, 0, 1, 2])
    preds = targets[rows] + 0.3 * torch.rand(7, 40, 36, generator=gen)
    data_range = torch.tensor([5.0, 4.0, 6.0])
    stats = metric_targets(targets, data_range)
    got = metrics_against(preds, stats, rows)
    t, dr = targets[rows], data_range[rows]
    torch.testing.assert_close(got["ssim"], ssim(preds, t, dr))
    torch.testing.assert_close(got["psnr"], psnr(preds, t, dr))
    torch.testing.assert_close(got["nmse"], nmse(preds, t))
    torch.testing.assert_close(got["mse"], mse(preds, t))
    one = metrics_against(preds[:2], stats, 0, names=("mse", "ssim"))
    assert list(one) == ["mse", "ssim"]
    torch.testing.assert_close(one["mse"], mse(preds[:2], targets[[0, 0]]))
    whole = metrics_against(targets, stats)  # identity: SSIM 1, no error
    torch.testing.assert_close(whole["ssim"], torch.ones(3))
    assert torch.equal(whole["mse"], torch.zeros(3)) and torch.isinf(whole["psnr"]).all()
    with pytest.raises(ValueError, match="names must be"):
        metrics_against(preds, stats, rows, names=("ssim", "lpips"))
    with pytest.raises(ValueError, match="images must be"):
        metrics_against(preds[:, :5], stats, rows)
