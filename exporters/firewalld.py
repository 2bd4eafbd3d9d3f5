"""firewalld exporter: a configuration tree for /etc/firewalld and the same tree as a script.

The input chain becomes the zone named after the policy, whose target carries the
input default. Output rules become the policy ``NAME-out`` (ingress HOST, egress ANY),
and forward rules the policy ``NAME-fwd`` (ingress the zone, egress ANY). Each policy
target carries its chain's default. Host groups become ipsets, and services that
firewalld does not ship with the same ports become custom services. ``firewall-cmd.sh``
builds the same configuration with ``firewall-cmd --permanent``.

firewalld evaluates a zone or policy in this order. Rich rules with a negative
priority run first. Rich rules of priority 0 follow, grouped by kind (log, deny,
allow), together with the service, port, protocol and source-port elements. Rich rules
with a positive priority and the target come last. The exporter gives every rich rule
a non-zero priority, increasing in policy order, and turns a plain allow into an
element only where that keeps the first matching rule first.

Facts about firewalld come from firewalld.zone(5), firewalld.policy(5),
firewalld.policies(5) and firewalld.richlanguage(5) of firewalld 1.3.3, and from its
sources as packaged in Debian 12 (/usr/lib/python3/dist-packages/firewall/, nftables
backend). docs/targets/firewalld.md explains the mapping.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from xml.sax.saxutils import escape

from compiler import capabilities
from compiler.catalog import REJECT_TYPES, TCP_RESET
from compiler.errors import Diagnostic, PolicyError, Source
from compiler.graph import (
    AddressMatch,
    Chain,
    Network,
    PortRange,
    Rule,
    RuleGraph,
    ServiceNode,
    network_family,
    normalize_ports,
)
from compiler.hookspecs import hookimpl
from exporters.common import header_lines, output_path, source_reference

TARGET = "firewalld"
SCRIPT = "firewall-cmd.sh"

# Zone and policy names: at most 17 characters, because firewalld builds chain names
# such as POST_<name>_allow within netfilter's 28 (functions.max_zone_name_len).
MAX_OBJECT_NAME = 17
MAX_IPSET_NAME = 32  # firewall.core.ipset.IPSET_MAXNAMELEN
# firewalld.richlanguage(5) allows 127 characters, and nft_log keeps 127 bytes.
MAX_LOG_PREFIX = 127
PRIORITY_MIN, PRIORITY_MAX = -32768, 32767  # firewalld.richlanguage(5)
# Negative, so that firewalld dispatches the forward policy before the zone's own
# forward chain and target (POLICIES_pre in the nftables backend).
POLICY_PRIORITY = -100
# firewalld reads a log prefix back through shlex and splits attributes at '=', so
# these characters break or change the prefix (firewall.core.rich.Rich_Rule._lexer).
LOG_PREFIX_UNSAFE = '"\\='
# Zones shipped in /usr/lib/firewalld/zones, and the symbolic zones of policies.
SHIPPED_ZONES = frozenset(
    {"block", "dmz", "drop", "external", "home", "internal", "public", "trusted", "work"}
)
SYMBOLIC_ZONES = frozenset({"ANY", "HOST"})

ZONE_TARGETS = {"accept": "ACCEPT", "drop": "DROP", "reject": "%%REJECT%%"}
POLICY_TARGETS = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT"}
LIMIT_UNITS = {"second": "s", "minute": "m", "hour": "h", "day": "d"}
IPSET_FAMILIES = {"ipv4": ("v4", "inet"), "ipv6": ("v6", "inet6")}
PROTOCOL_NAMES = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}
ESTABLISHED = frozenset({"established", "related"})

# polywall ICMP type -> firewalld icmptype (/usr/lib/firewalld/icmptypes). The ICMPv6
# MLD types have no firewalld icmptype, and the nftables backend accepts only the
# names of its own table (nftables.ICMP_TYPES_FRAGMENTS), so they cannot be added.
ICMP_NAMES = {
    "icmp": {
        name: name
        for name in (
            "echo-reply", "destination-unreachable", "source-quench", "redirect",
            "echo-request", "router-advertisement", "router-solicitation", "time-exceeded",
            "parameter-problem", "timestamp-request", "timestamp-reply",
        )
    },
    "icmpv6": {
        "destination-unreachable": "destination-unreachable",
        "packet-too-big": "packet-too-big",
        "time-exceeded": "time-exceeded",
        "parameter-problem": "parameter-problem",
        "echo-request": "echo-request",
        "echo-reply": "echo-reply",
        "router-solicitation": "router-solicitation",
        "router-advertisement": "router-advertisement",
        "neighbor-solicitation": "neighbour-solicitation",
        "neighbor-advertisement": "neighbour-advertisement",
        "redirect": "redirect",
    },
}

NOTE_ESTABLISHED = (
    "left out: firewalld accepts established and related traffic before any zone or policy rule"
)
NOTE_LOOPBACK = "left out: firewalld accepts all loopback (lo) traffic before any zone or policy rule"
NOTE_INVALID = "left out: firewalld drops invalid packets of input and forward before any rule"
FIREWALLD_ADDS = (
    "Before these rules, firewalld accepts established and related traffic and loopback (lo) "
    "traffic, accepts DNATed connections, and drops invalid packets (input and forward). Its "
    "shipped policy allow-host-ipv6 accepts IPv6 neighbour discovery, router advertisements "
    "and redirects to the host."
)
ORDER_NOTE = (
    "firewalld runs rich rules with a negative priority first, then the service, port, "
    "protocol and source-port elements, then rich rules with a positive priority, then the "
    "target. This file lists them in policy order."
)

# "in-interface", "out-interface" and "conntrack-states" are listed only for the rules
# that firewalld already applies itself ("allow on lo", "allow established", "drop
# state invalid"), and check() rejects every other use of them.
CAPABILITIES = capabilities.ALL - {"rate-limit-burst", "interface-wildcard"}


class FirewalldExporter:
    name = TARGET
    description = "firewalld 1.3 tree (zone, policies, services, ipsets) and a firewall-cmd script"
    capabilities = CAPABILITIES

    def check(self, graph: RuleGraph) -> list[Diagnostic]:
        """List the firewalld limits that no capability name states."""
        return plan(graph).problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        """Return the firewalld tree and firewall-cmd.sh, raising PolicyError if check fails."""
        tree = plan(graph)
        if tree.problems:
            raise PolicyError(tree.problems)
        files = {}
        files[f"zones/{tree.zone.name}.xml"] = _container_xml(graph, tree.zone)
        for policy in tree.policies:
            files[f"policies/{policy.name}.xml"] = _container_xml(graph, policy)
        for service in tree.services:
            files[f"services/{service.name}.xml"] = _service_xml(graph, service)
        for ipset in tree.ipsets:
            files[f"ipsets/{ipset.name}.xml"] = _ipset_xml(graph, ipset)
        files[SCRIPT] = _script(graph, tree)
        return dict(sorted(files.items()))


# The firewalld objects


@dataclass(frozen=True)
class Element:
    """A firewalld match: service, port, protocol, source-port or icmp-type."""

    kind: str
    value: str
    protocol: str | None = None

    def xml(self) -> str:
        if self.kind in ("port", "source-port"):
            return f'<{self.kind} port="{self.value}" protocol="{self.protocol}"/>'
        attribute = "value" if self.kind == "protocol" else "name"
        return f"<{self.kind} {attribute}={_attr(self.value)}/>"

    def rich(self) -> str:
        if self.kind in ("port", "source-port"):
            return f'{self.kind} port="{self.value}" protocol="{self.protocol}"'
        attribute = "value" if self.kind == "protocol" else "name"
        return f'{self.kind} {attribute}="{self.value}"'

    def option(self) -> str:
        """Return the firewall-cmd option that adds this plain element to a zone or policy.

        Only service, port, protocol and source-port elements stand outside rich rules.
        """
        value = f"{self.value}/{self.protocol}" if self.protocol else self.value
        return f"--add-{self.kind}={value}"


@dataclass(frozen=True)
class Address:
    """The source or destination of a rich rule: one network or one ipset."""

    kind: str  # "address" or "ipset"
    value: str
    invert: bool = False


@dataclass(frozen=True)
class RichRule:
    """One firewalld rich rule; ``text()`` is the rich language form firewalld prints."""

    priority: int
    action: str
    family: str | None = None
    source: Address | None = None
    destination: Address | None = None
    element: Element | None = None
    log: bool = False
    log_prefix: str | None = None
    limit: str | None = None
    reject_type: str | None = None

    def text(self) -> str:
        words = ["rule", f'priority="{self.priority}"']
        if self.family:
            words.append(f'family="{self.family}"')
        for keyword, address in (("source", self.source), ("destination", self.destination)):
            if address is not None:
                words.append(keyword + (" NOT" if address.invert else ""))
                words.append(f'{address.kind}="{address.value}"')
        if self.element is not None:
            words.append(self.element.rich())
        if self.log:
            words.append("log")
            if self.log_prefix:
                words.append(f'prefix="{self.log_prefix}"')
            if self.limit:
                words.append(f'limit value="{self.limit}"')
        words.append(self.action)
        if self.reject_type:
            words.append(f'type="{self.reject_type}"')
        if self.limit:
            words.append(f'limit value="{self.limit}"')
        return " ".join(words)

    def xml_lines(self) -> list[str]:
        head = f'<rule priority="{self.priority}"'
        if self.family:
            head += f' family="{self.family}"'
        lines = [head + ">"]
        for tag, address in (("source", self.source), ("destination", self.destination)):
            if address is not None:
                invert = ' invert="True"' if address.invert else ""
                lines.append(f"  <{tag} {address.kind}={_attr(address.value)}{invert}/>")
        if self.element is not None:
            lines.append("  " + self.element.xml())
        limit = f'<limit value="{self.limit}"/>' if self.limit else ""
        if self.log:
            prefix = f" prefix={_attr(self.log_prefix)}" if self.log_prefix else ""
            lines.append(f"  <log{prefix}>{limit}</log>" if limit else f"  <log{prefix}/>")
        reject = f' type="{self.reject_type}"' if self.reject_type else ""
        action = f"<{self.action}{reject}"
        lines.append(f"  {action}>{limit}</{self.action}>" if limit else f"  {action}/>")
        lines.append("</rule>")
        return lines


@dataclass
class Entry:
    """One policy statement in a zone or policy: its elements and rich rules, or a note."""

    reference: str
    statement: tuple
    note: str | None = None
    elements: list[Element] = field(default_factory=list)
    rich_rules: list[RichRule] = field(default_factory=list)


@dataclass
class Container:
    """A zone or a policy with its target and entries in policy order."""

    kind: str  # "zone" or "policy"
    name: str
    chain: Chain
    target: str
    description: str
    entries: list[Entry] = field(default_factory=list)
    ingress: str | None = None
    egress: str | None = None


@dataclass
class CustomService:
    """A service file under services/: its firewalld name and the polywall service."""

    name: str
    node: ServiceNode


@dataclass
class Ipset:
    """An ipset file under ipsets/: the networks of one host group in one family."""

    name: str
    group: str
    family: str
    networks: tuple[Network, ...]


@dataclass
class Tree:
    """Everything the exporter writes, or the problems that prevent it."""

    zone: Container
    policies: list[Container]
    services: list[CustomService]
    ipsets: list[Ipset]
    problems: list[Diagnostic]


# Planning


def plan(graph: RuleGraph) -> Tree:
    """Map the rule graph to firewalld objects and collect every problem on the way."""
    planner = _Planner(graph)
    return planner.build()


class _Planner:
    def __init__(self, graph: RuleGraph):
        self.graph = graph
        self.problems: list[Diagnostic] = []
        self.seen: set[tuple[str, str]] = set()
        self.ipsets = _ipsets(graph)
        self.ipset_names = {(i.group, i.family): i.name for i in self.ipsets}
        self.service_names = _service_names(graph)
        self.used_services: dict[str, ServiceNode] = {}

    def fail(self, message: str, source, hint: str | None = None) -> None:
        """Record a problem once, although a statement may yield several rules."""
        diagnostic = Diagnostic(f"{TARGET} cannot express {message}", source, hint)
        key = (diagnostic.message, str(source))
        if key not in self.seen:
            self.seen.add(key)
            self.problems.append(diagnostic)

    def build(self) -> Tree:
        self._check_names()
        self._check_settings()
        containers = [self._zone(), *self._policies()]
        for container in containers:
            self._fill(container)
        services = [CustomService(n, node) for n, node in sorted(self.used_services.items())]
        return Tree(containers[0], containers[1:], services, self.ipsets, self.problems)

    def _zone(self) -> Container:
        name = self.graph.name
        chain = self.graph.chains["input"]
        description = f"Input rules of polywall policy {name}: traffic from this zone to the host."
        return Container("zone", name, chain, ZONE_TARGETS[chain.policy], description)

    def _policies(self) -> list[Container]:
        name = self.graph.name
        policies = []
        if _needs_output_policy(self.graph):
            chain = self.graph.chains["output"]
            description = f"Output rules of polywall policy {name}: traffic from the host to any zone."
            policies.append(
                Container("policy", f"{name}-out", chain, POLICY_TARGETS[chain.policy],
                          description, ingress="HOST", egress="ANY")
            )
        if _needs_forward_policy(self.graph):
            chain = self.graph.chains["forward"]
            description = (
                f"Forward rules of polywall policy {name}: traffic from zone {name} to any zone."
            )
            policies.append(
                Container("policy", f"{name}-fwd", chain, POLICY_TARGETS[chain.policy],
                          description, ingress=name, egress="ANY")
            )
        for policy in policies:
            if len(policy.name) > MAX_OBJECT_NAME:
                self.fail(
                    f"a policy name longer than {MAX_OBJECT_NAME - 4} characters when the policy "
                    f"has out or fwd rules: the firewalld policy '{policy.name}' would have "
                    f"{len(policy.name)} characters, and firewalld allows {MAX_OBJECT_NAME}",
                    _policy_source(self.graph),
                    "shorten the name after 'policy'",
                )
        return policies

    def _check_names(self) -> None:
        name = self.graph.name
        if len(name) > MAX_OBJECT_NAME:
            self.fail(
                f"a policy name longer than {MAX_OBJECT_NAME} characters: it names the zone, and "
                f"'{name}' has {len(name)}",
                _policy_source(self.graph),
                "shorten the name after 'policy'",
            )
        if name in SHIPPED_ZONES or name in SYMBOLIC_ZONES:
            self.fail(
                f"a policy named '{name}': firewalld ships or reserves a zone of that name",
                _policy_source(self.graph),
                "choose another name after 'policy'",
            )
        for ipset in self.ipsets:
            if len(ipset.name) > MAX_IPSET_NAME:
                node = self.graph.host_groups[ipset.group]
                self.fail(
                    f"host group '{ipset.group}': its ipset name '{ipset.name}' is longer than "
                    f"{MAX_IPSET_NAME} characters",
                    node.source,
                    "shorten the host group's name",
                )

    def _check_settings(self) -> None:
        node = self.graph.settings.get(TARGET)
        if node is None:
            return
        for key, setting in node.entries.items():
            self.problems.append(
                Diagnostic(
                    f"unknown setting '{key}' for target {TARGET}",
                    setting.source,
                    f"{TARGET} has no settings; remove the entry",
                )
            )

    # One zone or policy

    def _fill(self, container: Container) -> None:
        """Plan the entries of a zone or policy in policy order."""
        entries: list[Entry] = []
        units: list[_Unit] = []
        for rule in container.chain.rules:
            statement = (rule.source.file, rule.source.line, rule.source.column)
            if not entries or entries[-1].statement != statement:
                entries.append(Entry(source_reference(self.graph, rule), statement))
            entry = entries[-1]

            note = _redundant(rule)
            if note is not None:
                entry.note = note
                continue
            if self._rule_problems(rule):
                continue

            key = _unit_key(rule)
            unit = None
            for candidate in reversed(units):
                if candidate.statement != statement:
                    break
                if candidate.key == key:
                    unit = candidate
                    break
            if unit is None:
                units.append(_Unit(statement, key, [rule], entry))
            else:
                unit.rules.append(rule)

        self._order(units, container)
        seen_elements: set[Element] = set()
        for unit in units:
            self._emit(unit, seen_elements)
        container.entries = entries

    def _order(self, units: list[_Unit], container: Container) -> None:
        """Choose which plain allows become elements and number the rich rules."""
        for unit in units:
            unit.plain = _is_plain(unit.rules)
        pivot = _pivot(units)
        before = [u for i, u in enumerate(units) if i < pivot and not u.as_elements]
        after = [u for i, u in enumerate(units) if i >= pivot and not u.as_elements]
        # Rich units of one statement share a priority: they have the same action and
        # differ only in family, protocol or ports, so their order does not matter.
        before_ranks = _statement_ranks(before)
        after_ranks = _statement_ranks(after)
        count_before = before_ranks[-1] + 1 if before_ranks else 0
        for unit, rank in zip(before, before_ranks):
            unit.priority = rank - count_before
        for unit, rank in zip(after, after_ranks):
            unit.priority = rank + 1
        count_after = after_ranks[-1] + 1 if after_ranks else 0
        overflow = None
        if count_before > -PRIORITY_MIN:
            overflow = before[0]
        elif count_after > PRIORITY_MAX:
            overflow = after[after_ranks.index(PRIORITY_MAX)]
        if overflow is not None:
            self.fail(
                f"more than {PRIORITY_MAX} rich rule priorities on one side of the plain "
                f"elements in {container.kind} {container.name}",
                overflow.rules[0].source,
                "merge rules that share addresses into host groups",
            )

    def _emit(self, unit: _Unit, seen_elements: set[Element]) -> None:
        """Fill the unit's entry with elements, or with rich rules."""
        first = unit.rules[0]
        references: list[Element] = []
        remaining: dict[int, tuple[PortRange, ...]] = {}
        # A rate limit must stay one rich rule per polywall rule, so no services.
        if first.limit is None:
            references, remaining = self._service_references(unit)
        per_rule = [_rule_elements(rule, remaining.get(id(rule))) for rule in unit.rules]

        if unit.as_elements:
            for element in [*references, *(e for items in per_rule for e in items)]:
                if element is not None and element not in seen_elements:
                    seen_elements.add(element)
                    unit.entry.elements.append(element)
            return

        variants = _family_variants(first)
        sources = self._addresses(first.saddr, first.family)
        destinations = self._addresses(first.daddr, first.family)
        if first.limit is not None:
            counts = [len(variants) * len(sources) * len(destinations) * len(e) for e in per_rule]
            if max(counts) > 1:
                self.fail(
                    f"this rate limit: the rule needs {max(counts)} rich rules (one per port "
                    "range, address, ICMP type or family), and firewalld keeps a separate "
                    "limit for each",
                    first.source,
                    "give a rate-limited rule one port range, one address and one family",
                )
                return

        elements: list[Element | None] = [*references, *(e for items in per_rule for e in items)]
        for family, reject_type in variants:
            for source in sources:
                for destination in destinations:
                    for element in elements:
                        unit.entry.rich_rules.append(
                            RichRule(
                                priority=unit.priority,
                                action=first.action,
                                family=family,
                                source=source,
                                destination=destination,
                                element=element,
                                log=first.log,
                                log_prefix=first.log_prefix,
                                limit=_limit(first),
                                reject_type=reject_type,
                            )
                        )

    def _addresses(self, match: AddressMatch | None, family: str | None) -> list[Address | None]:
        if match is None or not match.networks:
            return [None]
        if len(match.groups) == 1 and family is not None:
            group = self.graph.host_groups.get(match.groups[0])
            name = self.ipset_names.get((match.groups[0], family))
            if group is not None and name is not None:
                networks = tuple(n for n in group.networks if network_family(n) == family)
                if networks == match.networks:
                    return [Address("ipset", name, match.negated)]
        return [Address("address", str(n), match.negated) for n in match.networks]

    def _service_references(
        self, unit: _Unit
    ) -> tuple[list[Element], dict[int, tuple[PortRange, ...]]]:
        """Return the service elements a unit can use and the ports left to each rule.

        A service is used by name only when the statement matches all of its ports,
        over every protocol the service has. Otherwise its ports stay port elements.
        """
        by_protocol = {rule.protocol: rule for rule in unit.rules if not rule.sports}
        references: list[Element] = []
        covered: dict[str, list[PortRange]] = {}
        for rule in unit.rules:
            for service in rule.services:
                node = self.graph.services.get(service)
                firewalld_name = self.service_names.get(service)
                if node is None or firewalld_name is None:
                    continue
                whole = all(
                    protocol in by_protocol and service in by_protocol[protocol].services
                    for protocol in node.ports
                )
                element = Element("service", firewalld_name)
                if not whole or element in references:
                    continue
                references.append(element)
                if shipped_services().get(firewalld_name) != port_key(node.ports):
                    self.used_services[firewalld_name] = node
                for protocol, ranges in node.ports.items():
                    covered.setdefault(protocol, []).extend(ranges)
        remaining = {
            id(rule): _subtract(rule.dports, covered[rule.protocol])
            for rule in unit.rules
            if rule.dports and rule.protocol in covered
        }
        return references, remaining

    def _rule_problems(self, rule: Rule) -> bool:
        """Report what firewalld cannot express in one rule; return True if anything."""
        count = len(self.problems)
        self._match_problems(rule)
        self._log_and_limit_problems(rule)
        return len(self.problems) > count

    def _match_problems(self, rule: Rule) -> None:
        for interface, direction in ((rule.in_interface, "incoming"),
                                     (rule.out_interface, "outgoing")):
            # A wildcard already fails the capability check.
            if interface and not interface.endswith("+"):
                self.fail(
                    f"an {direction} interface match (on {interface}): firewalld matches "
                    "interfaces by binding them to a zone, and accepts only loopback traffic "
                    "by itself",
                    rule.source,
                    f"bind {interface} to the zone (firewall-cmd --zone=ZONE "
                    f"--change-interface={interface}) and drop the interface from the rule",
                )

        if rule.ct_states:
            self.fail(
                "connection tracking states in this rule: firewalld itself accepts "
                "established and related traffic and drops invalid packets (input and "
                "forward), so only 'allow established' and 'drop state invalid' can stay, "
                "as notes",
                rule.source,
                "remove the state match",
            )

        if rule.sports and rule.dports:
            self.fail(
                "source and destination ports in one rule: a rich rule has a single port or "
                "source-port element",
                rule.source,
                "match either the source port or the destination port",
            )

        for icmp_type in rule.icmp_types:
            if icmp_type not in ICMP_NAMES.get(rule.protocol or "", {}):
                self.fail(
                    f"{rule.protocol} type {icmp_type}: firewalld 1.3 has no icmptype for it",
                    rule.source,
                )

    def _log_and_limit_problems(self, rule: Rule) -> None:
        if rule.limit and rule.limit.rate == 1 and rule.limit.unit == "day":
            self.fail(
                "a rate limit of 1/day: firewalld rejects it as too slow",
                rule.source,
                "use 2/day or more",
            )

        prefix = rule.log_prefix or ""
        size = len(prefix.encode())
        if size > MAX_LOG_PREFIX:
            self.fail(
                f"a log prefix longer than {MAX_LOG_PREFIX} bytes (this one has {size}, with "
                "the trailing space)",
                rule.source,
            )

        unsafe = sorted({c for c in prefix if c in LOG_PREFIX_UNSAFE})
        if unsafe:
            characters = " ".join(repr(c) for c in unsafe)
            self.fail(
                f"a log prefix with {characters}: firewalld's rich rule parser splits or "
                "unquotes it",
                rule.source,
                "remove these characters from the log prefix",
            )


def _policy_source(graph: RuleGraph) -> Source | None:
    """Find the 'policy NAME' statement in the policy's files, for errors about the name.

    The rule graph keeps no position for the name, so this searches the files.
    """
    # NOTE: a string that contains "; policy NAME" could match first; errors then
    # point at that line, which still names the policy.
    pattern = re.compile(r"(?:^|;)\s*policy\s+" + re.escape(graph.name) + r"(?![\w.-])")
    for file in graph.files or (graph.main_file,):
        try:
            with open(file, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, start=1):
            found = pattern.search(line.split("#", 1)[0])
            if found:
                start = line.index("policy", found.start())
                return Source(file, number, start + 1, found.end() + 1)
    return None


@dataclass
class _Unit:
    """The rules of one statement that differ only in protocol and ports.

    They share one priority and become elements together or rich rules together.
    """

    statement: tuple
    key: tuple
    rules: list[Rule]
    entry: Entry
    plain: bool = False
    as_elements: bool = False
    priority: int = 0


def _statement_ranks(units: list[_Unit]) -> list[int]:
    """Number units in order, giving consecutive units of one statement the same number."""
    ranks: list[int] = []
    for index, unit in enumerate(units):
        if index == 0:
            ranks.append(0)
        elif unit.statement == units[index - 1].statement:
            ranks.append(ranks[-1])
        else:
            ranks.append(ranks[-1] + 1)
    return ranks


def _unit_key(rule: Rule) -> tuple:
    return (
        rule.action, rule.families, rule.saddr, rule.daddr, rule.sports, rule.log,
        rule.log_prefix, rule.limit, rule.reject_with, rule.in_interface, rule.out_interface,
        rule.ct_states,
    )


def _redundant(rule: Rule) -> str | None:
    """Return a note when firewalld already does what the rule does, before any rule."""
    if rule.log or rule.limit is not None:
        return None
    if rule.action == "accept":
        if rule.ct_states and set(rule.ct_states) <= ESTABLISHED:
            return NOTE_ESTABLISHED
        loopback = {
            "input": rule.in_interface == "lo" and rule.out_interface is None,
            "forward": rule.in_interface == "lo",
            "output": rule.out_interface == "lo",
        }
        if loopback[rule.chain]:
            return NOTE_LOOPBACK
    if rule.action == "drop" and rule.chain != "output" and set(rule.ct_states) == {"invalid"}:
        return NOTE_INVALID
    return None


def _is_plain(rules: list[Rule]) -> bool:
    """Tell whether rules can be zone or policy elements: accepts with ports or a protocol."""
    for rule in rules:
        if rule.action != "accept" or rule.log or rule.limit is not None:
            return False
        if rule.saddr is not None or rule.daddr is not None or rule.icmp_types:
            return False
        if rule.protocol is None or rule.in_interface or rule.out_interface or rule.ct_states:
            return False
    return True


def _pivot(units: list[_Unit]) -> int:
    """Choose where the elements sit among the rich rules, and mark the element units.

    Moving a plain allow to the pivot lets it pass the units in between. That keeps
    the first match only when none of them overlaps it, except other plain allows,
    which have the same effect. Each plain unit thus has an interval of valid pivots;
    the pivot covered by the most intervals wins, the earliest among equals.
    """
    count = len(units)
    intervals: list[tuple[int, int] | None] = []
    for index, unit in enumerate(units):
        if not unit.plain:
            intervals.append(None)
            continue
        low, high = 0, count
        for other in range(index - 1, -1, -1):
            if not units[other].plain and _units_overlap(unit, units[other]):
                low = other + 1
                break
        for other in range(index + 1, count):
            if not units[other].plain and _units_overlap(unit, units[other]):
                high = other
                break
        intervals.append((low, high))
    best, best_count = 0, -1
    for position in range(count + 1):
        covered = sum(1 for i in intervals if i is not None and i[0] <= position <= i[1])
        if covered > best_count:
            best, best_count = position, covered
    for unit, interval in zip(units, intervals):
        unit.as_elements = interval is not None and interval[0] <= best <= interval[1]
    return best


def _units_overlap(a: _Unit, b: _Unit) -> bool:
    return any(_rules_overlap(x, y) for x in a.rules for y in b.rules)


def _rules_overlap(a: Rule, b: Rule) -> bool:
    """Tell whether some packet may match both rules; True when unsure."""
    if not set(a.families) & set(b.families):
        return False
    if a.protocol and b.protocol and a.protocol != b.protocol:
        return False
    if a.protocol is not None and a.protocol == b.protocol:
        if a.dports and b.dports and not _ranges_meet(a.dports, b.dports):
            return False
        if a.sports and b.sports and not _ranges_meet(a.sports, b.sports):
            return False
        if a.icmp_types and b.icmp_types and not set(a.icmp_types) & set(b.icmp_types):
            return False
    for x, y in ((a.saddr, b.saddr), (a.daddr, b.daddr)):
        if _networks_apart(x, y):
            return False
    return True


def _networks_apart(x: AddressMatch | None, y: AddressMatch | None) -> bool:
    """Tell whether two address matches share no address; False when unsure (negations)."""
    if not (x and y and x.networks and y.networks) or x.negated or y.negated:
        return False
    return not any(n.overlaps(m) for n in x.networks for m in y.networks)  # type: ignore[arg-type]


def _ranges_meet(a: tuple[PortRange, ...], b: tuple[PortRange, ...]) -> bool:
    return any(x.low <= y.high and y.low <= x.high for x in a for y in b)


def _subtract(ranges: tuple[PortRange, ...], removed: list[PortRange]) -> tuple[PortRange, ...]:
    """Return the ports of ranges that are not in removed."""
    result: list[PortRange] = []
    for item in ranges:
        pieces = [item]
        for cut in normalize_ports(removed):
            next_pieces = []
            for piece in pieces:
                if cut.high < piece.low or cut.low > piece.high:
                    next_pieces.append(piece)
                    continue
                if piece.low < cut.low:
                    next_pieces.append(PortRange(piece.low, cut.low - 1))
                if cut.high < piece.high:
                    next_pieces.append(PortRange(cut.high + 1, piece.high))
            pieces = next_pieces
        result.extend(pieces)
    return tuple(result)


def _rule_elements(rule: Rule, dports: tuple[PortRange, ...] | None = None) -> list[Element | None]:
    """Return the elements of one rule: one per port range or ICMP type, or its protocol.

    ``dports`` replaces the rule's destination ports after service elements took
    some of them; an empty tuple means the services took them all.
    """
    protocol = rule.protocol
    if protocol is None:
        return [None]
    if protocol in ("icmp", "icmpv6"):
        if rule.icmp_types:
            return [Element("icmp-type", ICMP_NAMES[protocol][t]) for t in rule.icmp_types]
        return [Element("protocol", PROTOCOL_NAMES[protocol])]
    if rule.sports:
        return [Element("source-port", str(r), protocol) for r in rule.sports]
    ports = rule.dports if dports is None else dports
    if rule.dports:
        return [Element("port", str(r), protocol) for r in ports]
    return [Element("protocol", PROTOCOL_NAMES[protocol])]


def _family_variants(rule: Rule) -> list[tuple[str | None, str | None]]:
    """Return (family, reject type) pairs; a reject type needs a family in firewalld."""
    if rule.action == "reject":
        kind = rule.reject_with or "port-unreachable"
        variants = []
        for family in rule.families:
            if kind == TCP_RESET:
                variants.append((family, "tcp-reset"))
            else:
                ipv4, ipv6, _ = REJECT_TYPES[kind]
                variants.append((family, ipv4 if family == "ipv4" else ipv6))
        return variants
    return [(rule.family, None)]


def _limit(rule: Rule) -> str | None:
    if rule.limit is None:
        return None
    return f"{rule.limit.rate}/{LIMIT_UNITS[rule.limit.unit]}"


def _needs_output_policy(graph: RuleGraph) -> bool:
    chain = graph.chains["output"]
    return bool(chain.rules) or chain.policy != "accept"


def _needs_forward_policy(graph: RuleGraph) -> bool:
    """Tell whether forward traffic needs its own policy.

    Without one, the zone target also decides forwarded traffic from the zone
    (firewalld applies it to the derived zone-to-ANY policy).
    """
    chain = graph.chains["forward"]
    return bool(chain.rules) or chain.policy != graph.chains["input"].policy


# Services and ipsets


def _ipsets(graph: RuleGraph) -> list[Ipset]:
    result = []
    for name, node in sorted(graph.host_groups.items()):
        for family, (suffix, _) in IPSET_FAMILIES.items():
            networks = tuple(n for n in node.networks if network_family(n) == family)
            if networks:
                result.append(Ipset(f"{name}-{suffix}", name, family, networks))
    return result


def _valid_service_name(name: str) -> bool:
    # firewall.core.io.service: letters, digits, '_' and '-' only.
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def _service_names(graph: RuleGraph) -> dict[str, str]:
    """Map polywall service names to firewalld service names.

    A service that firewalld ships with exactly the same ports keeps its name and
    needs no file. A name that firewalld ships with other ports gets a "polywall-"
    prefix. Services that firewalld cannot name (other characters, ICMP or no ports)
    are left out and their ports become port elements.
    """
    shipped = shipped_services()
    claimed: dict[str, tuple] = {}
    names: dict[str, str] = {}
    for key in sorted(graph.services):
        node = graph.services[key]
        if not node.ports or not set(node.ports) <= {"tcp", "udp"}:
            continue
        if not all(node.ports.values()) or not _valid_service_name(node.name):
            continue
        ports = port_key(node.ports)
        name = node.name
        if name in shipped and shipped[name] != ports:
            name = f"polywall-{name}"
        if claimed.setdefault(name, ports) != ports:
            continue
        names[key] = name
    return names


def port_key(ports: dict[str, tuple[PortRange, ...]]) -> tuple:
    return tuple(sorted((p, normalize_ports(r)) for p, r in ports.items() if r))


@cache
def shipped_services() -> dict[str, tuple | None]:
    """Return firewalld's shipped services: name -> port key, None when it has more than ports."""
    table: dict[str, tuple | None] = {}
    lines: list[str] = []
    for line in SHIPPED_SERVICES.strip().splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += line.strip()
        else:
            lines.append(line.strip())
    for line in lines:
        name, *specs = line.split()
        if specs == ["-"]:
            table[name] = None
            continue
        ports: dict[str, tuple[PortRange, ...]] = {}
        for spec in specs:
            protocol, _, values = spec.partition("/")
            ranges = []
            for value in values.split(","):
                low, _, high = value.partition("-")
                ranges.append(PortRange(int(low), int(high or low)))
            ports[protocol] = tuple(ranges)
        table[name] = port_key(ports)
    return table


# XML


def _attr(value: str | None) -> str:
    return '"' + escape(value or "", {'"': "&quot;"}) + '"'


def _comment_text(text: str) -> str:
    """Make text safe inside an XML comment: one line, no '--', no trailing '-'."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    while "--" in text:
        text = text.replace("--", "- -")
    return text + " " if text.endswith("-") else text


def _xml_comment(text: str) -> str:
    return f"<!-- {_comment_text(text)} -->"


def _prolog(graph: RuleGraph) -> list[str]:
    lines = ['<?xml version="1.0" encoding="utf-8"?>']
    lines += [_xml_comment(line) for line in header_lines(graph, TARGET, comment="")]
    return lines


def _default_text(graph: RuleGraph, chain: Chain) -> str:
    source = chain.policy_source
    if source is None:
        return f"no default for {chain.name}: accept"
    return f"{output_path(graph, source.file)}:{source.line}: default {chain.policy}"


def _container_xml(graph: RuleGraph, container: Container) -> str:
    lines = _prolog(graph)
    lines.append(_xml_comment(FIREWALLD_ADDS))
    lines.append(_xml_comment(ORDER_NOTE))
    lines.append(_xml_comment(f"target {container.target}: {_default_text(graph, container.chain)}"))
    if container.chain.policy == "reject":
        lines.append(_xml_comment("firewalld rejects with ICMP admin-prohibited (icmpx)."))
    attributes = f'target="{container.target}"'
    if container.kind == "policy":
        attributes += f' priority="{POLICY_PRIORITY}"'
    lines.append(f"<{container.kind} {attributes}>")
    lines.append(f"  <short>{escape(container.name)}</short>")
    lines.append(f"  <description>{escape(container.description)}</description>")
    if container.ingress:
        lines.append(f"  <ingress-zone name={_attr(container.ingress)}/>")
        lines.append(f"  <egress-zone name={_attr(container.egress)}/>")
    for entry in container.entries:
        lines.append("  " + _xml_comment(entry.reference))
        if entry.note:
            lines.append("  " + _xml_comment(entry.note))
        if not entry.note and not entry.elements and not entry.rich_rules:
            lines.append("  " + _xml_comment("already opened by the elements above"))
        for element in entry.elements:
            lines.append("  " + element.xml())
        for rich_rule in entry.rich_rules:
            lines.extend("  " + line for line in rich_rule.xml_lines())
    lines.append(f"</{container.kind}>")
    return "\n".join(lines) + "\n"


def _service_description(service: CustomService) -> str:
    ports = "; ".join(
        f"{protocol} {', '.join(str(r) for r in ranges)}"
        for protocol, ranges in sorted(service.node.ports.items())
    )
    return f"polywall service {service.node.name}: {ports}."


def _service_xml(graph: RuleGraph, service: CustomService) -> str:
    lines = _prolog(graph)
    lines.append("<service>")
    lines.append(f"  <short>{escape(service.name)}</short>")
    lines.append(f"  <description>{escape(_service_description(service))}</description>")
    for protocol, ranges in sorted(service.node.ports.items()):
        for item in ranges:
            lines.append(f'  <port port="{item}" protocol="{protocol}"/>')
    lines.append("</service>")
    return "\n".join(lines) + "\n"


def _ipset_description(ipset: Ipset) -> str:
    family = "IPv4" if ipset.family == "ipv4" else "IPv6"
    return f"{family} networks of polywall host group {ipset.group}."


def _ipset_xml(graph: RuleGraph, ipset: Ipset) -> str:
    lines = _prolog(graph)
    lines.append('<ipset type="hash:net">')
    lines.append(f"  <short>{escape(ipset.name)}</short>")
    lines.append(f"  <description>{escape(_ipset_description(ipset))}</description>")
    lines.append(f'  <option name="family" value="{IPSET_FAMILIES[ipset.family][1]}"/>')
    for network in ipset.networks:
        lines.append(f"  <entry>{network}</entry>")
    lines.append("</ipset>")
    return "\n".join(lines) + "\n"


# firewall-cmd script


def _script(graph: RuleGraph, tree: Tree) -> str:
    quote = shlex.quote
    lines = ["#!/bin/sh"]
    lines += [f"# {_comment_text(line)}" for line in header_lines(graph, TARGET, comment="")]
    lines += [
        "# Builds the permanent firewalld configuration of this policy, replacing the zone,",
        "# policies, services and ipsets of the same names. Apply it with 'firewall-cmd --reload'.",
        "# Set POLYWALL_FIREWALL_CMD to use another command, such as",
        "# POLYWALL_FIREWALL_CMD='firewall-offline-cmd' on a system where firewalld is not running.",
        "set -eu",
        "",
        "firewall() {",
        '    ${POLYWALL_FIREWALL_CMD:-firewall-cmd --permanent} "$@"',
        "}",
        "",
        "remove() {",
        '    if firewall "--info-$1=$2" >/dev/null 2>&1; then',
        "        # firewall-offline-cmd 1.3 deletes the default zone but then exits with",
        "        # INVALID_ZONE, so a failed delete counts when the object is gone.",
        '        firewall "--delete-$1=$2" || ! firewall "--info-$1=$2" >/dev/null 2>&1',
        "    fi",
        "}",
        "",
    ]
    stale_policies = [f"{graph.name}-out", f"{graph.name}-fwd"]
    for name in stale_policies:
        lines.append(f"remove policy {quote(name)}")
    lines.append(f"remove zone {quote(tree.zone.name)}")
    for service in tree.services:
        lines.append(f"remove service {quote(service.name)}")
    for ipset in tree.ipsets:
        lines.append(f"remove ipset {quote(ipset.name)}")

    for ipset in tree.ipsets:
        family = IPSET_FAMILIES[ipset.family][1]
        name = quote(ipset.name)
        lines.append("")
        lines.append(f"firewall --new-ipset={name} --type=hash:net --option=family={family}")
        lines.append(f"firewall --ipset={name} --set-short={quote(ipset.name)}")
        lines.append(f"firewall --ipset={name} --set-description={quote(_ipset_description(ipset))}")
        for network in ipset.networks:
            lines.append(f"firewall --ipset={name} --add-entry={quote(str(network))}")
    for service in tree.services:
        name = quote(service.name)
        lines.append("")
        lines.append(f"firewall --new-service={name}")
        lines.append(f"firewall --service={name} --set-short={quote(service.name)}")
        description = quote(_service_description(service))
        lines.append(f"firewall --service={name} --set-description={description}")
        for protocol, ranges in sorted(service.node.ports.items()):
            for item in ranges:
                lines.append(f"firewall --service={name} --add-port={item}/{protocol}")
    for container in [tree.zone, *tree.policies]:
        lines.append("")
        lines.extend(_container_script(graph, container))
    return "\n".join(lines) + "\n"


def _container_script(graph: RuleGraph, container: Container) -> list[str]:
    quote = shlex.quote
    kind = container.kind
    select = f"--{kind}={quote(container.name)}"
    lines = [
        f"# {_comment_text(f'target {container.target}: ' + _default_text(graph, container.chain))}",
        f"firewall --new-{kind}={quote(container.name)}",
        f"firewall {select} --set-target={quote(container.target)}",
        f"firewall {select} --set-short={quote(container.name)}",
        f"firewall {select} --set-description={quote(container.description)}",
    ]
    if container.ingress:
        lines.append(f"firewall {select} --set-priority={POLICY_PRIORITY}")
        lines.append(f"firewall {select} --add-ingress-zone={quote(container.ingress)}")
        lines.append(f"firewall {select} --add-egress-zone={quote(container.egress or '')}")
    for entry in container.entries:
        lines.append(f"# {_comment_text(entry.reference)}")
        if entry.note:
            lines.append(f"#   {_comment_text(entry.note)}")
        for element in entry.elements:
            lines.append(f"firewall {select} {quote(element.option())}")
        for rich_rule in entry.rich_rules:
            lines.append(f"firewall {select} --add-rich-rule={quote(rich_rule.text())}")
    return lines


@hookimpl
def polywall_exporters():
    return [FirewalldExporter()]


# firewalld 1.3.3's shipped services (/usr/lib/firewalld/services, Debian 12): the name,
# then the ports per protocol with overlapping ranges merged. "-" marks a service with
# more than TCP and UDP ports (a helper, include, destination, source port or protocol),
# which never equals a polywall service. Lines that start with spaces continue the line
# before.
SHIPPED_SERVICES = """
RH-Satellite-6-capsule -
RH-Satellite-6 -
afp tcp/548
amanda-client -
amanda-k5-client -
amqp tcp/5672
amqps tcp/5671
apcupsd tcp/3551
audit tcp/60
ausweisapp2 udp/24727
bacula-client tcp/9102
bacula tcp/9101-9103
bareos-director tcp/9101
bareos-filedaemon tcp/9102
bareos-storage tcp/9103
bb tcp/1984 udp/1984
bgp tcp/179
bitcoin-rpc tcp/8332
bitcoin-testnet-rpc tcp/18332
bitcoin-testnet tcp/18333
bitcoin tcp/8333
bittorrent-lsd -
ceph-exporter tcp/9283
ceph-mon tcp/3300,6789
ceph tcp/6800-7300
cfengine tcp/5308
checkmk-agent tcp/6556
cockpit tcp/9090
collectd udp/25826
condor-collector tcp/9618
cratedb -
ctdb tcp/4379 udp/4379
dds-multicast -
dds-unicast udp/7402-7649,7652-7899,7902-8149,8152-8339,8402-8649,8652-8899,8902-9149,9152-9339,
    9402-9649,9652-9899,9902-10149
dds -
dhcp udp/67
dhcpv6-client -
dhcpv6 udp/547
distcc tcp/3632
dns-over-tls tcp/853
dns tcp/53 udp/53
docker-registry tcp/5000
docker-swarm -
dropbox-lansync tcp/17500 udp/17500
elasticsearch tcp/9200,9300
etcd-client tcp/2379
etcd-server tcp/2380
finger tcp/79
foreman-proxy -
foreman -
freeipa-4 -
freeipa-ldap tcp/80,88,389,443,464 udp/88,123,464
freeipa-ldaps tcp/80,88,443,464,636 udp/88,123,464
freeipa-replication tcp/7389
freeipa-trust tcp/135,138-139,389,445,3268,49152-65535 udp/138-139,389,445
ftp -
galera tcp/3306,4444,4567-4568
ganglia-client tcp/8660
ganglia-master tcp/8651
git tcp/9418
gpsd tcp/2947
grafana tcp/3000
gre -
high-availability tcp/2224,3121,5403,9929,21064 udp/5404-5412,9929
http tcp/80
http3 udp/443
https tcp/443
ident tcp/113
imap tcp/143
imaps tcp/993
ipfs tcp/4001 udp/4001
ipp-client udp/631
ipp tcp/631 udp/631
ipsec -
irc tcp/6667
ircs tcp/6697
iscsi-target tcp/3260 udp/3260
isns tcp/3205 udp/3205
jenkins tcp/8080
kadmin tcp/749
kdeconnect tcp/1714-1764 udp/1714-1764
kerberos tcp/88 udp/88
kibana tcp/5601
klogin tcp/543
kpasswd tcp/464 udp/464
kprop tcp/754
kshell tcp/544
kube-api -
kube-apiserver tcp/6443
kube-control-plane-secure -
kube-control-plane -
kube-controller-manager-secure tcp/10257
kube-controller-manager tcp/10252
kube-nodeport-services tcp/30000-32767
kube-scheduler-secure tcp/10259
kube-scheduler tcp/10251
kube-worker -
kubelet-readonly tcp/10255
kubelet-worker -
kubelet tcp/10250
ldap tcp/389
ldaps tcp/636
libvirt-tls tcp/16514
libvirt tcp/16509
lightning-network tcp/9735
llmnr-client -
llmnr-tcp tcp/5355
llmnr-udp -
llmnr -
managesieve tcp/4190
matrix -
mdns -
memcache tcp/11211 udp/11211
minidlna -
mongodb tcp/27017
mosh udp/60000-61000
mountd tcp/20048 udp/20048
mqtt-tls tcp/8883
mqtt tcp/1883
ms-wbt -
mssql tcp/1433
murmur tcp/64738 udp/64738
mysql tcp/3306
nbd tcp/10809
nebula udp/4242
netbios-ns -
netdata-dashboard tcp/19999
nfs tcp/2049
nfs3 tcp/2049 udp/2049
nmea-0183 tcp/10110 udp/10110
nrpe tcp/5666
ntp udp/123
nut tcp/3493
openvpn udp/1194
ovirt-imageio tcp/54322
ovirt-storageconsole tcp/39543,55863
ovirt-vmconsole tcp/2223
plex -
pmcd tcp/44321
pmproxy tcp/44322
pmwebapi tcp/44323
pmwebapis tcp/44324
pop3 tcp/110
pop3s tcp/995
postgresql tcp/5432
privoxy tcp/8118
prometheus-node-exporter tcp/9100
prometheus tcp/9090
proxy-dhcp udp/4011
ps2link tcp/18193 udp/18194
ps3netsrv tcp/38008
ptp udp/319-320
pulseaudio tcp/4713
puppetmaster tcp/8140
quassel tcp/4242
radius tcp/1812-1813 udp/1812-1813
rdp tcp/3389
redis-sentinel tcp/26379
redis tcp/6379
rpc-bind tcp/111 udp/111
rquotad tcp/875 udp/875
rsh tcp/514
rsyncd tcp/873 udp/873
rtsp tcp/554 udp/554
salt-master tcp/4505-4506
samba-client -
samba-dc -
samba -
sane -
sip -
sips tcp/5061 udp/5061
slp tcp/427 udp/427
smtp-submission tcp/587
smtp tcp/25
smtps tcp/465
snmp tcp/161 udp/161
snmptls-trap tcp/10162 udp/10162
snmptls tcp/10161 udp/10161
snmptrap tcp/162 udp/162
spideroak-lansync udp/21327-21328
spotify-sync tcp/57621 udp/57621
squid tcp/3128
ssdp -
ssh tcp/22
steam-streaming tcp/27036-27037 udp/27031-27036
svdrp tcp/6419 udp/6419
svn tcp/3690
syncthing-gui tcp/8384
syncthing-relay tcp/22067,22070
syncthing tcp/22000 udp/21027,22000
synergy tcp/24800
syslog-tls tcp/6514 udp/6514
syslog udp/514
telnet tcp/23
tentacle tcp/41121
tftp -
tile38 tcp/9851
tinc tcp/655 udp/655
tor-socks tcp/9050
transmission-client tcp/51413 udp/51413
upnp-client -
vdsm tcp/5900-6923,49152-49216,54321
vnc-server tcp/5900-5903
warpinator tcp/42000-42001 udp/42000
wbem-http tcp/5988
wbem-https tcp/5989
wireguard udp/51820
ws-discovery-client -
ws-discovery-tcp tcp/3702
ws-discovery-udp -
ws-discovery -
wsman tcp/5985
wsmans tcp/5986
xdmcp tcp/177 udp/177
xmpp-bosh tcp/5280
xmpp-client tcp/5222
xmpp-local tcp/5298
xmpp-server tcp/5269
zabbix-agent tcp/10050
zabbix-server tcp/10051
zerotier udp/9993
"""
