"""Learning rules: one interface (``compute_grads`` fills ``.grad``), built by name.

The local rules (rec-LRA, mixed rec-LRA, LRA, FA, DFA) are :class:`LocalRule` walks of the core;
backprop is autograd. ``lra-diff`` is :class:`LRA` with ``mode="diff"`` fixed by its name.
"""

from __future__ import annotations

from reclra.network import LayeredNet
from reclra.registry import Registry
from reclra.rules.backprop import Backprop
from reclra.rules.base import LocalRule, Rule, Step, StepStats, SynapseDict
from reclra.rules.feedback_alignment import DFA, FA
from reclra.rules.lra import LRA
from reclra.rules.rec_lra import RecLRA
from reclra.rules.rec_lra_mixed import RecLRABlockBackprop

__all__ = [
    "DFA",
    "FA",
    "LRA",
    "RULES",
    "Backprop",
    "LocalRule",
    "RecLRA",
    "RecLRABlockBackprop",
    "Rule",
    "Step",
    "StepStats",
    "SynapseDict",
    "build_rule",
    "rule_names",
]

RULES: Registry[Rule] = Registry("rule")
RULES.register("rec-lra")(RecLRA)
RULES.register("rec-lra-bp")(RecLRABlockBackprop)
RULES.register("backprop")(Backprop)
RULES.register("fa")(FA)
RULES.register("dfa")(DFA)
RULES.register("lra")(LRA)
RULES.register("lra-diff", mode="diff")(LRA)


def build_rule(name: str, net: LayeredNet, **options) -> Rule:
    """Build a registered rule for ``net`` (options are checked against the rule's arguments)."""
    return RULES.build(name, net, **options)


def rule_names() -> list[str]:
    return RULES.names()
