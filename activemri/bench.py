"""``activemri bench``: env step time, its breakdown, the bare forward, and the reference ratio.

For each device, data size, reconstructor and batch size B, the vector env is reset and
stepped through its torch-native API with random valid actions; the reset of all B episodes
is timed too and amortized over the episode length, so a step's time is what an episode
costs per step. Each step is split into ``data`` (reading slices, initial masks),
``mask_fft`` (mask and observed k-space update, incremental zero-filled image), ``forward``
(the reconstructor), ``metric`` (SSIM, PSNR, NMSE, MSE) and ``other`` (observations, info,
bookkeeping). The *bare forward* is the reconstructor alone on the same batch, timed right
after each step; ``ratio`` is the in-episode step over it and ``ep_rat`` the step with resets
amortized (an episode of T steps runs T + 1 forwards, so ``ep_rat >= (T + 1) / T`` for a
network; zero-filled rows go below 1 because their step does less than the full-FFT bare
forward). ``peak_MB`` is the row's CUDA peak allocation on GPU; on CPU, the process's peak
resident memory so far (it never goes down from one row to the next). The reference is
:mod:`activemri.bench_reference` (per-image NumPy inverse FFT and scikit-image metrics,
the prior-art env step) on the same batch, when available.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from activemri._load import cpu_load
from activemri._threads import intra_op_threads
from activemri.agents.policies import RandomPolicy
from activemri.envs.vector import ActiveMRIVectorEnv
from activemri.recon_models.base import Reconstructor, bf16_autocast

__all__ = ["SIZES", "BenchResult", "bench_env", "load_reference", "run_bench"]

SIZES: dict[str, dict[str, Any]] = {
    "builtin": {"data": "builtin:default", "scenario": "builtin-4x", "unet": "default"},
    "knee": {"data": "builtin:knee", "scenario": "miccai-30l", "unet": "knee"},
}
"""Benchmarked data sizes: built-in 128x128, and knee-like 640x368 k-space / 320x320 images."""

SECTIONS = ("data", "mask_fft", "forward", "metric")

PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"bf16": True},
    "fp32-cl": {"channels_last": True},
    "bf16-cl": {"bf16": True, "channels_last": True},
}
"""Reconstructor precisions and layouts the bench can run (env config overrides)."""


@dataclass
class BenchResult:
    """Figures of one configuration (times in milliseconds per env step)."""

    device: str
    size: str
    reconstructor: str
    batch_size: int
    step_ms: float
    sections_ms: dict[str, float] = field(default_factory=dict)
    bare_forward_ms: float = float("nan")
    steps_per_s: float = 0.0
    peak_memory_mb: float = float("nan")
    reference_ms: float | None = None
    in_episode_ms: float = float("nan")
    threads: int = 0
    load: int = 0
    precision: str = "fp32"
    ssim_change: float | None = None

    @property
    def overhead_ratio(self) -> float:
        """Env step (resets left out) over bare forward."""
        return self.in_episode_ms / self.bare_forward_ms

    @property
    def episode_ratio(self) -> float:
        """Env step with resets amortized over bare forward (>= (T + 1) / T for T steps)."""
        return self.step_ms / self.bare_forward_ms

    def row(self) -> str:
        """One line of the printed table."""
        parts = " ".join(f"{self.sections_ms.get(s, 0.0):8.2f}" for s in (*SECTIONS, "other"))
        ref = (
            ""
            if self.reference_ms is None
            else (f" {self.reference_ms:9.1f} {self.reference_ms / self.step_ms:6.2f}x")
        )
        change = "" if self.ssim_change is None else f"  dSSIM {self.ssim_change:.1e}"
        return (
            f"{self.device:<5} {self.size:<8} {self.reconstructor:<11} {self.precision:<7} "
            f"{self.threads:>3} {self.load:>4} {self.batch_size:>4} "
            f"{self.step_ms:8.2f} {parts} {self.steps_per_s:9.0f} {self.bare_forward_ms:8.2f} "
            f"{self.overhead_ratio:6.3f} {self.episode_ratio:6.3f} {self.peak_memory_mb:8.0f}{ref}"
            f"{change}"
        )


HEADER = (
    f"{'dev':<5} {'data':<8} {'recon':<11} {'prec':<7} {'thr':>3} {'load':>4} {'B':>4} "
    f"{'step_ms':>8} "
    f"{'data':>8} {'mask_fft':>8} "
    f"{'forward':>8} {'metric':>8} {'other':>8} {'steps/s':>9} {'bare_ms':>8} {'ratio':>6} "
    f"{'ep_rat':>6} {'peak_MB':>8} {'ref_ms':>9} {'ref/step':>7}"
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SectionTimer:
    """``timer(section)`` context: wall time per section, synchronizing CUDA around it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, section: str) -> Iterator[None]:
        _sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync(self.device)
            self.totals[section] += time.perf_counter() - start


def load_reference() -> Callable[..., float] | None:
    """:func:`activemri.bench_reference.time_reference`, or ``None`` without scikit-image."""
    from activemri import bench_reference

    return bench_reference.time_reference if bench_reference.available() else None


def _unet(size: str, device: torch.device) -> Reconstructor:
    from activemri.recon_models import load_default
    from activemri.recon_models.unet import UnetReconstructor

    if size == "default":
        return load_default(map_location=str(device))
    # No trained knee model ships; timing does not depend on the weights.
    return UnetReconstructor((320, 320), chans=32, num_pool_layers=4, uncertainty=True).to(device)


def bench_env(
    size: str,
    recon: str,
    batch_size: int,
    device: torch.device,
    steps: int = 20,
    reference: Callable[..., float] | None = None,
    precision: str = "fp32",
) -> BenchResult:
    """Time one configuration (see the module docstring).

    Args:
        size: A key of :data:`SIZES`.
        recon: ``"zero_filled"`` or ``"unet"``.
        batch_size: Episodes stepped together.
        device: Where to run.
        steps: Timed steps (capped to stay inside one episode).
        reference: ``time_reference`` of the reference pipeline, or ``None``.
        precision: A key of :data:`PRECISIONS`. Other than ``fp32`` the row also reports
            the largest SSIM change of the last step's reconstructions against a float32,
            contiguous forward of the same batch (``dSSIM``).

    Returns:
        The figures.
    """
    spec = SIZES[size]
    model: Reconstructor | str = (
        "zero_filled" if recon == "zero_filled" else _unet(spec["unet"], device)
    )
    venv = ActiveMRIVectorEnv(
        batch_size,
        preset={"data": spec["data"], "split": None, "scenario": spec["scenario"]},
        reconstructor=model,
        device=str(device),
        **PRECISIONS[precision],
    )
    policy = RandomPolicy(seed=0)
    obs, _ = venv.torch_reset(seed=0)  # warm-up: first reads, allocator, kernels
    venv.torch_step(policy.act(venv.torch_policy_observation(obs)), check=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_timer = SectionTimer(device)
    with reset_timer("reset"):
        obs, _ = venv.torch_reset(seed=1, timer=reset_timer)
    episode = int(venv.state.budget.min().item())
    steps = max(1, min(steps, episode - 1))  # stay inside the episode: resets are amortized
    timer = SectionTimer(device)
    step_s = bare_s = 0.0
    forward = venv.reconstructor
    for _ in range(steps):
        actions = policy.act(venv.torch_policy_observation(obs))
        _sync(device)
        start = time.perf_counter()
        obs, *_ = venv.torch_step(actions, check=False, timer=timer)
        _sync(device)
        step_s += time.perf_counter() - start
        # The bare forward on the same batch right after the step: same machine state, so the
        # ratio is not at the mercy of drifting CPU load.
        state = venv.state
        with torch.no_grad(), bf16_autocast(device) if venv.core.bf16 else contextlib.nullcontext():
            start = time.perf_counter()
            forward(state.observed, state.mask, num_low_frequencies=state.num_low)
            _sync(device)
            bare_s += time.perf_counter() - start
    resets = reset_timer.totals
    in_episode_ms = 1e3 * step_s / steps
    step_ms = in_episode_ms + 1e3 * resets["reset"] / episode
    sections = {
        s: 1e3 * (timer.totals.get(s, 0.0) / steps + resets.get(s, 0.0) / episode) for s in SECTIONS
    }
    sections["other"] = step_ms - sum(sections.values())
    bare_ms = 1e3 * bare_s / steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
    change = None
    if precision != "fp32":
        change = _ssim_change(venv, precision)
    ref_ms = None
    if reference is not None and recon == "zero_filled":
        ref_ms = 1e3 * reference(
            state.kspace.cpu().numpy(),
            state.mask.cpu().numpy(),
            state.target.cpu().numpy(),
            state.data_range.cpu().numpy(),
        )
    return BenchResult(
        device=device.type,
        size=size,
        reconstructor=recon,
        batch_size=batch_size,
        step_ms=step_ms,
        sections_ms=sections,
        bare_forward_ms=bare_ms,
        steps_per_s=batch_size * 1e3 / step_ms,
        peak_memory_mb=peak,
        reference_ms=ref_ms,
        in_episode_ms=in_episode_ms,
        precision=precision,
        ssim_change=change,
    )


def _ssim_change(venv: ActiveMRIVectorEnv, precision: str) -> float:
    """Largest |SSIM| change of the env's reconstructions against a plain float32 forward."""
    from activemri import metrics

    state = venv.state
    model = venv.reconstructor
    weights = {name: p.data for name, p in model.named_parameters()}
    try:
        for p in model.parameters():
            p.data = p.data.contiguous()
        with torch.no_grad():
            plain = model(state.observed, state.mask, num_low_frequencies=state.num_low).image
    finally:
        for name, p in model.named_parameters():
            p.data = weights[name]
    reference = metrics.ssim(plain.float(), state.target, state.data_range)
    return float((state.metrics["ssim"] - reference).abs().max())


def run_bench(
    devices: list[str],
    sizes: list[str],
    reconstructors: list[str],
    batch_sizes: list[int],
    steps: int = 20,
    reference: bool = True,
    echo: Callable[[str], None] = print,
    full: bool = False,
    threads: list[int | None] | None = None,
    loads: list[int] | None = None,
    precisions: list[str] | None = None,
) -> list[BenchResult]:
    """Run every combination and print a table; returns the results.

    Args:
        devices: ``"cpu"`` / ``"cuda"`` strings.
        sizes: Keys of :data:`SIZES`.
        reconstructors: ``"zero_filled"`` and/or ``"unet"``.
        batch_sizes: Values of B.
        steps: Timed steps per row.
        reference: Also time the reference pipeline (zero-filled rows on CPU).
        echo: Where lines are printed.
        full: Include the knee-size U-Net on CPU.
        threads: Torch intra-op thread counts to run each row at (``None`` entries, and the
            default, keep the process's setting).
        loads: Concurrent CPU loads to run each row under: numbers of busy-looping
            processes started by the bench (default ``[0]``, idle). The env and the
            reference are timed under the same load, so their ratio stays meaningful.
        precisions: Keys of :data:`PRECISIONS` to run the U-Net rows at (default
            ``["fp32"]``; zero-filled rows have no network and run at fp32 only).

    The knee-size U-Net (32 channels, 4 levels, 320x320) is skipped on CPU unless ``full``:
    one forward of 64 images takes over a minute there.
    """
    ref = load_reference() if reference else None
    if reference and ref is None:
        echo("note: reference pipeline unavailable (needs scikit-image, in the dev extra); "
             "ratios are left out")  # fmt: skip
    torch.manual_seed(0)
    echo(HEADER)
    results = []
    for dev in devices:
        device = torch.device(dev)
        for size in sizes:
            for recon in reconstructors:
                if dev == "cpu" and size == "knee" and recon == "unet" and not full:
                    echo("(knee-size U-Net on CPU skipped; --full runs it)")
                    continue
                kinds = ["fp32"] if recon == "zero_filled" else (precisions or ["fp32"])
                for load in loads or [0]:
                    for count in threads or [None]:
                        with cpu_load(load), intra_op_threads(count) as used:
                            for precision in kinds:
                                for b in batch_sizes:
                                    reference_fn = ref if dev == "cpu" else None
                                    result = bench_env(
                                        size, recon, b, device, steps, reference_fn, precision
                                    )
                                    result.threads, result.load = used, load
                                    results.append(result)
                                    echo(result.row())
    echo("times in ms per env step of B episodes, resets amortized over the episode; thr = "
         "torch threads, load = busy processes beside the bench; prec = reconstructor "
         "precision (-cl: channels-last weights), dSSIM = its largest SSIM change against "
         "float32; ratio = step (resets left "
         "out) / bare forward; ep_rat = step with resets / bare forward; ref/step = reference "
         "pipeline / env step (zero-filled, CPU)")  # fmt: skip
    return results
