"""Resolve names and build the rule graph from syntax trees.

The passes, in order: collect definitions, resolve service and host group
names, expand services into protocol and port sets, split rules by
direction, protocol and address family, and normalize port and address sets.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass

from compiler import catalog, syntax
from compiler.errors import Diagnostic, PolicyError, PolywallError, Source, error
from compiler.graph import (
    CHAINS,
    DIRECTION_CHAINS,
    FAMILIES,
    AddressMatch,
    Chain,
    HostGroupNode,
    Network,
    PortRange,
    RateLimit,
    Rule,
    RuleGraph,
    ServiceNode,
    TargetSetting,
    TargetSettingsNode,
    network_family,
    normalize_networks,
    normalize_ports,
)

ACTION_VERDICTS = {"allow": "accept", "drop": "drop", "reject": "reject"}
POLICY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}$")
# Linux interface names are at most IFNAMSIZ - 1 = 15 bytes (linux/if.h).
MAX_INTERFACE_NAME = 15
# Kernel limit of the xt_comment match: XT_MAX_COMMENT_LEN = 256 bytes with the NUL.
MAX_COMMENT_BYTES = 255
PROTOCOL_FAMILIES = {"icmp": ("ipv4",), "icmpv6": ("ipv6",)}


def edit_distance(a: str, b: str) -> int:
    """Return the Damerau-Levenshtein distance (with adjacent transpositions) of two words."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def suggest(word: str, choices, fallback=()) -> str | None:
    """Return "did you mean 'X'?" for the closest choice, or None when none is close.

    Ties go to a choice of the same length, so a typo in one letter beats a
    shorter name that only drops it. Choices in fallback (such as aliases) are
    offered only when no main choice is close.
    """
    limit = max(1, len(word) // 3)
    ranked = sorted(
        (edit_distance(word, choice), len(choice) != len(word), choice) for choice in set(choices)
    )
    if ranked and ranked[0][0] <= limit:
        return f"did you mean '{ranked[0][2]}'?"
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.75)
    if close:
        return f"did you mean '{close[0]}'?"
    return suggest(word, fallback) if fallback else None


@dataclass
class _PortSelection:
    """Ports of one protocol that a rule matches, with the services behind them."""

    protocol: str | None
    ports: tuple[PortRange, ...] = ()
    icmp_types: tuple[str, ...] = ()
    services: tuple[str, ...] = ()


class Resolver:
    """Build a RuleGraph from statements; collects every error it can find."""

    def __init__(self, main_file: str):
        self.main_file = main_file
        self.problems: list[Diagnostic] = []
        self.service_defs: dict[str, syntax.ServiceDef] = {}
        self.host_defs: dict[str, syntax.HostsDef] = {}
        self.services: dict[str, ServiceNode] = {}
        self.host_groups: dict[str, HostGroupNode] = {}
        self._resolving: list[str] = []

    def fail(self, message: str, source: Source | None, hint: str | None = None) -> None:
        self.problems.append(Diagnostic(message, source, hint))

    def build(self, statements: list[syntax.Statement], files: tuple[str, ...] = ()) -> RuleGraph:
        name = self._collect(statements)
        chains = {c: Chain(c) for c in CHAINS}
        self._defaults(statements, chains)
        for statement in statements:
            if isinstance(statement, syntax.RuleStmt):
                try:
                    for rule in self._rules(statement):
                        chains[rule.chain].rules.append(rule)
                except PolicyError as exc:
                    self.problems.extend(exc.diagnostics)
        for service_name in list(self.service_defs):
            self._catch(self._service, service_name)
        for group_name in list(self.host_defs):
            self._catch(self._group, group_name)
        settings = self._target_settings(statements)
        if self.problems:
            raise PolicyError(_dedupe(self.problems))
        graph = RuleGraph(name, self.main_file, chains, self.services, self.host_groups, files)
        graph.settings = settings
        return graph

    def _catch(self, function, *args) -> None:
        try:
            function(*args)
        except PolicyError as exc:
            self.problems.extend(exc.diagnostics)

    # Definitions

    def _collect(self, statements) -> str:
        name = None
        for statement in statements:
            if isinstance(statement, syntax.PolicyStmt):
                if name is not None:
                    self.fail("the policy is named twice", statement.source, "keep one 'policy' line")
                elif not POLICY_NAME.match(statement.name):
                    self.fail(
                        f"invalid policy name '{statement.name}'",
                        statement.source,
                        "use a letter, then up to 31 letters, digits, '_' or '-'",
                    )
                name = statement.name
            elif isinstance(statement, (syntax.ServiceDef, syntax.HostsDef)):
                table = self.service_defs if isinstance(statement, syntax.ServiceDef) else self.host_defs
                other = self.host_defs if table is self.service_defs else self.service_defs
                if statement.name in table or statement.name in other:
                    first = (table.get(statement.name) or other[statement.name]).source
                    self.fail(
                        f"'{statement.name}' is already defined at {first.file}:{first.line}",
                        statement.source,
                    )
                    continue
                if isinstance(statement, syntax.ServiceDef) and statement.name in catalog.services():
                    self.fail(
                        f"service '{statement.name}' is already in the built-in catalog",
                        statement.source,
                        "choose another name, or use the built-in service as it is",
                    )
                    continue
                table[statement.name] = statement
        return name or "polywall"

    def _defaults(self, statements, chains: dict[str, Chain]) -> None:
        for statement in statements:
            if not isinstance(statement, syntax.DefaultStmt):
                continue
            directions = statement.directions or [("in", statement.source), ("fwd", statement.source)]
            for direction, source in directions:
                chain = chains[DIRECTION_CHAINS[direction]]
                if chain.policy_source is not None:
                    first = chain.policy_source
                    self.fail(
                        f"the default for '{direction}' is already set at {first.file}:{first.line}",
                        source,
                    )
                    continue
                chain.policy = ACTION_VERDICTS[statement.action]
                chain.policy_source = statement.source

    def _target_settings(self, statements) -> dict[str, TargetSettingsNode]:
        """Collect target blocks; the exporters validate the keys and values."""
        blocks: dict[str, TargetSettingsNode] = {}
        for statement in statements:
            if not isinstance(statement, syntax.TargetSettings):
                continue
            if statement.target in blocks:
                first = blocks[statement.target].source
                self.fail(
                    f"settings for target '{statement.target}' are already given at "
                    f"{first.file}:{first.line}",
                    statement.source,
                    "merge the two target blocks into one",
                )
                continue
            entries: dict[str, TargetSetting] = {}
            for entry in statement.entries:
                if entry.key in entries:
                    first = entries[entry.key].source
                    self.fail(
                        f"setting '{entry.key}' is already given at {first.file}:{first.line}",
                        entry.source,
                        "keep one of the two values",
                    )
                    continue
                entries[entry.key] = TargetSetting(
                    entry.value, entry.kind, entry.source, entry.value_source
                )
            node = TargetSettingsNode(statement.target, entries, statement.source)
            blocks[statement.target] = node
        return dict(sorted(blocks.items()))

    def _service(self, name: str) -> ServiceNode:
        """Return the service node for a name, resolving definitions on first use."""
        if name in self.services:
            return self.services[name]
        definition = self.service_defs.get(name)
        if definition is None:
            entry = catalog.services()[name]
            node = ServiceNode(
                entry.name,
                {p: (PortRange(entry.low, entry.high),) for p in entry.protocols},
                builtin=True,
            )
            self.services[name] = node
            return node
        if name in self._resolving:
            chain = " -> ".join(self._resolving[self._resolving.index(name):] + [name])
            raise error(f"service definitions refer to each other in a cycle: {chain}", definition.source)
        self._resolving.append(name)
        try:
            ports: dict[str, list[PortRange]] = {}
            for protocol, item in definition.items:
                for selection in self._port_item(item, protocol, service_definition=True):
                    ports.setdefault(selection.protocol, []).extend(selection.ports)
        finally:
            self._resolving.pop()
        node = ServiceNode(name, {p: normalize_ports(r) for p, r in sorted(ports.items())}, definition.source)
        self.services[name] = node
        return node

    def _group(self, name: str) -> HostGroupNode:
        if name in self.host_groups:
            return self.host_groups[name]
        definition = self.host_defs[name]
        if name in self._resolving:
            chain = " -> ".join(self._resolving[self._resolving.index(name):] + [name])
            raise error(f"host groups refer to each other in a cycle: {chain}", definition.source)
        self._resolving.append(name)
        try:
            networks: list[Network] = []
            for item in definition.items:
                if item.negated or item.kind == "any":
                    raise error(
                        f"host group '{name}' may list only addresses and other host groups",
                        item.source,
                        "negate the group where a rule uses it: from !" + name,
                    )
                networks.extend(self._address_networks(item))
        finally:
            self._resolving.pop()
        node = HostGroupNode(name, normalize_networks(networks), definition.source)
        self.host_groups[name] = node
        return node

    # Ports

    def _port_number(self, text: str, source: Source) -> int:
        value = int(text)
        if not 0 < value <= 65535:
            raise error(f"port {text} is out of range", source, "ports are 1 to 65535")
        return value

    def _port_item(self, item: syntax.PortItem, protocol: str | None, service_definition=False):
        """Resolve one port item to selections by protocol."""
        if service_definition and protocol in ("icmp", "icmpv6"):
            raise error(
                f"a service definition takes tcp and udp ports, not {protocol} types",
                item.source,
                f"name the types in the rule, as in 'allow {protocol} {item.text}'",
            )
        if protocol in ("icmp", "icmpv6"):
            return [self._icmp_item(item, protocol)]
        if item.kind in ("number", "range"):
            if protocol is None:
                what = "port range" if item.kind == "range" else "port"
                raise error(
                    f"a bare {what} needs a protocol: {item.text}",
                    item.source,
                    f"write 'tcp {item.text}' or 'udp {item.text}'",
                )
            if item.kind == "number":
                value = self._port_number(item.text, item.source)
                return [_PortSelection(protocol, (PortRange(value, value),))]
            low_text, high_text = item.text.split("-")
            low = self._port_number(low_text, item.source)
            high = self._port_number(high_text, item.source)
            if low > high:
                raise error(
                    f"port range {item.text} runs backwards",
                    item.source,
                    f"write {high}-{low}",
                )
            return [_PortSelection(protocol, (PortRange(low, high),))]
        name = item.text
        if name not in self.service_defs and name not in catalog.services():
            canonical = {entry.name for entry in catalog.services().values()}
            hint = suggest(name, canonical | set(self.service_defs), fallback=catalog.services())
            if name in self.host_defs:
                hint = f"'{name}' is a host group; use it after 'from' or 'to'"
            raise error(f"unknown service '{name}'", item.source, hint)
        node = self._service(name)
        if protocol is None:
            return [_PortSelection(p, ports, services=(name,)) for p, ports in sorted(node.ports.items())]
        if protocol not in node.ports:
            has = ", ".join(sorted(node.ports))
            raise error(
                f"service '{name}' has no {protocol} port (it uses {has})",
                item.source,
                f"drop the protocol, or write '{sorted(node.ports)[0]} {name}'",
            )
        return [_PortSelection(protocol, node.ports[protocol], services=(name,))]

    def _icmp_item(self, item: syntax.PortItem, protocol: str) -> _PortSelection:
        table = catalog.ICMP_TYPES if protocol == "icmp" else catalog.ICMPV6_TYPES
        if item.kind == "name" and item.text in table:
            return _PortSelection(protocol, icmp_types=(item.text,))
        if item.kind == "number":
            by_code = {t.code: t.name for t in table.values()}
            code = int(item.text)
            if code in by_code:
                return _PortSelection(protocol, icmp_types=(by_code[code],))
        hint = suggest(item.text, table) if item.kind == "name" else None
        if item.kind != "name" or (hint is None and item.text in catalog.services()):
            hint = f"{protocol} has types, not ports; known types: " + ", ".join(sorted(table))
        raise error(f"unknown {protocol} type '{item.text}'", item.source, hint)

    def _selections(self, rule: syntax.RuleStmt) -> list[_PortSelection]:
        """Group the rule's destination ports by protocol."""
        ports = list(rule.ports)
        if rule.to_ports:
            if ports:
                raise error(
                    "destination ports are given twice",
                    rule.to_ports[0].source,
                    "give the ports after the protocol or after 'to ... port', not both",
                )
            ports = list(rule.to_ports)
        if rule.protocol is None and not ports:
            return [_PortSelection(None)]
        if not ports:
            return [_PortSelection(rule.protocol)]
        by_protocol: dict[str, _PortSelection] = {}
        problems = []
        for item in ports:
            try:
                selections = self._port_item(item, rule.protocol)
            except PolicyError as exc:
                problems.extend(exc.diagnostics)
                continue
            for sel in selections:
                current = by_protocol.setdefault(sel.protocol, _PortSelection(sel.protocol))
                current.ports += sel.ports
                current.icmp_types += tuple(t for t in sel.icmp_types if t not in current.icmp_types)
                current.services += tuple(s for s in sel.services if s not in current.services)
        if problems:
            raise PolicyError(problems)
        out = []
        for protocol in sorted(by_protocol):
            sel = by_protocol[protocol]
            sel.ports = normalize_ports(sel.ports)
            out.append(sel)
        return out

    def _source_ports(self, rule: syntax.RuleStmt, protocol: str | None) -> tuple[PortRange, ...]:
        if not rule.from_ports:
            return ()
        first = rule.from_ports[0]
        if protocol in ("icmp", "icmpv6"):
            raise error(f"a port on a rule with protocol {protocol}", first.source, f"{protocol} has no ports")
        if protocol is None:
            raise error(
                "a source port needs a protocol",
                first.source,
                "name the protocol after the action, as in 'allow udp 53 from any port 53'",
            )
        ranges: list[PortRange] = []
        for item in rule.from_ports:
            for selection in self._port_item(item, protocol):
                ranges.extend(selection.ports)
        return normalize_ports(ranges)

    # Addresses

    def _address_networks(self, item: syntax.AddressItem) -> list[Network]:
        if item.kind == "group":
            if item.text not in self.host_defs:
                hint = suggest(item.text, self.host_defs)
                if item.text in self.service_defs or item.text in catalog.services():
                    hint = f"'{item.text}' is a service; put it after the action"
                raise error(f"unknown host group '{item.text}'", item.source, hint)
            return list(self._group(item.text).networks)
        text = item.text
        try:
            return [ipaddress.ip_network(text, strict=True)]
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise error(f"invalid address '{text}'", item.source) from None
        raise error(
            f"address {text} has host bits set",
            item.source,
            f"did you mean {loose}? or write the host address without a prefix length",
        )

    def _address_match(self, items: list[syntax.AddressItem]) -> AddressMatch | None:
        if not items:
            return None
        if any(i.kind == "any" for i in items):
            if len(items) > 1:
                other = next(i for i in items if i.kind != "any")
                raise error("'any' cannot be combined with other addresses", other.source, "remove 'any' or the other addresses")
            return None
        negated = [i for i in items if i.negated]
        if negated and len(items) > 1:
            raise error(
                "a negated address must stand alone in its list",
                negated[0].source,
                "define a host group and negate it: from !GROUP",
            )
        networks: list[Network] = []
        problems = []
        for item in items:
            try:
                networks.extend(self._address_networks(item))
            except PolicyError as exc:
                problems.extend(exc.diagnostics)
        if problems:
            raise PolicyError(problems)
        groups = tuple(i.text for i in items if i.kind == "group")
        return AddressMatch(normalize_networks(networks), bool(negated), groups)

    # Rules

    def _rules(self, rule: syntax.RuleStmt) -> list[Rule]:
        problems: list[Diagnostic] = []

        def attempt(function, *args):
            try:
                return function(*args)
            except PolicyError as exc:
                problems.extend(exc.diagnostics)
                return None

        action = ACTION_VERDICTS[rule.action]
        directions = [d for d, _ in rule.directions] or ["in"]
        selections = attempt(self._selections, rule) or []
        saddr = attempt(self._address_match, rule.from_addresses)
        daddr = attempt(self._address_match, rule.to_addresses)
        reject_with = attempt(self._reject_with, rule)
        attempt(self._check_interfaces, rule, directions)
        attempt(self._check_extras, rule)
        sports_by_protocol = {}
        for selection in selections:
            sports_by_protocol[selection.protocol] = attempt(self._source_ports, rule, selection.protocol)
        if problems:
            raise PolicyError(problems)

        families = self._families(rule, saddr, daddr, selections)
        states = tuple(dict.fromkeys(s for s, _ in rule.states))
        limit = None
        if rule.limit is not None:
            limit = RateLimit(rule.limit.rate, rule.limit.unit, rule.limit.burst)

        out = []
        for direction in dict.fromkeys(directions):
            chain = DIRECTION_CHAINS[direction]
            in_interface = out_interface = None
            if rule.in_interface is not None:
                if direction == "out":
                    out_interface = rule.in_interface[0]
                else:
                    in_interface = rule.in_interface[0]
            if rule.out_interface is not None:
                out_interface = rule.out_interface[0]
            for selection in selections:
                protocol_families = PROTOCOL_FAMILIES.get(selection.protocol or "", FAMILIES)
                rule_families = tuple(f for f in families if f in protocol_families)
                split = saddr is not None or daddr is not None
                groups = [(f,) for f in rule_families] if split else [rule_families]
                for group in groups:
                    if not group:
                        continue
                    family = group[0]
                    out.append(
                        Rule(
                            chain=chain,
                            action=action,
                            families=group,
                            source=rule.source,
                            text=rule.text,
                            protocol=selection.protocol,
                            dports=selection.ports,
                            sports=sports_by_protocol.get(selection.protocol) or (),
                            icmp_types=selection.icmp_types,
                            services=selection.services,
                            saddr=saddr.for_family(family) if saddr else None,
                            daddr=daddr.for_family(family) if daddr else None,
                            in_interface=in_interface,
                            out_interface=out_interface,
                            ct_states=states,
                            log=rule.log,
                            log_prefix=_log_prefix(rule.log_prefix),
                            limit=limit,
                            comment=rule.comment,
                            reject_with=reject_with,
                        )
                    )
        return out

    def _families(self, rule, saddr, daddr, selections) -> tuple[str, ...]:
        families = set(FAMILIES)
        for match in (saddr, daddr):
            if match is not None:
                families &= match.families()
        protocols = {s.protocol for s in selections}
        allowed = set()
        for protocol in protocols:
            allowed |= set(PROTOCOL_FAMILIES.get(protocol or "", FAMILIES))
        families &= allowed
        if not families:
            raise error(
                "this rule matches no address family: its addresses and protocol leave "
                "neither IPv4 nor IPv6",
                rule.source,
                "split it into one rule for IPv4 and one for IPv6",
            )
        return tuple(f for f in FAMILIES if f in families)

    def _reject_with(self, rule: syntax.RuleStmt) -> str | None:
        if rule.reject_with is None:
            return None
        name, source = rule.reject_with
        if rule.action != "reject":
            raise error(f"'with {name}' applies only to reject rules", source, "change the action to reject")
        name = catalog.REJECT_ALIASES.get(name, name)
        if name == catalog.TCP_RESET:
            if rule.protocol != "tcp":
                raise error("'with tcp-reset' needs protocol tcp", source, "write 'reject tcp ... with tcp-reset'")
            return name
        if name not in catalog.REJECT_TYPES:
            choices = [catalog.TCP_RESET, *catalog.REJECT_TYPES]
            raise error(f"unknown reject type '{name}'", source, suggest(name, choices) or "known types: " + ", ".join(choices))
        return name

    def _check_interfaces(self, rule: syntax.RuleStmt, directions: list[str]) -> None:
        for value in (rule.in_interface, rule.out_interface):
            if value is None:
                continue
            name, source = value
            base = name[:-1] if name.endswith("+") else name
            if len(base.encode()) > MAX_INTERFACE_NAME:
                raise error(f"interface name '{name}' is longer than {MAX_INTERFACE_NAME} bytes", source)
            if name.endswith("+") and not base:
                raise error("an interface wildcard needs a prefix, as in 'eth+'", source)
        if rule.out_interface is not None and any(d != "fwd" for d in directions):
            raise error(
                "'out-on' applies only to fwd rules",
                rule.out_interface[1],
                "for out rules, 'on IFACE' is already the outgoing interface",
            )

    def _check_extras(self, rule: syntax.RuleStmt) -> None:
        if rule.limit is not None:
            if rule.limit.rate <= 0:
                raise error("a rate limit must be at least 1", rule.limit.source)
            if rule.limit.burst is not None and rule.limit.burst <= 0:
                raise error("a burst must be at least 1", rule.limit.source)
        for text, what in ((rule.comment, "comment"), (rule.log_prefix, "log prefix")):
            if text is None:
                continue
            source = rule.clauses.get(what.split()[0])
            if any(ord(c) < 32 or ord(c) == 127 for c in text):
                raise error(f"the {what} contains a control character", source, "use plain printable text")
            if what == "comment" and len(text.encode()) > MAX_COMMENT_BYTES:
                raise error(f"the comment is longer than {MAX_COMMENT_BYTES} bytes", source)


def _log_prefix(prefix: str | None) -> str | None:
    """End a log prefix with a space, so the kernel's log fields do not run into it."""
    if not prefix:
        return None
    return prefix if prefix.endswith(" ") else prefix + " "


def _dedupe(problems: list[Diagnostic]) -> list[Diagnostic]:
    seen = set()
    out = []
    for p in problems:
        key = (p.message, str(p.source))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def build_graph(statements: list[syntax.Statement], main_file: str, files=()) -> RuleGraph:
    """Resolve statements into a RuleGraph, raising PolicyError with every problem found."""
    return Resolver(main_file).build(statements, tuple(files))


__all__ = ["build_graph", "Resolver", "PolywallError"]
