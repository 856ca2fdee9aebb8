"""Sampling agents: sequential policies (heuristics, fixed masks, learned orderings, oracle).

Learned fixed masks: greedy orderings (:func:`learn_ordering`) and LOUPE masks learned jointly
with a reconstructor (:func:`learn_loupe`); both play as :class:`OrderingPolicy`.

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
from activemri.agents.loupe import LoupeConfig, LoupeResult, learn_loupe
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
    "LoupeConfig",
    "LoupeResult",
    "LowToHighPolicy",
    "OrderingPolicy",
    "Policy",
    "RandomPolicy",
    "UncertaintyPolicy",
    "center_out_order",
    "free_lines",
    "learn_loupe",
    "learn_ordering",
    "load_ordering",
]
