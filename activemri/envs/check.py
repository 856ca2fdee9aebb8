"""``activemri env check``: Gymnasium's and SB3's env checkers plus a seeded-rollout check."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["EXPECTED_SB3_WARNINGS", "CheckReport", "check_env_id", "rollout"]

EXPECTED_SB3_WARNINGS: dict[str, str] = {
    r"is an image but its `dtype` is \(float32\)": (
        "observations are float32 reconstructions, not uint8 camera frames; SB3's "
        "MultiInputPolicy flattens non-uint8 Boxes, which is right for them"
    ),
    r"is an image but the upper and lower bounds are not in \[0, 255\]": (
        "same reason: float images in units of the observation scale, not pixel values"
    ),
    r"minimal resolution for an image is 36x36": (
        "only for tiny test data below 36x36; irrelevant as the images are not fed to NatureCNN"
    ),
}
"""SB3 ``check_env`` warnings that are expected for activemri observations, with the reason.
Any other warning fails the check."""


@dataclass
class CheckReport:
    """Outcome of :func:`check_env_id`.

    Attributes:
        env_id: The id checked.
        passed: Names of the checks that passed.
        failed: ``(check, message)`` of the checks that failed.
        explained: Expected warnings seen, with their reasons.
        summary: Facts about the env (spaces, episode length, returns).
    """

    env_id: str
    passed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.failed


def _run(report: CheckReport, name: str, fn: Callable[[], Any], sb3: bool = False) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as exc:  # a failed check is reported, not raised
            report.failed.append((name, f"{type(exc).__name__}: {exc}"))
            return None
    unexplained = []
    for w in caught:
        text = str(w.message)
        reason = next((r for p, r in EXPECTED_SB3_WARNINGS.items() if re.search(p, text)), None)
        if sb3 and reason is not None:
            report.explained.append(f"{name}: {text.split('.')[0]} -- {reason}")
        else:
            unexplained.append(text)
    if unexplained:
        report.failed.append((name, "unexplained warnings: " + " | ".join(unexplained)))
    else:
        report.passed.append(name)
    return result


def rollout(env: gym.Env[Any, Any], seed: int, max_steps: int = 10_000) -> dict[str, Any]:
    """One seeded episode choosing the middle valid line each step.

    Args:
        env: An activemri env (possibly wrapped).
        seed: Reset seed.
        max_steps: Safety bound on the episode length.

    Returns:
        Observations' checksum, rewards, final info and episode length.
    """
    obs, info = env.reset(seed=seed)
    rewards, checksum = [], float(np.sum(obs["reconstruction"], dtype=np.float64))
    first_score = float(info["score"])
    for _ in range(max_steps):
        masks = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        valid = np.flatnonzero(masks)
        action = int(valid[len(valid) // 2]) if valid.size else 0
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(float(reward))
        checksum += float(np.sum(obs["reconstruction"], dtype=np.float64))
        if terminated or truncated:
            break
    return {
        "rewards": rewards,
        "checksum": checksum,
        "initial_score": first_score,
        "final_info": info,
        "length": len(rewards),
    }


def check_env_id(env_id: str, **overrides: Any) -> CheckReport:
    """Run every check on a registered id.

    Checks: ``gymnasium.make`` with the passive checker, Gymnasium's ``check_env``, SB3's
    ``check_env`` (only :data:`EXPECTED_SB3_WARNINGS` allowed), two seeded rollouts that must
    be identical, rewards that telescope to final - initial score, and an ``rgb_array``
    frame.

    Args:
        env_id: A registered id.
        **overrides: Env config overrides (``data_root=``, ``device=``, ...).
    """
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    report = CheckReport(env_id)
    env = _run(report, "make", lambda: gym.make(env_id, render_mode="rgb_array", **overrides))
    if env is None:
        return report
    raw = env.unwrapped
    _run(report, "gymnasium.check_env", lambda: gym_check(raw, skip_render_check=True))
    _run(report, "sb3.check_env", lambda: sb3_check(raw, warn=True), sb3=True)
    first = _run(report, "rollout", lambda: rollout(env, seed=0))
    second = _run(report, "rollout (repeat)", lambda: rollout(env, seed=0))
    if first is not None and second is not None:
        if first["rewards"] != second["rewards"] or first["checksum"] != second["checksum"]:
            report.failed.append(("reproducible", "two rollouts with seed 0 differ"))
        else:
            report.passed.append("reproducible")
        total = sum(first["rewards"])
        gain = float(first["final_info"]["score"]) - first["initial_score"]
        if abs(total - gain) > 1e-4 * max(1.0, abs(gain)):
            report.failed.append(("telescoping", f"sum of rewards {total} != score gain {gain}"))
        else:
            report.passed.append("telescoping")
        info = first["final_info"]
        report.summary = {
            "observation": {k: f"{s}" for k, s in raw.observation_space.spaces.items()},
            "actions": int(raw.action_space.n),
            "episode_length": first["length"],
            "initial_score": round(first["initial_score"], 4),
            "final_score": round(float(info["score"]), 4),
            "lines_acquired": info["lines_acquired"],
            "acceleration": round(float(info["acceleration"]), 2),
            "reconstructor": type(raw.reconstructor).__name__,
            "device": str(raw.device),
        }
    frame = _run(report, "render", lambda: env.render())
    if frame is not None:
        report.summary["frame"] = tuple(frame.shape)
    env.close()
    return report
