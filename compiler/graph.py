"""The rule graph: what every exporter receives instead of the syntax tree.

The graph has three base chains (input, forward, output), each with a default
verdict and an ordered list of rules, plus shared object nodes for named
services and host groups. Every node keeps the source position it came from.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Union

from compiler.errors import Source

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

FAMILIES = ("ipv4", "ipv6")
CHAINS = ("input", "forward", "output")
DIRECTION_CHAINS = {"in": "input", "fwd": "forward", "out": "output"}
ACTIONS = ("accept", "drop", "reject")


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of port numbers; a single port has ``low == high``."""

    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    @property
    def size(self) -> int:
        return self.high - self.low + 1


def normalize_ports(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sort port ranges and merge those that overlap or touch."""
    merged: list[PortRange] = []
    for item in sorted(ranges):
        if merged and item.low <= merged[-1].high + 1:
            last = merged[-1]
            merged[-1] = PortRange(last.low, max(last.high, item.high))
        else:
            merged.append(item)
    return tuple(merged)


def network_family(network: Network) -> str:
    return "ipv4" if network.version == 4 else "ipv6"


def normalize_networks(networks: Iterable[Network]) -> tuple[Network, ...]:
    """Merge networks per family into the fewest CIDRs, IPv4 first."""
    items = list(networks)
    if len(items) <= 1:
        # The common case of a single network needs no collapsing.
        return tuple(items)
    out: list[Network] = []
    for version in (4, 6):
        same = [n for n in items if n.version == version]
        out.extend(ipaddress.collapse_addresses(same))  # type: ignore[arg-type]
    return tuple(out)


@dataclass
class ServiceNode:
    """A named service: protocol to port ranges, from the catalog or a definition."""

    name: str
    ports: dict[str, tuple[PortRange, ...]]
    source: Source | None = None
    builtin: bool = False


@dataclass
class HostGroupNode:
    """A named group of networks from a ``hosts`` definition."""

    name: str
    networks: tuple[Network, ...]
    source: Source


@dataclass(frozen=True)
class AddressMatch:
    """The networks a rule matches on one side, possibly negated.

    ``groups`` names the host groups the networks came from, so that targets
    with named objects (ipsets, address books) can refer to them.
    """

    networks: tuple[Network, ...]
    negated: bool = False
    groups: tuple[str, ...] = ()

    @functools.cached_property
    def _by_family(self) -> dict[str, "AddressMatch"]:
        # Computed once: a large host group is split for every rule that uses it.
        split: dict[str, list[Network]] = {}
        for network in self.networks:
            split.setdefault(network_family(network), []).append(network)
        if len(split) == 1:
            return {family: self for family in split}
        return {f: AddressMatch(tuple(n), self.negated, self.groups) for f, n in split.items()}

    def for_family(self, family: str) -> "AddressMatch":
        if len(self.networks) == 1:
            if network_family(self.networks[0]) == family:
                return self
            return AddressMatch((), self.negated, self.groups)
        found = self._by_family.get(family)
        return found if found is not None else AddressMatch((), self.negated, self.groups)

    def families(self) -> set[str]:
        if len(self.networks) == 1:
            return {network_family(self.networks[0])}
        return set(self._by_family)


@dataclass(frozen=True)
class RateLimit:
    """A token-bucket limit: ``rate`` packets per ``unit``, with ``burst``."""

    rate: int
    unit: str
    burst: int | None = None


@dataclass
class Rule:
    """One rule of a base chain, after every pass.

    A rule applies to each family in ``families``. Address matches are set
    only on rules of a single family, because the passes split rules by family
    whenever they name addresses.
    """

    chain: str
    action: str
    families: tuple[str, ...]
    source: Source
    text: str
    protocol: str | None = None
    dports: tuple[PortRange, ...] = ()
    sports: tuple[PortRange, ...] = ()
    icmp_types: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    saddr: AddressMatch | None = None
    daddr: AddressMatch | None = None
    in_interface: str | None = None
    out_interface: str | None = None
    ct_states: tuple[str, ...] = ()
    log: bool = False
    log_prefix: str | None = None
    limit: RateLimit | None = None
    comment: str | None = None
    reject_with: str | None = None

    @property
    def family(self) -> str | None:
        """The single family of the rule, or None when it applies to both."""
        return self.families[0] if len(self.families) == 1 else None


@dataclass(frozen=True)
class TargetSetting:
    """One ``KEY = VALUE`` entry of a ``target NAME { ... }`` block.

    ``kind`` is "name", "int" or "string", after the token the value was
    written as; ``value`` is its text, unquoted. ``source`` points at the key
    and ``value_source`` at the value, so that errors can point at either.
    """

    value: str
    kind: str
    source: Source
    value_source: Source


@dataclass
class TargetSettingsNode:
    """The settings of one target block, by key, with the block's position."""

    target: str
    entries: dict[str, TargetSetting]
    source: Source


@dataclass
class Chain:
    """A base chain: its hook name, default verdict and ordered rules."""

    name: str
    policy: str = "accept"
    policy_source: Source | None = None
    rules: list[Rule] = field(default_factory=list)


@dataclass
class RuleGraph:
    """The compiled policy: named chains and the shared object nodes."""

    name: str
    main_file: str
    chains: dict[str, Chain]
    services: dict[str, ServiceNode]
    host_groups: dict[str, HostGroupNode]
    files: tuple[str, ...] = ()
    warnings: list = field(default_factory=list)
    name_source: Source | None = None
    settings: dict[str, TargetSettingsNode] = field(default_factory=dict)

    def rules(self) -> Iterable[Rule]:
        for chain_name in CHAINS:
            yield from self.chains[chain_name].rules


def _address_json(match: AddressMatch | None):
    if match is None:
        return None
    return {
        "networks": [str(n) for n in match.networks],
        "negated": match.negated,
        "groups": list(match.groups),
    }


def _source_json(source: Source | None):
    if source is None:
        return None
    return {"file": source.file, "line": source.line, "column": source.column}


def graph_to_json(graph: RuleGraph) -> dict:
    """Convert the rule graph to plain JSON data, in a stable order."""
    chains = {}
    for name in CHAINS:
        chain = graph.chains[name]
        chains[name] = {
            "policy": chain.policy,
            "policy_source": _source_json(chain.policy_source),
            "rules": [_rule_json(rule) for rule in chain.rules],
        }
    return {
        "format": "polywall-rule-graph",
        "version": 1,
        "policy": graph.name,
        "chains": chains,
        "services": {
            name: {
                "ports": {p: [str(r) for r in rs] for p, rs in sorted(node.ports.items())},
                "builtin": node.builtin,
                "source": _source_json(node.source),
            }
            for name, node in sorted(graph.services.items())
        },
        "host_groups": {
            name: {
                "networks": [str(n) for n in node.networks],
                "source": _source_json(node.source),
            }
            for name, node in sorted(graph.host_groups.items())
        },
        "settings": {
            target: {
                "source": _source_json(node.source),
                "entries": {
                    key: {
                        "value": setting.value,
                        "kind": setting.kind,
                        "source": _source_json(setting.source),
                    }
                    for key, setting in sorted(node.entries.items())
                },
            }
            for target, node in sorted(graph.settings.items())
        },
    }


def _rule_json(rule: Rule) -> dict:
    return {
        "source": _source_json(rule.source),
        "text": rule.text,
        "action": rule.action,
        "reject_with": rule.reject_with,
        "families": list(rule.families),
        "protocol": rule.protocol,
        "dports": [str(r) for r in rule.dports],
        "sports": [str(r) for r in rule.sports],
        "icmp_types": list(rule.icmp_types),
        "services": list(rule.services),
        "saddr": _address_json(rule.saddr),
        "daddr": _address_json(rule.daddr),
        "in_interface": rule.in_interface,
        "out_interface": rule.out_interface,
        "ct_states": list(rule.ct_states),
        "log": rule.log,
        "log_prefix": rule.log_prefix,
        "limit": None
        if rule.limit is None
        else {"rate": rule.limit.rate, "unit": rule.limit.unit, "burst": rule.limit.burst},
        "comment": rule.comment,
    }
