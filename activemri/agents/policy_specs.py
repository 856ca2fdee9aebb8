"""Policy specs ``NAME``, ``NAME:ARG`` or ``LABEL=NAME[:ARG]``, as ``activemri evaluate`` reads.

The table of names sits here, beside the policies it builds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from activemri.agents.learned_mask import SHIPPED_ORDERING, check_ordering_context, load_ordering
from activemri.agents.policies import (
    FixedMaskPolicy,
    GreedyOraclePolicy,
    LowToHighPolicy,
    Policy,
    RandomPolicy,
    UncertaintyPolicy,
)
from activemri.envs.vector import ActiveMRIVectorEnv

__all__ = ["POLICY_FACTORIES", "PolicySpec", "parse_policy"]

PolicyFactory = Callable[[str | None, ActiveMRIVectorEnv, int], Policy]


def _learned(arg: str | None, venv: ActiveMRIVectorEnv, seed: int) -> Policy:
    ordering = load_ordering(arg)
    check_ordering_context(ordering, venv.reconstructor, venv.config.data)
    return ordering.policy()


def _agent(arg: str | None, venv: ActiveMRIVectorEnv, seed: int) -> Policy:
    if not arg:
        raise ValueError("agent:PATH needs a checkpoint (e.g. agent:outputs/agents/NAME/agent.zip)")
    from activemri.agents.sb3_agent import AgentPolicy  # SB3 loads only when agents are used

    policy = AgentPolicy.from_checkpoint(arg, device=str(venv.device))
    policy.check_env(venv)
    return policy


def _mask(arg: str | None, venv: ActiveMRIVectorEnv, seed: int) -> Policy:
    if not arg:
        raise ValueError("mask:TYPE needs a mask type (e.g. mask:variable_density)")
    return FixedMaskPolicy(arg, seed=seed)


POLICY_FACTORIES: dict[str, PolicyFactory] = {
    "random": lambda arg, venv, seed: RandomPolicy(seed),
    "low_to_high": lambda arg, venv, seed: LowToHighPolicy(),
    "equispaced": lambda arg, venv, seed: FixedMaskPolicy("equispaced", seed=seed),
    "mask": _mask,
    "learned": _learned,
    "uncertainty": lambda arg, venv, seed: UncertaintyPolicy(),
    "greedy_oracle": lambda arg, venv, seed: GreedyOraclePolicy(venv.torch_score_candidates),
    "agent": _agent,
}
"""Policy builders by spec name, called as ``factory(arg, venv, seed)``:

- ``random``: uniformly random free line (seeded).
- ``low_to_high``: nearest free line to the center, alternating sides.
- ``equispaced``: the ``equispaced`` fixed mask per volume and budget.
- ``mask:TYPE``: any fixed mask of :data:`activemri.masks.MASK_TYPES` (lines) or, on ky-kz
  planes, of :data:`activemri.masks2d.MASK_TYPES_2D` (``poisson``, ...).
- ``learned`` / ``learned:PATH``: a learned ordering (default: the shipped one).
- ``uncertainty``: the uncertainty-driven rule (needs an uncertainty head).
- ``greedy_oracle``: one-step lookahead with the ground truth.
- ``agent:PATH``: a trained RL agent (``activemri agent train``), greedy actions.

Other packages (and the RL agents) add entries here to appear in ``activemri evaluate``.
"""


@dataclass(frozen=True)
class PolicySpec:
    """A parsed policy spec.

    Attributes:
        label: Name in reports.
        name: Factory name (a key of :data:`POLICY_FACTORIES`).
        arg: Factory argument, if any.
    """

    label: str
    name: str
    arg: str | None = None

    @property
    def spec(self) -> str:
        """The spec text."""
        return self.name if self.arg is None else f"{self.name}:{self.arg}"

    def identity(self) -> dict[str, str]:
        """What makes two runs of this policy the same: the spec and the named file's hash.

        A changed ordering or checkpoint behind the same spec thus invalidates saved runs;
        plain ``learned`` hashes the shipped ordering it reads.
        """
        out = {"spec": self.spec}
        file = Path(self.arg) if self.arg is not None else None
        if self.name == "learned" and file is None:
            file = SHIPPED_ORDERING
        if file is not None and file.is_file():
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out["sha256"] = digest.hexdigest()
        return out

    def build(self, venv: ActiveMRIVectorEnv, seed: int) -> Policy:
        """Instantiate the policy for ``venv``."""
        policy = POLICY_FACTORIES[self.name](self.arg, venv, seed)
        policy.name = self.label
        return policy


def parse_policy(text: str) -> PolicySpec:
    """Parse ``NAME``, ``NAME:ARG`` or ``LABEL=NAME[:ARG]``.

    Raises:
        ValueError: For an unknown name (the message lists the known ones).
    """
    label, sep, spec = text.partition("=")
    if not sep:
        label, spec = "", text
    name, sep, arg = spec.partition(":")
    if name not in POLICY_FACTORIES:
        raise ValueError(f"unknown policy {name!r}; choose from {sorted(POLICY_FACTORIES)}")
    if not label:
        label = arg if name == "mask" and arg else ("learned_fixed" if name == "learned" else name)
    return PolicySpec(label, name, arg if sep else None)
