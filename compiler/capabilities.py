"""Capabilities: what a target can express, and the shared check against a graph.

Each exporter declares a frozenset of the names below. ``check`` lists every
rule that uses a feature outside that set, so that a policy a target cannot
express fails with the rule's position instead of being weakened.
"""

from __future__ import annotations

from compiler.errors import Diagnostic
from compiler.graph import Rule, RuleGraph

# Capability name -> the phrase used in "TARGET cannot express ...".
FEATURES = {
    "output-chain": "rules or a non-accept default for outgoing traffic (out)",
    "forward-chain": "rules or a non-accept default for forwarded traffic (fwd)",
    "log": "per-rule logging",
    "log-prefix": "a per-rule log prefix",
    "rate-limit": "arbitrary rate limits",
    "rate-limit-burst": "a rate limit burst",
    "reject": "reject rules",
    "reject-type": "a chosen reject type (with ...)",
    "default-reject": "reject as a default",
    "source-ports": "source ports",
    "negated-addresses": "negated addresses",
    "in-interface": "an incoming interface match (on IFACE)",
    "out-interface": "an outgoing interface match",
    "interface-wildcard": "interface wildcards (IFACE+)",
    "conntrack-states": "connection tracking states",
    "icmp-types": "ICMP types",
    "comments": "rule comments",
    "ipv6": "IPv6 rules",
}

ALL = frozenset(FEATURES)


def rule_features(rule: Rule) -> list[str]:
    """List the capability names a rule needs, in the order of FEATURES."""
    used = set()
    if rule.chain == "output":
        used.add("output-chain")
    if rule.chain == "forward":
        used.add("forward-chain")
    if rule.log:
        used.add("log")
    if rule.log_prefix:
        used.add("log-prefix")
    if rule.limit is not None:
        used.add("rate-limit")
        if rule.limit.burst is not None:
            used.add("rate-limit-burst")
    if rule.action == "reject":
        used.add("reject")
        if rule.reject_with:
            used.add("reject-type")
    if rule.sports:
        used.add("source-ports")
    if (rule.saddr and rule.saddr.negated) or (rule.daddr and rule.daddr.negated):
        used.add("negated-addresses")
    if rule.in_interface:
        used.add("in-interface")
    if rule.out_interface:
        used.add("out-interface")
    if any(i and i.endswith("+") for i in (rule.in_interface, rule.out_interface)):
        used.add("interface-wildcard")
    if rule.ct_states:
        used.add("conntrack-states")
    if rule.icmp_types:
        used.add("icmp-types")
    if rule.comment:
        used.add("comments")
    if "ipv6" in rule.families:
        used.add("ipv6")
    return [name for name in FEATURES if name in used]


def check(graph: RuleGraph, target: str, capabilities: frozenset) -> list[Diagnostic]:
    """Return one error per rule and missing feature; empty when the target can express the graph."""
    problems: list[Diagnostic] = []
    seen: set[tuple[str, str]] = set()
    for name in ("output", "forward"):
        chain = graph.chains[name]
        feature = f"{name}-chain"
        if chain.policy != "accept" and feature not in capabilities:
            problems.append(_diagnostic(target, feature, chain.policy_source))
            seen.add((str(chain.policy_source), feature))
    for name, chain in graph.chains.items():
        if chain.policy == "reject" and "default-reject" not in capabilities:
            problems.append(_diagnostic(target, "default-reject", chain.policy_source))
    for rule in graph.rules():
        for feature in rule_features(rule):
            if feature in capabilities:
                continue
            key = (str(rule.source), feature)
            if key in seen:
                continue
            seen.add(key)
            problems.append(_diagnostic(target, feature, rule.source))
    return problems


def _diagnostic(target: str, feature: str, source) -> Diagnostic:
    return Diagnostic(f"{target} cannot express {FEATURES[feature]}", source)
