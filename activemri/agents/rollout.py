"""The rollout loop: play one policy over every slice of an env's split, record its trajectories.

The one loop that drives a policy through the batched env's public torch API (used by the
evaluation harness, the agent trainer's periodic evaluation and the mask learner's checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from activemri.agents.policies import Policy
from activemri.envs.source import Episode
from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = ["RECORDED_METRICS", "Trajectories", "run_policy"]

RECORDED_METRICS = ("ssim", "psnr", "nmse")
"""Metrics recorded after every acquired line."""


@dataclass
class Trajectories:
    """Per-slice records of one policy: the metrics at the start and after every step.

    Attributes:
        files: File name of each slice.
        slices: Slice index within its file.
        valid_lines: Measured lines of each slice.
        lines: Per slice, lines acquired at each record (initial mask first).
        metrics: Per metric of :data:`RECORDED_METRICS`, per slice, the value at each record.
        example: The first slice's ``target``, final ``reconstruction`` (both divided by the
            observation scale) and final ``mask``, for figures; ``None`` if not kept.
        dropped: Slices left out because they could not be read or held unusable values:
            ``{"file", "slice", "reason"}`` each.
    """

    files: list[str] = field(default_factory=list)
    slices: list[int] = field(default_factory=list)
    valid_lines: list[int] = field(default_factory=list)
    lines: list[list[int]] = field(default_factory=list)
    metrics: dict[str, list[list[float]]] = field(
        default_factory=lambda: {m: [] for m in RECORDED_METRICS}
    )
    example: dict[str, np.ndarray] | None = None
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def keys(self) -> list[tuple[str, int]]:
        """``(file, slice)`` of every record, the identity used to pair policies."""
        return list(zip(self.files, self.slices, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (without the example)."""
        return {
            "files": self.files,
            "slices": self.slices,
            "valid_lines": self.valid_lines,
            "lines": self.lines,
            "metrics": self.metrics,
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Trajectories:
        """Inverse of :meth:`to_dict`."""
        return cls(
            files=[str(f) for f in doc["files"]],
            slices=[int(s) for s in doc["slices"]],
            valid_lines=[int(v) for v in doc["valid_lines"]],
            lines=[[int(x) for x in row] for row in doc["lines"]],
            metrics={
                m: [[float(x) for x in row] for row in doc["metrics"][m]] for m in RECORDED_METRICS
            },
            dropped=[
                {"file": str(d["file"]), "slice": int(d["slice"]), "reason": str(d["reason"])}
                for d in doc.get("dropped", [])
            ],
        )


def _records(info: dict[str, Any]) -> dict[str, np.ndarray]:
    return ActiveMRIVectorEnv.to_host({k: info[k] for k in (*RECORDED_METRICS, "lines_acquired")})


def _culprits(venv: ActiveMRIVectorEnv, episodes: list[Episode]) -> str:
    """The slices whose score or reconstruction is not finite after a failed step.

    The env keeps the new state before it checks the rewards, so the rows at
    fault are those with a non-finite score or image; if none is (the failure came from
    elsewhere), every slice in play is named.
    """
    import torch

    state = venv.state
    ok = torch.isfinite(state.score)
    for image in (state.recon, state.uncertainty):
        if image is not None:
            ok &= torch.isfinite(image).flatten(1).all(dim=1)
    rows = torch.nonzero(~ok).flatten().tolist()
    named = [f"{episodes[r].meta.file.name} slice {episodes[r].meta.slice_index}" for r in rows]
    if named:
        return f"non-finite on {', '.join(named)}"
    playing = ", ".join(f"{e.meta.file.name} slice {e.meta.slice_index}" for e in episodes)
    return f"slices in play: {playing}"


def run_policy(
    venv: ActiveMRIVectorEnv,
    policy: Policy,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    example_index: int | None = None,
) -> Trajectories:
    """Play ``policy`` on every slice of ``venv`` once (one pass, batched).

    ``venv`` must deal slices in ``"sequential"`` order; each sub-env plays its share of the
    pass and the episodes of a second pass are discarded.

    Args:
        venv: The batched env (its ``torch_*`` API is used; nothing leaves the device but
            the recorded metrics).
        policy: The policy; :meth:`Policy.begin` is called whenever episodes start.
        seed: Reset seed (initial random lines, if the scenario draws any).
        progress: Called with 1 after every finished slice.
        example_index: Dataset index of the slice kept as :attr:`Trajectories.example`
            (default: the first slice evaluated).

    Returns:
        The trajectories, ordered as the slices are in the dataset.
    """
    if venv.config.resolved_order != "sequential":
        raise ValueError("evaluation needs order='sequential' (one pass over the split)")
    if venv.core.reward_timing != "dense":
        raise ValueError(
            "evaluation records every step's metrics, which reward_timing='terminal' computes "
            "only at the last step: build the env with reward_timing='dense'"
        )
    info: dict[str, Any]
    obs, info = venv.torch_reset(seed=seed)
    rows_all = list(range(venv.num_envs))
    episodes: list[Episode] = venv.episodes
    seen = venv.torch_policy_observation(obs)  # all a policy is given: no target, no k-space
    policy.begin(rows_all, venv.policy_episodes(rows_all), seen)
    current = _records(info)
    open_records = [{k: [v[i]] for k, v in current.items()} for i in rows_all]
    active = [e.pass_index == 0 for e in episodes]
    first = min(venv.slice_indices) if example_index is None else example_index
    example: dict[str, np.ndarray] = {}

    def note_start(row: int) -> None:
        if episodes[row].dataset_index == first and episodes[row].pass_index == 0:
            state = venv.state  # the figure's target: recorded here, never shown to the policy
            example["target"] = (state.target[row] / state.scale[row]).cpu().numpy()

    for row in rows_all:
        note_start(row)
    finished: list[tuple[Episode, dict[str, list[Any]]]] = []
    while any(active):
        actions = policy.act(seen)
        try:
            obs, _, terminated, _, info = venv.torch_step(actions, check=False)
        except FloatingPointError as exc:
            raise FloatingPointError(f"{exc}; {_culprits(venv, episodes)}") from exc
        seen = venv.torch_policy_observation(obs)
        current = _records(info)
        if "final_info" not in info:
            for row in rows_all:
                for key, values in open_records[row].items():
                    values.append(current[key][row])
            continue
        final = _records(info["final_info"])
        ended = np.flatnonzero(terminated.cpu().numpy()).tolist()
        for row in rows_all:
            source = final if row in ended else current
            for key, values in open_records[row].items():
                values.append(source[key][row])
        for row in ended:
            if active[row]:
                finished.append((episodes[row], open_records[row]))
                if episodes[row].dataset_index == first:
                    final_obs = info["final_obs"]
                    example["reconstruction"] = final_obs["reconstruction"][row, 0].cpu().numpy()
                    mask = final_obs["mask"][row].cpu().numpy().astype(bool)
                    grid = venv.geometry.grid(*venv.kspace_shape[1:])
                    example["mask"] = mask if grid[0] == 1 else mask.reshape(grid)
                if progress is not None:
                    progress(1)
            new = venv.episodes[row]
            episodes[row] = new
            open_records[row] = {k: [v[row]] for k, v in current.items()}
            active[row] = new.pass_index == 0
            note_start(row)
        policy.begin(ended, venv.policy_episodes(ended), seen)
    finished.sort(key=lambda item: item[0].dataset_index)
    out = Trajectories(example=example if len(example) == 3 else None)
    for index, reason in sorted(venv.bad_slices.items()):
        file, slice_index = venv.slice_name(index)
        out.dropped.append({"file": file, "slice": slice_index, "reason": reason})
    for episode, records in finished:
        out.files.append(episode.meta.file.name)
        out.slices.append(int(episode.meta.slice_index))
        out.valid_lines.append(int(episode.valid_lines))
        out.lines.append([int(x) for x in records["lines_acquired"]])
        for metric in RECORDED_METRICS:
            out.metrics[metric].append([float(x) for x in records[metric]])
    return out
