from __future__ import annotations

import numpy as np
import pytest
import torch

from activemri.kspace import (
    apply_mask,
    center_crop,
    fft2c,
    ifft2c,
    rss,
    sens_expand,
    sens_reduce,
    zero_filled,
)

SHAPES = [(37, 31), (40, 32), (31, 40)]
DTYPES = [torch.complex64, torch.complex128]


def _tol(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.complex64 else 1e-11


def _randn(shape, dtype, device, gen):
    return torch.randn(shape, dtype=dtype, generator=gen).to(device)


def _mask(b: int, w: int, gen: torch.Generator, device) -> torch.Tensor:
    m = torch.rand(b, w, generator=gen) < 0.4
    m[:, w // 2] = True
    return m.to(device)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fft2c_matches_numpy_centered_ortho(shape, dtype, device, gen):
    x = _randn((2, 3, *shape), dtype, device, gen)
    expected = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(x.cpu().numpy(), axes=(-2, -1)), norm="ortho"),
        axes=(-2, -1),
    )
    got = fft2c(x)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got.cpu().numpy(), expected, atol=_tol(dtype) * 10)
    inv_expected = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(x.cpu().numpy(), axes=(-2, -1)), norm="ortho"),
        axes=(-2, -1),
    )
    np.testing.assert_allclose(ifft2c(x).cpu().numpy(), inv_expected, atol=_tol(dtype) * 10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fft2c_is_unitary(shape, dtype, device, gen):
    x = _randn((4, *shape), dtype, device, gen)
    k = fft2c(x)
    norms = torch.linalg.vector_norm(x, dim=(-2, -1))
    assert torch.allclose(torch.linalg.vector_norm(k, dim=(-2, -1)), norms, rtol=_tol(dtype))
    assert torch.allclose(ifft2c(k), x, atol=_tol(dtype) * 10)
    assert torch.allclose(fft2c(ifft2c(x)), x, atol=_tol(dtype) * 10)


def test_fft2c_centers_dc(device):
    for h, w in SHAPES:
        x = torch.ones(h, w, dtype=torch.complex64, device=device)
        k = fft2c(x).abs()
        assert k.argmax().item() == (h // 2) * w + w // 2


def test_fft2c_rejects_real_input():
    with pytest.raises(TypeError, match="complex"):
        fft2c(torch.zeros(4, 4))


def _forward(x, mask):
    return apply_mask(fft2c(x), mask)


def _adjoint(y, mask):
    return ifft2c(apply_mask(y, mask))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_operator_adjoint(shape, dtype, device, gen):
    b, c = 3, 2
    x = _randn((b, c, *shape), dtype, device, gen)
    y = _randn((b, c, *shape), dtype, device, gen)
    mask = _mask(b, shape[1], gen, device)
    ax = _forward(x, mask)
    ahy = _adjoint(y, mask)
    assert ax.shape == y.shape == (b, c, *shape)
    assert ahy.shape == x.shape
    lhs = torch.vdot(ax.flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), ahy.flatten())
    assert abs(lhs - rhs) <= _tol(dtype) * 10 * abs(lhs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_autograd_vjp_of_masked_operator_is_adjoint(dtype, device, gen):
    shape = (1, 2, 37, 31)
    x = _randn(shape, dtype, device, gen).requires_grad_(True)
    v = _randn(shape, dtype, device, gen)
    mask = _mask(1, 31, gen, device)
    (vjp,) = torch.autograd.grad(_forward(x, mask), x, grad_outputs=v)
    assert torch.allclose(vjp, _adjoint(v, mask), atol=_tol(dtype) * 10)


def test_apply_mask_zeros_are_positive_and_nothing_leaks(device):
    k = torch.complex(-torch.ones(2, 3, 5, 7), -torch.ones(2, 3, 5, 7)).to(device)
    k[0, :, :, 1] = complex(float("nan"), float("-inf"))
    mask = torch.zeros(2, 7, dtype=torch.bool, device=device)
    mask[:, 3] = True
    out = apply_mask(k, mask)
    unacquired = out[..., ~mask[0]]
    assert torch.all(unacquired == 0)
    assert not torch.signbit(unacquired.real).any()
    assert not torch.signbit(unacquired.imag).any()
    assert torch.equal(out[..., 3], k[..., 3])


def test_apply_mask_shared_mask_and_errors(gen):
    k = torch.randn(2, 1, 4, 6, dtype=torch.complex64, generator=gen)
    mask = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(apply_mask(k, mask), apply_mask(k, mask.expand(2, 6)))
    with pytest.raises(ValueError, match="mask must have shape"):
        apply_mask(k, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        apply_mask(k, torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        apply_mask(k[0], mask)


@pytest.mark.parametrize(("size", "crop"), [((37, 31), (20, 20)), ((40, 32), (21, 17))])
def test_center_crop_matches_fastmri_convention(size, crop):
    x = torch.arange(size[0] * size[1]).reshape(size)
    out = center_crop(x, crop)
    top, left = (size[0] - crop[0]) // 2, (size[1] - crop[1]) // 2
    assert torch.equal(out, x[top : top + crop[0], left : left + crop[1]])
    with pytest.raises(ValueError):
        center_crop(x, (size[0] + 1, 4))


def test_rss_and_zero_filled_single_and_multicoil(device, gen):
    img = _randn((2, 1, 37, 31), torch.complex64, device, gen)
    full = torch.ones(2, 31, dtype=torch.bool, device=device)
    zf = zero_filled(fft2c(img), full, (20, 18))
    assert zf.shape == (2, 20, 18) and zf.dtype == torch.float32
    assert torch.allclose(zf, center_crop(img[:, 0].abs(), (20, 18)), atol=1e-5)
    coils = _randn((2, 4, 37, 31), torch.complex64, device, gen)
    expected = torch.sqrt((coils.abs() ** 2).sum(1))
    assert torch.allclose(rss(coils), expected, atol=1e-5)
    assert torch.allclose(zero_filled(fft2c(coils), full, (37, 31)), expected, atol=1e-4)


def test_sens_operators_adjoint_and_reconstruction(device, gen):
    b, c, h, w = 2, 4, 33, 28
    maps = _randn((b, c, h, w), torch.complex128, device, gen)
    maps = maps / rss(maps, dim=1).unsqueeze(1)  # sum_c |S_c|^2 = 1
    x = _randn((b, h, w), torch.complex128, device, gen)
    y = _randn((b, c, h, w), torch.complex128, device, gen)
    lhs = torch.vdot(sens_expand(x, maps).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), sens_reduce(y, maps).flatten())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    assert torch.allclose(sens_reduce(sens_expand(x, maps), maps), x, atol=1e-10)
    full = torch.ones(b, w, dtype=torch.bool, device=device)
    zf = zero_filled(sens_expand(x, maps), full, (h, w), sens_maps=maps)
    assert torch.allclose(zf, x.abs(), atol=1e-10)
