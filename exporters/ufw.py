"""ufw exporter: one shell script of ``ufw`` commands, ``ufw.sh``.

The script resets ufw, sets the three defaults and the log level, adds the
rules in policy order and enables ufw, so the result does not depend on what
ufw held before. Facts about ufw come from the source of ufw 0.36.2 (Debian 12
package, /usr/lib/python3/dist-packages/ufw/) and its stock rule files in
/usr/share/ufw/iptables/; docs/targets/ufw.md explains the mapping.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import textwrap
from dataclasses import dataclass

from compiler import capabilities
from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES, TCP_RESET
from compiler.errors import Diagnostic, Source
from compiler.graph import (
    CHAINS,
    AddressMatch,
    Chain,
    Network,
    PortRange,
    Rule,
    RuleGraph,
)
from compiler.hookspecs import hookimpl
from exporters.common import chunk_ports, header_lines, output_path, source_reference

FILE = "ufw.sh"
# ufw rejects a port list with more than 14 commas and colons together
# (UFWRule.set_port), so at most 15 ports with a range counting as two.
MULTIPORT_SLOTS = 15
ACTIONS = {"accept": "allow", "drop": "deny", "reject": "reject"}
DEFAULT_DIRECTIONS = {"input": "incoming", "forward": "routed", "output": "outgoing"}
# ufw's command line accepts only these protocols (ufw.util.supported_protocols).
UFW_PROTOCOLS = ("tcp", "udp", "ah", "esp", "gre", "igmp", "ipv6", "vrrp")
# Words of ufw's rule syntax. An interface named like one of them can make
# ufw's parser read the rule differently, as "in on comment" does.
PARSER_WORDS = frozenset(
    {"in", "out", "on", "log", "log-all", "comment", "delete", "from", "to", "proto", "port", "app"}
)
# ufw's parser counts these words among all arguments before it takes the
# comment out, so a comment that is exactly one of them breaks the rule.
COMMENT_WORDS = frozenset({"in", "out", "log", "log-all"})
# The interface names ufw accepts (UFWRule.set_interface): no ':' for aliases.
UFW_INTERFACE = re.compile(r"[a-zA-Z0-9_\-.+,=%@]{1,15}$")
# ufw's per-rule LOG rule: -m limit --limit 3/min --limit-burst 10, fixed prefix.
LOG_RATE = "3 packets a minute (burst 10)"
ESTABLISHED = frozenset({"established", "related"})


class UfwExporter:
    name = "ufw"
    description = "shell script of ufw commands (ufw 0.36) that resets ufw and adds the policy"
    capabilities = capabilities.ALL - {
        "rate-limit",
        "rate-limit-burst",
        "log-prefix",
        "negated-addresses",
        "icmp-types",
    }

    def check(self, graph: RuleGraph) -> list[Diagnostic]:
        """List the limits of ufw that no capability name states, one error per rule and cause."""
        problems = _settings_problems(graph)
        seen: set[tuple[str, str]] = set()
        for chain_name in CHAINS:
            chain = graph.chains[chain_name]
            for index, rule in enumerate(chain.rules):
                for message, hint in _rule_problems(chain, index):
                    key = (str(rule.source), message)
                    if key not in seen:
                        seen.add(key)
                        problems.append(Diagnostic(message, rule.source, hint))
        return problems

    def warnings(self, graph: RuleGraph) -> list[Diagnostic]:
        """List where ufw accepts or logs traffic differently from the policy.

        Each stock allowance of before.rules and before6.rules that the policy
        does not accept gets a warning, and so does each rule that logs,
        because ufw rate-limits per-rule logging.
        """
        found = _stock_warnings(graph) + _log_warnings(graph)
        return sorted(found, key=_diagnostic_order)

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_script(graph, self.warnings(graph))}


# Checks


def _settings_problems(graph: RuleGraph) -> list[Diagnostic]:
    node = graph.settings.get(UfwExporter.name)
    if node is None:
        return []
    return [
        Diagnostic(
            f"unknown setting '{key}' for target ufw",
            setting.source,
            "ufw has no settings; remove the entry",
        )
        for key, setting in node.entries.items()
    ]


# A problem: the error message and an optional hint.
Problem = tuple[str, str | None]


def _rule_problems(chain: Chain, index: int) -> list[Problem]:
    """Return the problems of one rule that the capability names do not cover."""
    rule = chain.rules[index]
    found: list[Problem | None] = []
    if rule.ct_states:
        found.append(_state_problem(chain, index))
    if rule.protocol in ("icmp", "icmpv6") and not rule.icmp_types:
        message = (
            f"ufw cannot express rules for protocol {rule.protocol}: its command line "
            f"matches only {', '.join(UFW_PROTOCOLS)}"
        )
        hint = (
            "ufw's stock before.rules and before6.rules accept the common ICMP and ICMPv6 "
            "types without a rule"
        )
        found.append((message, hint))
    if rule.action == "reject":
        found.append(_reject_problem(rule))
    for interface in (rule.in_interface, rule.out_interface):
        if interface:
            found.append(_interface_problem(interface))
    if rule.comment:
        route = _interface_words(rule) if rule.chain == "forward" else None
        found.append(_comment_problem(rule.comment, route))
    return [problem for problem in found if problem is not None]


def is_established_rule(rule: Rule) -> bool:
    """Tell whether a rule accepts exactly the established and related packets, and nothing else."""
    return (
        rule.action == "accept"
        and set(rule.ct_states) == ESTABLISHED
        and rule.protocol is None
        and not (rule.dports or rule.sports or rule.icmp_types)
        and not _networks(rule.saddr)
        and not _networks(rule.daddr)
        and rule.in_interface is None
        and rule.out_interface is None
        and not rule.log
        and rule.limit is None
        and set(rule.families) == {"ipv4", "ipv6"}
    )


def _state_problem(chain: Chain, index: int) -> Problem | None:
    """Return why a rule with conntrack states cannot be left to before.rules, or None."""
    rule = chain.rules[index]
    if not is_established_rule(rule):
        message = (
            "ufw cannot express connection tracking states other than a plain 'allow established'"
        )
        hint = (
            "ufw's only state rules are the stock ones in before.rules: established and related "
            "packets are accepted ahead of every rule in each chain, and invalid packets are "
            "dropped on input"
        )
        return (message, hint)
    for earlier in chain.rules[:index]:
        if earlier.action != "accept" or earlier.log:
            message = (
                "ufw cannot express 'allow established' after a rule that drops, rejects or "
                "logs, because ufw accepts established and related packets ahead of every rule"
            )
            return (message, f"move this rule above line {earlier.source.line}")
    return None


def _reject_problem(rule: Rule) -> Problem | None:
    # ufw adds --reject-with tcp-reset to every tcp reject rule and leaves the
    # REJECT default (port-unreachable) on all others (UFWRule.format_rule).
    kind = rule.reject_with or "port-unreachable"
    if rule.protocol == "tcp":
        if kind == TCP_RESET:
            return None
        message = f"ufw cannot express a TCP reject with {kind}: ufw rejects TCP with a TCP reset"
        return (message, "write 'with tcp-reset'")
    if kind == "port-unreachable":
        return None
    message = (
        f"ufw cannot express the reject type {kind}: ufw rejects with port-unreachable, "
        "or with a TCP reset for protocol tcp"
    )
    return (message, "remove 'with ...'")


def _interface_problem(name: str) -> Problem | None:
    if name.lower() in PARSER_WORDS:
        message = f"ufw cannot express the interface name '{name}': it is a word of ufw's syntax"
        return (message, None)
    if not UFW_INTERFACE.match(name):
        message = (
            f"ufw cannot express the interface name '{name}': ufw accepts 1 to 15 characters "
            "from A-Z, a-z, 0-9 and _-.+,=%@, so no ':' alias names"
        )
        return (message, None)
    return None


def _comment_problem(comment: str, interface_words: list[str] | None) -> Problem | None:
    """Return why ufw would reject or misread a comment, or None when it stores it as given.

    ``interface_words`` are the interface words of a route (fwd) command, as
    in ``["in", "on", "eth0"]``, and None for other commands.
    """
    if "'" in comment:
        message = "ufw cannot express a comment that contains a single quote (')"
        return (message, "write the comment without a single quote")
    if comment.startswith(("--rootdir=", "--datadir=")):
        message = (
            "ufw cannot express a comment that starts with --rootdir= or --datadir=: "
            "ufw reads such an argument as an option"
        )
        return (message, None)
    route = interface_words is not None
    if comment in COMMENT_WORDS or (route and comment == "delete"):
        message = f"ufw cannot express the comment '{comment}': it is a word of ufw's syntax"
        return (message, None)
    if route and _route_comment_misread(comment, interface_words):
        message = (
            "ufw cannot express this comment on a fwd rule: ufw reads its words 'in' or 'out' "
            "as an interface clause"
        )
        return (message, "reword the comment")
    return None


def _route_comment_misread(comment: str, interface_words: list[str]) -> bool:
    """Tell whether ufw's route parser would take words of a comment for interface clauses.

    UFWCommandRouteRule.parse joins all arguments with spaces and searches the
    text for " in on ", " out on ", " in " and " out " before it takes the
    comment out. This function repeats those tests for a route command.
    """
    text = " ".join(["route", "allow", *interface_words, "to", "any", "comment", comment])
    if " in on " in text and " out on " in text:
        # ufw then looks up the exact words 'in' and 'out', which the comment cannot supply.
        return not ("in" in interface_words and "out" in interface_words)
    if re.search(r" (in|out) on ", text) or re.search(r" app (in|out) ", text):
        return False
    return " in " in text or " out " in text


# Stock allowances of before.rules and before6.rules


@dataclass(frozen=True)
class StockAllowance:
    """Traffic that ufw's stock before.rules or before6.rules accepts ahead of every ufw rule.

    ``interface`` is the incoming interface on input and the outgoing one on
    output. ``states`` of None means any connection tracking state.
    """

    file: str
    chain: str
    family: str
    label: str
    group: str = ""
    protocol: str | None = None
    icmp_type: int | None = None
    sport: int | None = None
    dport: int | None = None
    saddr: Network | None = None
    daddr: Network | None = None
    interface: str | None = None
    states: frozenset[str] | None = None


LINK_LOCAL6 = ipaddress.ip_network("fe80::/10")
# ICMPv6 types that before6.rules accepts by number; names after the IANA registry.
ICMPV6_NUMBERED = {
    141: "type 141 (inverse neighbor discovery solicitation)",
    142: "type 142 (inverse neighbor discovery advertisement)",
    144: "type 144 (home agent address discovery request)",
    145: "type 145 (home agent address discovery reply)",
    146: "type 146 (mobile prefix solicitation)",
    147: "type 147 (mobile prefix advertisement)",
    148: "type 148 (certification path solicitation)",
    149: "type 149 (certification path advertisement)",
    151: "type 151 (multicast router advertisement)",
    152: "type 152 (multicast router solicitation)",
    153: "type 153 (multicast router termination)",
}
_ICMPV6_BY_CODE = {t.code: t.name for t in ICMPV6_TYPES.values()}
_ICMP_BY_CODE = {t.code: t.name for t in ICMP_TYPES.values()}


def _icmp(file: str, chain: str, family: str, code: int, saddr: Network | None = None):
    if family == "ipv4":
        return StockAllowance(file, chain, family, _ICMP_BY_CODE[code], "ICMP types", "icmp", code)
    label = _ICMPV6_BY_CODE.get(code) or ICMPV6_NUMBERED[code]
    return StockAllowance(file, chain, family, label, "ICMPv6 types", "icmpv6", code, saddr=saddr)


def _udp(file: str, family: str, label: str, dport: int, sport=None, saddr=None, daddr=None):
    if isinstance(daddr, str):
        daddr = ipaddress.ip_network(daddr)
    return StockAllowance(file, "input", family, label, "", "udp", None, sport, dport, saddr, daddr)


def _stock_allowances() -> list[StockAllowance]:
    """Return the ACCEPT rules of the stock before.rules and before6.rules of ufw 0.36.2.

    Hop limit matches of before6.rules are left out: no policy rule matches on
    them, so they do not change which policy rules cover an allowance.
    """
    v4, v6 = "before.rules", "before6.rules"
    loopback = "all traffic on loopback (lo)"
    out: list[StockAllowance] = []
    for file, family in ((v4, "ipv4"), (v6, "ipv6")):
        out.append(StockAllowance(file, "input", family, loopback, interface="lo"))
        out.append(StockAllowance(file, "output", family, loopback, interface="lo"))
        for chain in CHAINS:
            label = "established and related packets"
            out.append(StockAllowance(file, chain, family, label, states=ESTABLISHED))

    for chain in ("input", "forward"):
        out += [_icmp(v4, chain, "ipv4", code) for code in (3, 11, 12, 8)]
    out.append(_udp(v4, "ipv4", "DHCP replies (UDP port 67 to 68)", 68, sport=67))
    out.append(_udp(v4, "ipv4", "mDNS (UDP port 5353 to 224.0.0.251)", 5353, daddr="224.0.0.251"))
    label = "UPnP discovery (UDP port 1900 to 239.255.255.250)"
    out.append(_udp(v4, "ipv4", label, 1900, daddr="239.255.255.250"))

    neighbor = (133, 134, 135, 136, 141, 142)
    multicast_listener = (130, 131, 132, 143)
    send = (148, 149)
    multicast_router = (151, 152, 153)
    mobile = (144, 145, 146, 147)
    for chain, first in (("input", (129, 1, 2, 3, 4, 128)), ("output", (1, 2, 3, 4, 128, 129))):
        out += [_icmp(v6, chain, "ipv6", code) for code in (*first, *neighbor)]
        out += [_icmp(v6, chain, "ipv6", code, LINK_LOCAL6) for code in multicast_listener]
        out += [_icmp(v6, chain, "ipv6", code) for code in send]
        out += [_icmp(v6, chain, "ipv6", code, LINK_LOCAL6) for code in multicast_router]
    out += [_icmp(v6, "forward", "ipv6", code) for code in (1, 2, 3, 4, 128, 129)]
    # before6.rules files these under FORWARD in a comment but adds them to input.
    out += [_icmp(v6, "input", "ipv6", code) for code in mobile]
    label = "DHCPv6 replies (UDP port 547 to 546 within fe80::/10)"
    out.append(_udp(v6, "ipv6", label, 546, sport=547, saddr=LINK_LOCAL6, daddr=LINK_LOCAL6))
    out.append(_udp(v6, "ipv6", "mDNS (UDP port 5353 to ff02::fb)", 5353, daddr="ff02::fb"))
    out.append(_udp(v6, "ipv6", "UPnP discovery (UDP port 1900 to ff02::f)", 1900, daddr="ff02::f"))
    return out


STOCK_ALLOWANCES = tuple(_stock_allowances())

# How much of an allowance's traffic a rule matches.
NONE, SOME, ALL = 0, 1, 2


def allowance_match(rule: Rule, allowance: StockAllowance) -> int:
    """Return NONE, SOME or ALL: how much of the allowance's traffic the rule matches."""
    if allowance.family not in rule.families:
        return NONE
    parts = [
        _protocol_match(rule, allowance),
        _port_match(rule.sports, allowance.sport),
        _port_match(rule.dports, allowance.dport),
        _address_match(rule.saddr, allowance.saddr),
        _address_match(rule.daddr, allowance.daddr),
        _state_match(rule.ct_states, allowance.states),
    ]
    if allowance.chain == "input":
        parts.append(_interface_match(rule.in_interface, allowance.interface))
    elif allowance.chain == "output":
        parts.append(_interface_match(rule.out_interface, allowance.interface))
    else:
        parts.append(SOME if rule.in_interface or rule.out_interface else ALL)
    result = min(parts)
    if result == ALL and rule.limit is not None:
        # Packets above the rate fall through to later rules.
        return SOME
    return result


def _protocol_match(rule: Rule, allowance: StockAllowance) -> int:
    if rule.protocol is None:
        return ALL
    if allowance.protocol is None:
        return SOME
    if rule.protocol != allowance.protocol:
        return NONE
    if not rule.icmp_types:
        return ALL
    if allowance.icmp_type is None:
        return SOME
    table = ICMP_TYPES if rule.protocol == "icmp" else ICMPV6_TYPES
    codes = {table[name].code for name in rule.icmp_types}
    return ALL if allowance.icmp_type in codes else NONE


def _port_match(ranges: tuple[PortRange, ...], port: int | None) -> int:
    if not ranges:
        return ALL
    if port is None:
        return SOME
    return ALL if any(r.low <= port <= r.high for r in ranges) else NONE


def _address_match(match: AddressMatch | None, network: Network | None) -> int:
    networks = _networks(match)
    if not networks:
        return ALL
    if network is None:
        return SOME
    same = [n for n in networks if n.version == network.version]
    if any(network.subnet_of(n) for n in same):  # type: ignore[arg-type]
        inside = ALL
    elif any(network.overlaps(n) for n in same):
        inside = SOME
    else:
        inside = NONE
    if match is not None and match.negated:
        return {ALL: NONE, SOME: SOME, NONE: ALL}[inside]
    return inside


def _state_match(states: tuple[str, ...], allowed: frozenset[str] | None) -> int:
    if not states:
        return ALL
    if allowed is None:
        return SOME
    if allowed <= set(states):
        return ALL
    return SOME if allowed & set(states) else NONE


def _interface_match(name: str | None, interface: str | None) -> int:
    if name is None:
        return ALL
    if interface is None:
        return SOME
    if name.endswith("+"):
        return ALL if interface.startswith(name[:-1]) else NONE
    return ALL if name == interface else NONE


def where_not_accepted(chain: Chain, allowance: StockAllowance) -> tuple[bool, Source | None]:
    """Tell whether the policy leaves some of an allowance's traffic unaccepted, and where.

    The position is that of the first rule that drops or rejects some of the
    traffic, or else that of the chain's default when the rules leave some of
    it to a default that does not accept.
    """
    for rule in chain.rules:
        match = allowance_match(rule, allowance)
        if match == NONE:
            continue
        if rule.action != "accept":
            return True, rule.source
        if match == ALL:
            return False, None
    if chain.policy == "accept":
        return False, None
    return True, chain.policy_source


def _stock_warnings(graph: RuleGraph) -> list[Diagnostic]:
    groups: dict[tuple, list[str]] = {}
    for allowance in STOCK_ALLOWANCES:
        dropped, where = where_not_accepted(graph.chains[allowance.chain], allowance)
        if not dropped:
            continue
        key = (allowance.file, allowance.chain, allowance.group or allowance.label, where)
        groups.setdefault(key, []).append(allowance.label)
    out = []
    for (file, chain, group, where), labels in groups.items():
        subject = group if len(labels) == 1 and group == labels[0] else f"{group} {_join(labels)}"
        out.append(
            Diagnostic(
                f"ufw's stock {file} accepts {subject} on {DEFAULT_DIRECTIONS[chain]} traffic "
                "ahead of every rule, but this policy does not accept "
                + ("it" if len(labels) == 1 else "them"),
                where,
                "ufw.sh leaves before.rules and before6.rules as ufw ships them",
                severity="warning",
            )
        )
    return out


def _log_warnings(graph: RuleGraph) -> list[Diagnostic]:
    out = []
    seen = set()
    for rule in graph.rules():
        if not rule.log or rule.source in seen:
            continue
        seen.add(rule.source)
        prefix = "[UFW ALLOW] " if rule.action == "accept" else "[UFW BLOCK] "
        out.append(
            Diagnostic(
                f"ufw logs at most {LOG_RATE} for this rule, with the prefix '{prefix}'",
                rule.source,
                severity="warning",
            )
        )
    return out


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _diagnostic_order(diagnostic: Diagnostic):
    source = diagnostic.source
    if source is None:
        return ("", 0, 0, diagnostic.message)
    return (source.file, source.line, source.column, diagnostic.message)


# Commands


@dataclass(frozen=True)
class UfwCommand:
    """One ``ufw`` command line for a rule, and how ufw identifies the rule it adds.

    ``identities`` contains one entry per family that ufw adds the rule to. ufw
    treats a new rule whose identity equals an earlier rule's as that rule:
    it skips it, or overwrites the earlier rule's action, log type and
    comment in place (UFWRule.match and set_rule in ufw's backend).
    """

    words: tuple[str, ...]
    identities: tuple[tuple, ...]

    def line(self) -> str:
        return " ".join(["ufw", *(shlex.quote(w) for w in self.words)])


def _networks(match: AddressMatch | None) -> tuple[Network, ...]:
    return match.networks if match is not None else ()


def _address_text(network: Network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _ports_text(ports: tuple[PortRange, ...]) -> str:
    return ",".join(str(p.low) if p.low == p.high else f"{p.low}:{p.high}" for p in ports)


def rule_commands(rule: Rule) -> list[UfwCommand]:
    """Return the ufw commands for one rule: one per address pair and port chunk."""
    sources: list[Network | None] = list(_networks(rule.saddr)) or [None]
    destinations: list[Network | None] = list(_networks(rule.daddr)) or [None]
    commands = []
    for source in sources:
        for destination in destinations:
            for sports in chunk_ports(rule.sports, MULTIPORT_SLOTS):
                for dports in chunk_ports(rule.dports, MULTIPORT_SLOTS):
                    commands.append(_command(rule, source, destination, sports, dports))
    return commands


def _command(
    rule: Rule,
    source: Network | None,
    destination: Network | None,
    sports: tuple[PortRange, ...],
    dports: tuple[PortRange, ...],
) -> UfwCommand:
    families = list(rule.families)
    for network in (source, destination):
        if network is not None:
            families = [f for f in families if f == ("ipv4" if network.version == 4 else "ipv6")]
    source_text = _address_text(source) if source is not None else None
    destination_text = _address_text(destination) if destination is not None else None
    if len(families) == 1 and source_text is None and destination_text is None:
        # ufw adds a rule without addresses to both families; an address
        # that matches every host of one family keeps it to that family.
        source_text = "0.0.0.0/0" if families[0] == "ipv4" else "::/0"

    words: list[str] = []
    if rule.chain == "forward":
        words.append("route")
    words.append(ACTIONS[rule.action])
    interface_words = _interface_words(rule)
    words += interface_words
    if rule.log:
        words.append("log-all")
    if source_text is not None or sports:
        words += ["from", source_text or "any"]
        if sports:
            words += ["port", _ports_text(sports)]
    if destination_text is not None or dports:
        words += ["to", destination_text or "any"]
        if dports:
            words += ["port", _ports_text(dports)]
    if "from" not in words and "to" not in words and not interface_words:
        words += ["to", "any"]
    if rule.protocol:
        words += ["proto", rule.protocol]
    if rule.comment:
        words += ["comment", rule.comment]

    identities = tuple(
        (
            family,
            rule.chain,
            rule.in_interface,
            rule.out_interface,
            rule.protocol,
            _any_address(source_text),
            _ports_text(sports),
            _any_address(destination_text),
            _ports_text(dports),
        )
        for family in families
    )
    return UfwCommand(tuple(words), identities)


def _any_address(text: str | None) -> str:
    if text is None or text in ("0.0.0.0/0", "::/0"):
        return "any"
    return text


def _interface_words(rule: Rule) -> list[str]:
    if rule.chain == "output":
        return ["out", "on", rule.out_interface] if rule.out_interface else ["out"]
    words = []
    if rule.in_interface:
        words += ["in", "on", rule.in_interface]
    if rule.chain == "forward" and rule.out_interface:
        words += ["out", "on", rule.out_interface]
    return words


# The script


def render_script(graph: RuleGraph, warnings: list[Diagnostic]) -> str:
    """Return the text of ufw.sh for a graph that passed the capability check and ``check``."""
    lines = ["#!/bin/sh", *header_lines(graph, "ufw")]
    lines += [
        "# Run as root: sh ufw.sh",
        "#",
        "# The script resets ufw first, so the result does not depend on earlier ufw rules:",
        "# ufw keeps a copy of each rule file with a timestamp and restores the stock",
        "# before.rules, after.rules and user rules. It then sets the defaults and the log",
        "# level, adds the rules in policy order and enables ufw.",
    ]
    if warnings:
        lines += ["#", "# Warnings:"]
        for warning in warnings:
            text = _comment_line(_where(graph, warning.source) + warning.message)
            lines += textwrap.wrap(
                text,
                96,
                initial_indent="# ",
                subsequent_indent="#     ",
                break_long_words=False,
                break_on_hyphens=False,
            )
    lines += ["", "set -eu", ""]
    lines += _preflight_lines()
    lines += [
        (
            "trap 'if [ $? -ne 0 ]; then echo \"ufw.sh: failed after ufw was reset; ufw is "
            "disabled until this script succeeds\" >&2; fi' EXIT"
        ),
        "ufw --force reset",
    ]
    for name in ("input", "forward", "output"):
        chain = graph.chains[name]
        policy = ACTIONS[chain.policy]
        lines.append(f"ufw default {policy} {DEFAULT_DIRECTIONS[name]}")
    logs = any(rule.log for rule in graph.rules())
    if logs:
        lines.append("# Per-rule logging needs a log level above off; 'low' also logs what the")
        lines.append("# defaults block, at most 3 packets a minute.")
    lines.append(f"ufw logging {'low' if logs else 'off'}")

    added: set[tuple] = set()
    for name in CHAINS:
        chain = graph.chains[name]
        previous = None
        for index, rule in enumerate(chain.rules):
            # The graph splits one policy rule per family; one reference covers them all.
            reference = source_reference(graph, rule)
            if reference != previous:
                lines.append("")
                lines.append(_comment_line(f"# {reference}"))
                previous = reference
            lines += _rule_lines(chain, index, added)
    lines += ["", "ufw --force enable", "trap - EXIT"]
    return "\n".join(lines) + "\n"


def _preflight_lines() -> list[str]:
    return [
        'if [ "$(id -u)" -ne 0 ]; then',
        '    echo "ufw.sh: run this script as root" >&2',
        "    exit 1",
        "fi",
        "# ufw adds IPv6 rules only with IPV6=yes; ufw-init reads the file the same way.",
        "ipv6=$(. /etc/default/ufw && printf '%s' \"${IPV6:-}\")",
        'if [ "$ipv6" != yes ] && [ "$ipv6" != YES ]; then',
        '    echo "ufw.sh: set IPV6=yes in /etc/default/ufw so that ufw loads the IPv6 rules" >&2',
        "    exit 1",
        "fi",
        "",
    ]


def _rule_lines(chain: Chain, index: int, added: set[tuple]) -> list[str]:
    rule = chain.rules[index]
    if rule.ct_states:
        # check() lets only a redundant 'allow established' through.
        return [
            (
                f"# Left out: ufw's stock before.rules and before6.rules accept established and "
                f"related {DEFAULT_DIRECTIONS[chain.name]} packets ahead of every rule."
            )
        ]
    lines = []
    for command in rule_commands(rule):
        fresh = [identity for identity in command.identities if identity not in added]
        if not fresh:
            lines.append(
                "# Left out: an earlier rule with the same matches catches these packets first, "
                "and ufw would overwrite that rule: " + _comment_line(command.line())
            )
            continue
        if len(fresh) < len(command.identities):
            # Only one family is new: keep the command to that family.
            family = fresh[0][0]
            command = _restrict(command, family)
        added.update(fresh)
        lines.append(command.line())
    return lines


def _restrict(command: UfwCommand, family: str) -> UfwCommand:
    """Keep a command that names no address to one family, with ``from`` every host of it."""
    words = list(command.words)
    anywhere = "0.0.0.0/0" if family == "ipv4" else "::/0"
    if "from" in words:
        words[words.index("from") + 1] = anywhere
    else:
        later = [words.index(w) for w in ("to", "proto", "comment") if w in words]
        position = min(later, default=len(words))
        words[position:position] = ["from", anywhere]
    identities = tuple(identity for identity in command.identities if identity[0] == family)
    return UfwCommand(tuple(words), identities)


def _where(graph: RuleGraph, source: Source | None) -> str:
    if source is None:
        return ""
    return f"{output_path(graph, source.file)}:{source.line}: "


def _comment_line(text: str) -> str:
    """Replace line breaks, so that text fits on one comment line of the script."""
    return text.replace("\r", " ").replace("\n", " ")


@hookimpl
def polywall_exporters():
    return [UfwExporter()]
