"""Evaluation of sampling policies: runs, statistics, results files and plots."""

from __future__ import annotations

from activemri.agents.policy_specs import POLICY_FACTORIES, PolicySpec, parse_policy
from activemri.agents.rollout import RECORDED_METRICS, Trajectories, run_policy
from activemri.evaluation.harness import EvalSettings, evaluate, format_table
from activemri.evaluation.results import SCHEMA, validate_results
from activemri.evaluation.stats import holm, mean_ci, normalized_auc, paired_tests

__all__ = [
    "POLICY_FACTORIES",
    "RECORDED_METRICS",
    "SCHEMA",
    "EvalSettings",
    "PolicySpec",
    "Trajectories",
    "evaluate",
    "format_table",
    "holm",
    "mean_ci",
    "normalized_auc",
    "paired_tests",
    "parse_policy",
    "run_policy",
    "validate_results",
]
