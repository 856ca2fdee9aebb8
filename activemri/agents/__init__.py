"""Sampling agents: sequential policies (heuristics, fixed masks, learned orderings, oracle).

Every policy follows :class:`~activemri.agents.policies.Policy`:
``act(obs, state) -> actions (B,)`` on the batched env's tensors.
"""

from __future__ import annotations

from activemri.agents.learned_mask import (
    LearnedOrdering,
    OrderingPolicy,
    learn_ordering,
    load_ordering,
)
from activemri.agents.policies import (
    FixedMaskPolicy,
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
    "FixedMaskPolicy",
    "FixedOrderPolicy",
    "GreedyOraclePolicy",
    "LearnedOrdering",
    "LowToHighPolicy",
    "OrderingPolicy",
    "Policy",
    "RandomPolicy",
    "UncertaintyPolicy",
    "center_out_order",
    "free_lines",
    "learn_ordering",
    "load_ordering",
]
