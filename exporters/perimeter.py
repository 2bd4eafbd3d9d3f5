"""Mapping of the rule graph onto a perimeter device, shared by the vendor exporters.

A host firewall filters traffic to, through and from itself. A perimeter
device (Cisco ASA, Cisco IOS, Juniper SRX) filters traffic that crosses it
between an outside and an inside network. The exporters map the graph's
chains onto two filters of such a device:

- the inbound filter, for traffic from the outside toward the inside,
  contains the rules of ``in`` (input) and ``fwd`` (forward) merged in policy order:
  on a perimeter device both describe what may reach the protected hosts;
- the outbound filter, for traffic from the inside toward the outside,
  contains the rules of ``out`` (output).

Each filter ends with the chain's default as an explicit final entry, and
both filters are always written, so that the device's own defaults (an SRX
denies between zones, an ASA permits by security level) never decide.
Where each filter sits on the device (an ACL name and interface, or a zone
pair) comes from the policy's ``target NAME { ... }`` block; each exporter
lists its keys in a table of ``SettingSpec``.

Rules that the device makes redundant by design are kept in the filter as
entries with a ``skip_reason``, and the templates print that reason as a
comment in place of the rule:

- rules on the loopback interface (``on lo``): loopback traffic never
  crosses a perimeter filter;
- on stateful devices, accept rules that match only ``established`` and
  ``related`` traffic: the device passes return traffic of permitted
  connections by itself.

Everything else a device cannot express is an error from ``check_rules``,
naming the rule's position and the target.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from compiler.catalog import TCP_RESET
from compiler.errors import Diagnostic, Source
from compiler.graph import Network, PortRange, Rule, RuleGraph, TargetSetting

INBOUND = "inbound"
OUTBOUND = "outbound"
SIDE_CHAINS = {INBOUND: ("input", "forward"), OUTBOUND: ("output",)}
LOOPBACK_INTERFACES = frozenset({"lo"})
RETURN_STATES = frozenset({"established", "related"})

SKIP_LOOPBACK = "loopback traffic never crosses a perimeter filter"
SKIP_RETURN = "the device passes return traffic of permitted connections by itself"


# Settings


@dataclass(frozen=True)
class SettingSpec:
    """One key of a ``target NAME { ... }`` block: its default and valid values."""

    key: str
    default: str
    help: str
    pattern: str
    max_length: int
    expected: str

    def valid(self, value: str) -> bool:
        return len(value) <= self.max_length and re.fullmatch(self.pattern, value) is not None


def read_settings(
    graph: RuleGraph, target: str, specs: Iterable[SettingSpec]
) -> tuple[dict[str, str], list[Diagnostic]]:
    """Return the target's settings with defaults filled in, and one error per bad entry."""
    table = {spec.key: spec for spec in specs}
    values = {key: spec.default for key, spec in table.items()}
    problems: list[Diagnostic] = []
    node = graph.settings.get(target)
    if node is None:
        return values, problems
    for key, setting in node.entries.items():
        spec = table.get(key)
        if spec is None:
            problems.append(_unknown_key(target, key, setting, table))
            continue
        if not spec.valid(setting.value):
            problems.append(
                Diagnostic(
                    f"invalid value {setting.value!r} for {target} setting '{key}'",
                    setting.value_source,
                    f"use {spec.expected}, at most {spec.max_length} characters",
                )
            )
            continue
        values[key] = setting.value
    return values, problems


def _unknown_key(target: str, key: str, setting: TargetSetting, table: dict) -> Diagnostic:
    close = difflib.get_close_matches(key, sorted(table), n=1, cutoff=0.6)
    if close:
        hint = f"did you mean '{close[0]}'?"
    else:
        hint = f"{target} knows these settings: " + ", ".join(sorted(table))
    return Diagnostic(f"unknown setting '{key}' for target {target}", setting.source, hint)


# Filters


@dataclass
class Entry:
    """One rule of a filter; ``skip_reason`` is set when the device makes it redundant."""

    rule: Rule
    skip_reason: str | None = None


@dataclass
class PerimeterFilter:
    """The rules of one direction across the device, in policy order, and its default."""

    side: str
    entries: list[Entry]
    default: str
    default_source: Source | None


def perimeter_filters(graph: RuleGraph, stateful: bool) -> list[PerimeterFilter]:
    """Map the graph's chains onto the inbound and the outbound filter."""
    filters = []
    for side, chain_names in SIDE_CHAINS.items():
        rules = _merge_chains([graph.chains[name].rules for name in chain_names])
        entries = [Entry(rule, _skip_reason(rule, stateful)) for rule in rules]
        default, source = _side_default(graph, chain_names)
        filters.append(PerimeterFilter(side, entries, default, source))
    return filters


def _order_key(source: Source) -> tuple:
    """Return a key that sorts rules in policy order, across included files."""
    steps = tuple((line, 0) for _, line in source.include_chain)
    return steps + ((source.line, source.column),)


def _without_chain(rule: Rule) -> Rule:
    return dataclasses.replace(rule, chain="")


def _merge_chains(chains: list[list[Rule]]) -> list[Rule]:
    """Merge chains in policy order, keeping one copy of a rule written for several directions.

    Each chain is already in policy order, so a merge by source position keeps
    that order. NOTE: two includes on one line share the position of that line,
    so rules from two such files keep the order of each chain, not of the files.
    """
    merged: list[Rule] = []
    heads = [list(chain) for chain in chains]
    while any(heads):
        candidates = [h for h in heads if h]
        first = min(candidates, key=lambda h: _order_key(h[0].source))
        rule = first.pop(0)
        key = _without_chain(rule)
        if not any(_without_chain(kept) == key for kept in merged if kept.source == rule.source):
            merged.append(rule)
    return merged


def _side_default(graph: RuleGraph, chain_names: tuple[str, ...]) -> tuple[str, Source | None]:
    chains = [graph.chains[name] for name in chain_names]
    explicit = [c for c in chains if c.policy_source is not None]
    if not explicit:
        return chains[0].policy, None
    return explicit[0].policy, explicit[0].policy_source


def _skip_reason(rule: Rule, stateful: bool) -> str | None:
    if rule.in_interface in LOOPBACK_INTERFACES or rule.out_interface in LOOPBACK_INTERFACES:
        return SKIP_LOOPBACK
    states = set(rule.ct_states)
    if stateful and states and states <= RETURN_STATES and rule.action == "accept":
        return SKIP_RETURN
    return None


def check_rules(graph: RuleGraph, target: str, stateful: bool) -> list[Diagnostic]:
    """Return errors for what the perimeter mapping cannot express on this target.

    The shared capability check cannot see these, because the same feature
    (an interface match, a state match) is fine in one form and impossible in
    another.
    """
    problems: list[Diagnostic] = []
    for chain_names in SIDE_CHAINS.values():
        chains = [graph.chains[name] for name in chain_names]
        explicit = [c for c in chains if c.policy_source is not None]
        if len({c.policy for c in explicit}) > 1:
            problems.append(
                Diagnostic(
                    f"{target} cannot express different defaults for in and fwd, because both "
                    "become the filter for traffic from the outside",
                    explicit[-1].policy_source,
                    "give in and fwd the same default",
                )
            )
    for rule in graph.rules():
        problem = _interface_problem(rule, target) or _state_problem(rule, target, stateful)
        if problem is not None:
            problems.append(problem)
    return _dedupe(problems)


def _interface_problem(rule: Rule, target: str) -> Diagnostic | None:
    for name, what in ((rule.in_interface, "an incoming"), (rule.out_interface, "an outgoing")):
        if name is None or name in LOOPBACK_INTERFACES:
            continue
        return Diagnostic(
            f"{target} cannot express {what} interface match ('{name}'): its filters are bound "
            "to the interfaces or zones set in the target block",
            rule.source,
            "drop the interface from the rule; only the loopback interface 'lo' is accepted "
            "(and left out)",
        )
    return None


def _state_problem(rule: Rule, target: str, stateful: bool) -> Diagnostic | None:
    states = set(rule.ct_states)
    if not states:
        return None
    if rule.in_interface in LOOPBACK_INTERFACES or rule.out_interface in LOOPBACK_INTERFACES:
        return None
    shown = ",".join(rule.ct_states)
    if stateful:
        if states - RETURN_STATES - {"new"}:
            reason = "it tracks connections itself and has no match for invalid or untracked"
        elif states <= RETURN_STATES and rule.action != "accept" or "new" in states and states & RETURN_STATES and rule.action != "accept":
            reason = "return traffic of permitted connections always passes"
        else:
            return None
    else:
        if states <= RETURN_STATES and "established" in states and rule.protocol in (None, "tcp"):
            return None
        reason = (
            "its access lists are stateless: only TCP return traffic can be matched, "
            "with 'established'"
        )
    return Diagnostic(
        f"{target} cannot express connection tracking states ({shown}) on this rule, because "
        f"{reason}",
        rule.source,
    )


def state_problem(rule: Rule, target: str, stateful: bool) -> Diagnostic | None:
    """Return the error for a state match the target cannot express, or None.

    Targets that are not perimeter devices (pf) use this alone, without the
    interface checks of ``check_rules``.
    """
    return _state_problem(rule, target, stateful)


def _dedupe(problems: list[Diagnostic]) -> list[Diagnostic]:
    seen = set()
    out = []
    for problem in problems:
        key = (problem.message, str(problem.source))
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


# Address and port sets


def subtract_networks(networks: Iterable[Network], covered: Iterable[Network]) -> list[Network]:
    """Return the parts of ``networks`` outside ``covered``, as the fewest CIDRs."""
    remaining = list(networks)
    for block in covered:
        next_round: list[Network] = []
        for network in remaining:
            if network.version != block.version or not network.overlaps(block):
                next_round.append(network)
            elif block.supernet_of(network):  # type: ignore[arg-type]
                continue
            else:
                next_round.extend(network.address_exclude(block))  # type: ignore[arg-type]
        remaining = next_round
    by_version = []
    for version in (4, 6):
        same = [n for n in remaining if n.version == version]
        by_version.extend(ipaddress.collapse_addresses(same))  # type: ignore[arg-type]
    return by_version


def subtract_ports(ports: Iterable[PortRange], covered: Iterable[PortRange]) -> list[PortRange]:
    """Return the parts of ``ports`` outside ``covered``."""
    remaining = list(ports)
    for block in covered:
        next_round = []
        for item in remaining:
            if item.high < block.low or item.low > block.high:
                next_round.append(item)
                continue
            if item.low < block.low:
                next_round.append(PortRange(item.low, block.low - 1))
            if item.high > block.high:
                next_round.append(PortRange(block.high + 1, item.high))
        remaining = next_round
    return sorted(remaining)


def group_networks(graph: RuleGraph, group: str, family: str) -> tuple[Network, ...]:
    version = 4 if family == "ipv4" else 6
    return tuple(n for n in graph.host_groups[group].networks if n.version == version)


def rule_service_ports(graph: RuleGraph, rule: Rule) -> list[tuple[str, tuple[PortRange, ...]]]:
    """Return the named services behind the rule's destination ports, with their ports."""
    out = []
    for name in rule.services:
        node = graph.services.get(name)
        if node is not None and rule.protocol in node.ports:
            out.append((name, node.ports[rule.protocol]))
    return out


@dataclass(frozen=True)
class AddressOperand:
    """One side of an entry: a host group's networks of one family, or one network.

    ``group`` is set for a host group, ``network`` for a literal network, and
    neither for any address.
    """

    group: str | None = None
    family: str | None = None
    network: Network | None = None


@dataclass(frozen=True)
class PortOperand:
    """Destination ports of an entry: a named service's ports, or one literal range."""

    service: str | None = None
    ports: PortRange | None = None


def address_operands(graph: RuleGraph, rule: Rule, side: str) -> list[AddressOperand]:
    """Split one side of a rule into host groups plus the networks no group covers."""
    match = rule.saddr if side == "source" else rule.daddr
    if match is None or not match.networks:
        return [AddressOperand()]
    family = rule.family or "ipv4"
    operands = []
    covered: list[Network] = []
    for group in match.groups:
        networks = group_networks(graph, group, family)
        if networks:
            operands.append(AddressOperand(group=group, family=family))
            covered.extend(networks)
    for network in subtract_networks(match.networks, covered):
        operands.append(AddressOperand(network=network))
    return operands


def port_operands(graph: RuleGraph, rule: Rule) -> list[PortOperand]:
    """Split a rule's destination ports into named services plus the ports no service covers."""
    if not rule.dports:
        return [PortOperand()]
    operands = []
    covered: list[PortRange] = []
    for name, ports in rule_service_ports(graph, rule):
        operands.append(PortOperand(service=name))
        covered.extend(ports)
    for item in subtract_ports(rule.dports, covered):
        operands.append(PortOperand(ports=item))
    return operands


def group_object_name(graph: RuleGraph, group: str, family: str) -> str:
    """Name a host group's object for one family, with a family suffix only for mixed groups."""
    families = {("ipv4" if n.version == 4 else "ipv6") for n in graph.host_groups[group].networks}
    if len(families) == 1:
        return group
    return f"{group}-{'v4' if family == 'ipv4' else 'v6'}"


# Names and text


def fit_name(name: str, max_length: int) -> str:
    """Cut a name to ``max_length``, ending a cut name with a hash of the whole one.

    The hash keeps two long names that share a prefix apart and keeps the
    result stable for the same input.
    """
    if len(name) <= max_length:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name[: max_length - 9] + "-" + digest


def content_digest(*parts: Any) -> str:
    """Return a short hash of the parts' text, for names that must follow content."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:8]


def rule_fingerprint(rule: Rule) -> tuple:
    """Return the fields that decide what a rule matches and does, without its position."""
    return (
        rule.action,
        rule.reject_with,
        rule.families,
        rule.protocol,
        tuple(str(p) for p in rule.dports),
        tuple(str(p) for p in rule.sports),
        rule.icmp_types,
        tuple(str(n) for n in rule.saddr.networks) if rule.saddr else None,
        tuple(str(n) for n in rule.daddr.networks) if rule.daddr else None,
        rule.ct_states,
        rule.log,
    )


def printable_ascii(text: str, replacement: str = "_") -> str:
    """Replace every character outside printable ASCII with ``replacement``.

    Control characters (newlines above all) would end a configuration command
    early, and device command lines are ASCII.
    """
    return "".join(c if 32 <= ord(c) < 127 else replacement for c in text)


def source_reference(graph: RuleGraph, source: Source, text: str) -> str:
    """Return ``file:line: text`` for a comment that points back at the policy."""
    from exporters.common import output_path

    return f"{output_path(graph, source.file)}:{source.line}: {text}"


# Templates


@cache
def template_environment(filters: tuple[tuple[str, Any], ...]) -> Any:
    """Build the Jinja2 environment on first use, so that other targets never import Jinja2."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("exporters", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(dict(filters))
    return environment


def render_template(name: str, filters: dict[str, Any], **context: Any) -> str:
    """Render ``exporters/templates/NAME`` with the device's escaping filters."""
    environment = template_environment(tuple(sorted(filters.items())))
    return environment.get_template(name).render(**context)


def distinct_settings(
    graph: RuleGraph, target: str, values: dict[str, str], pairs: tuple[tuple[str, str], ...]
) -> list[Diagnostic]:
    """Report each pair of settings that must name different things but are equal."""
    node = graph.settings.get(target)
    source = node.source if node else None
    return [
        Diagnostic(
            f"{target} settings '{first}' and '{second}' must differ (both are '{values[first]}')",
            source,
        )
        for first, second in pairs
        if values[first] == values[second]
    ]


def reject_type_problems(graph: RuleGraph, target: str, reply: str) -> list[Diagnostic]:
    """Report each rule that chooses a reject type other than tcp-reset on a TCP rule.

    ``reply`` says what the device sends instead, for the message.
    """
    return [
        Diagnostic(
            f"{target} cannot express a chosen reject type (with {rule.reject_with}): {reply}",
            rule.source,
            "drop the 'with' clause",
        )
        for rule in graph.rules()
        if rule.reject_with and not (rule.reject_with == TCP_RESET and rule.protocol == "tcp")
    ]

