"""``polywall explain``: report which rule of a policy decides a packet.

The decision comes from the rule graph alone (``compiler.evaluate``), so it
needs no root and loads nothing into the kernel.
"""

from __future__ import annotations

import json
import sys

from compiler.errors import SourceCache, render
from compiler.evaluate import Decision, evaluate
from compiler.graph import DIRECTION_CHAINS, RuleGraph
from compiler.packet import Packet, parse_packet

CHAIN_DIRECTIONS = {chain: direction for direction, chain in DIRECTION_CHAINS.items()}
JSON_FORMAT = "polywall-explain"
JSON_VERSION = 1


def run_explain(policy: str, packet_text: str, as_json: bool, sources: SourceCache) -> int:
    """Print the decision for one packet; raise PolicyError on a bad packet or policy.

    The packet is parsed before the policy is loaded, so a typo in the packet
    is reported without reading any file. Returns exit status 0 whatever the
    verdict.
    """
    from compiler.api import load_policy

    packet = parse_packet(packet_text, sources)
    graph = load_policy(policy, sources)
    for warning in graph.warnings:
        print(render(warning, sources), file=sys.stderr)

    decision = evaluate(graph, packet)
    if as_json:
        data = explain_json(graph, packet, decision, sources)
        print(json.dumps(data, indent=2))
    else:
        print(format_decision(packet, decision, sources))
    return 0


def format_decision(packet: Packet, decision: Decision, sources: SourceCache) -> str:
    """Format a decision as ``key: value`` lines for a terminal."""
    lines = []
    verdict = _verdict_text(decision)
    if decision.default:
        lines.append(f"verdict: {verdict} (the default: no rule of chain {decision.chain} matches)")
        lines.append(f"default: {_default_text(decision, sources)}")
    else:
        lines.append(f"verdict: {verdict}")
        lines.append(f"rule:    {_rule_text(decision)}")
    lines.append(f"chain:   {decision.chain}")
    lines.append(f"packet:  {packet}")
    if decision.logged:
        prefix = f' with prefix "{decision.log_prefix}"' if decision.log_prefix else ""
        lines.append(f"log:     the rule logs the packet{prefix}")
    for note in decision.notes:
        lines.append(f"note:    {note}")
    if decision.over_limit is not None:
        lines.append(f"above the rate: {_summary(decision.over_limit, sources)}")
    return "\n".join(lines)


def explain_json(
    graph: RuleGraph, packet: Packet, decision: Decision, sources: SourceCache
) -> dict:
    """Convert a decision to plain JSON data; every key is always present."""
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "policy": graph.name,
        "policy_file": graph.main_file,
        "packet": packet.to_json(),
        **decision_json(decision, sources),
    }


def decision_json(decision: Decision, sources: SourceCache) -> dict:
    """Convert a decision, and the one above a rate limit, to plain JSON data."""
    rule = None
    if decision.rule is not None:
        source = decision.rule.source
        rule = {
            "file": source.file,
            "line": source.line,
            "column": source.column,
            "text": decision.rule.text,
        }
    default_source = None
    if decision.default and decision.policy_source is not None:
        source = decision.policy_source
        default_source = {
            "file": source.file,
            "line": source.line,
            "column": source.column,
            "text": _default_line(decision, sources),
        }
    over_limit = None
    if decision.over_limit is not None:
        over_limit = decision_json(decision.over_limit, sources)
    return {
        "chain": decision.chain,
        "verdict": decision.verdict,
        "reject_with": decision.reject_with,
        "default": decision.default,
        "builtin_default": decision.default and decision.policy_source is None,
        "rule": rule,
        "default_source": default_source,
        "logged": decision.logged,
        "log_prefix": decision.log_prefix,
        "notes": list(decision.notes),
        "over_limit": over_limit,
    }


def _verdict_text(decision: Decision) -> str:
    if decision.reject_with:
        return f"{decision.verdict} with {decision.reject_with}"
    return decision.verdict


def _rule_text(decision: Decision) -> str:
    rule = decision.rule
    assert rule is not None
    return f"{rule.source.file}:{rule.source.line}: {rule.text}"


def _default_line(decision: Decision, sources: SourceCache) -> str:
    """Return the text of the ``default`` line, or a rebuilt one when the file is not cached."""
    source = decision.policy_source
    assert source is not None
    line = sources.line(source.file, source.line)
    return line.strip() if line else f"default {decision.verdict}"


def _default_text(decision: Decision, sources: SourceCache) -> str:
    if decision.policy_source is None:
        direction = CHAIN_DIRECTIONS[decision.chain]
        return f"built-in {decision.verdict}; the policy has no 'default' line for {direction}"
    source = decision.policy_source
    return f"{source.file}:{source.line}: {_default_line(decision, sources)}"


def _summary(decision: Decision, sources: SourceCache) -> str:
    """Return a one-line account of a decision: the verdict and what gives it."""
    verdict = _verdict_text(decision)
    if decision.default:
        default = _default_text(decision, sources)
        return f"{verdict} by the default of chain {decision.chain}: {default}"
    return f"{verdict} by {_rule_text(decision)}"
