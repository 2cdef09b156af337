"""Elastic Ticket Transformations: plans (target unit <- source unit, per stage), strategies, application."""
from elth.elastic.apply import apply_plan, replica_units, source_key, transform
from elth.elastic.match import match_sparsity, source_sparsity
from elth.elastic.plan import (
    ModelView,
    Plan,
    PlanError,
    check_compatible,
    format_plan,
    model_view,
    parse_plan,
    validate_plan,
)
from elth.elastic.strategies import ORDERS, SQUEEZE_MODES, make_plan, squeeze, stretch

__all__ = [
    "ModelView",
    "ORDERS",
    "Plan",
    "PlanError",
    "SQUEEZE_MODES",
    "apply_plan",
    "check_compatible",
    "format_plan",
    "make_plan",
    "match_sparsity",
    "model_view",
    "parse_plan",
    "replica_units",
    "source_key",
    "source_sparsity",
    "squeeze",
    "stretch",
    "transform",
    "validate_plan",
]
