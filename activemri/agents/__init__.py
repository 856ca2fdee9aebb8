"""Sampling agents: sequential policies (heuristics, fixed orders, oracle).

Every policy follows :class:`~activemri.agents.policies.Policy`:
``act(obs, state) -> actions (B,)`` on the batched env's tensors.
"""

from __future__ import annotations

from activemri.agents.policies import (
    FixedOrderPolicy,
    GreedyOraclePolicy,
    LowToHighPolicy,
    Policy,
    RandomPolicy,
    UncertaintyPolicy,
    center_out_order,
    free_lines,
)

__all__ = [
    "FixedOrderPolicy",
    "GreedyOraclePolicy",
    "LowToHighPolicy",
    "Policy",
    "RandomPolicy",
    "UncertaintyPolicy",
    "center_out_order",
    "free_lines",
]
