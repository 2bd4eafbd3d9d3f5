"""OpenBSD pf exporter: one pf.conf with tables, port macros and first-match rules.

pf evaluates every rule and the last match decides, unless a rule is
``quick``. To keep the policy's first-match order, each chain's default comes
first without ``quick`` and every rule of the policy is ``quick``.

pf sees a forwarded packet twice: once in on the interface it arrives on and
once out on the interface it leaves by. The mapping is:

- ``in`` rules become ``pass in quick`` / ``block in quick``; forwarded
  packets never reach them, because an earlier ``pass in quick`` rule passes
  every packet whose destination is not one of the host's own addresses
  (table ``<polywall_local>``), and the out side decides about it;
- ``fwd`` rules become ``pass out quick ... received-on any`` (or
  ``received-on IFACE`` for ``on IFACE``, and ``on IFACE`` for ``out-on
  IFACE``), followed by the forward default as a ``quick`` rule, so that
  forwarded packets never reach the ``out`` rules;
- ``out`` rules become ``pass out quick`` / ``block out quick``.

Keywords follow pf.conf(5) of OpenBSD 7.x; no pfctl was available to load
the output, so tests read it back with a strict reader instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES, TCP_RESET
from compiler.errors import Diagnostic, Source
from compiler.graph import AddressMatch, Network, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters import perimeter
from exporters.common import header_lines, output_path

TARGET = "pf"
FILE = "pf.conf"
TEMPLATE = "pf.j2"

# NOTE: limits from OpenBSD's pfvar.h as remembered, not opened here: a table
# name has at most 31 characters (PF_TABLE_NAME_SIZE is 32 with the NUL), an
# interface name at most 15 (IFNAMSIZ is 16).
MAX_TABLE_NAME = 31
MAX_INTERFACE = 15
MAX_MACRO_NAME = 63
LOCAL_TABLE = "polywall_local"
# Destinations of packets the host receives itself besides its own addresses.
# NOTE: directed subnet broadcasts (such as 192.0.2.255 on a /24) are not in
# the table, so such packets are treated as forwarded on the incoming side.
LOCAL_EXTRA = ("255.255.255.255", "224.0.0.0/4", "ff00::/8")
INTERFACE_PATTERN = r"[A-Za-z][A-Za-z0-9_.]*"

# ICMP unreachable codes for a chosen reject type: RFC 792 for IPv4, RFC 4443
# for ICMPv6, written as numbers in return-icmp(...) and return-icmp6(...).
REJECT_CODES = {
    "net-unreachable": (0, 0),
    "host-unreachable": (1, 3),
    "port-unreachable": (3, 4),
    "admin-prohibited": (13, 1),
}
RATE_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmp6"}

SKIP_RETURN = "pf passes packets of tracked connections through their state"
SKIP_LOOPBACK = "'set skip on lo' leaves loopback traffic unfiltered"


class PfExporter:
    name = TARGET
    description = "OpenBSD pf.conf with tables, port macros and quick rules in policy order"
    capabilities = frozenset(
        {
            "output-chain",
            "forward-chain",
            "log",
            "rate-limit",
            "reject",
            "reject-type",
            "default-reject",
            "source-ports",
            "negated-addresses",
            "in-interface",
            "out-interface",
            "conntrack-states",
            "icmp-types",
            "comments",
            "ipv6",
        }
    )

    def check(self, graph: RuleGraph) -> list[Diagnostic]:
        _, problems = perimeter.read_settings(graph, TARGET, ())
        for rule in graph.rules():
            problem = _interface_problem(rule) or perimeter.state_problem(
                rule, TARGET, stateful=True
            )
            if problem is not None:
                problems.append(problem)
        problems += _name_problems(graph)
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_config(graph)}


# Checks


def _is_plain_loopback(rule: Rule, interface: str | None) -> bool:
    """Return whether a rule accepts all traffic on lo and matches nothing else."""
    return (
        rule.action == "accept"
        and interface == "lo"
        and rule.protocol is None
        and rule.saddr is None
        and rule.daddr is None
        and not rule.ct_states
        and rule.limit is None
        and not rule.log
        and len(rule.families) == 2
    )


def uses_skip_on_lo(graph: RuleGraph) -> bool:
    """Return whether 'set skip on lo' states the policy exactly.

    That holds when every rule that names the loopback interface is a plain
    ``allow on lo``, ``in`` has one, and ``out`` has one or accepts by default.
    Forwarded traffic never uses the loopback interface.
    """
    loopback = [r for r in graph.rules() if "lo" in (r.in_interface, r.out_interface)]
    plain = [
        r
        for r in loopback
        if _is_plain_loopback(r, r.out_interface if r.chain == "output" else r.in_interface)
    ]
    if len(plain) != len(loopback) or not any(r.chain == "input" for r in plain):
        return False
    return any(r.chain == "output" for r in plain) or graph.chains["output"].policy == "accept"


def _interface_problem(rule: Rule) -> Diagnostic | None:
    for name in (rule.in_interface, rule.out_interface):
        if name is None or name.endswith("+"):
            continue  # the shared capability check reports wildcards
        if len(name) > MAX_INTERFACE or not re.fullmatch(INTERFACE_PATTERN, name):
            return Diagnostic(
                f"{TARGET} cannot express interface name '{name}'",
                rule.source,
                f"use letters, digits, '_' and '.', at most {MAX_INTERFACE} characters",
            )
    return None


def table_name(group: str) -> str:
    """Return a pf table name: letters, digits and '_', at most 31 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", group) or "_"
    return perimeter.fit_name(cleaned, MAX_TABLE_NAME)


def macro_name(service: str, protocol: str) -> str:
    """Return the macro name of a named service's ports for one protocol."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", f"svc_{service}_{protocol}")
    return perimeter.fit_name(cleaned, MAX_MACRO_NAME).replace("-", "_")


def _name_problems(graph: RuleGraph) -> list[Diagnostic]:
    problems = []
    seen: dict[str, str] = {LOCAL_TABLE: LOCAL_TABLE}
    for group, node in sorted(graph.host_groups.items()):
        name = table_name(group)
        if name in seen:
            problems.append(
                Diagnostic(
                    f"{TARGET} cannot express host group '{group}': its table name <{name}> "
                    f"is also used by '{seen[name]}'",
                    node.source,
                    "rename the host group",
                )
            )
        else:
            seen[name] = group
    return problems


# Rule text


def _port_text(item: PortRange) -> str:
    return str(item.low) if item.low == item.high else f"{item.low}:{item.high}"


def _address_text(network: Network) -> str:
    return str(network)


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + " ".join(items) + " }"


@dataclass
class _Tables:
    """Tables that the rules need: one per host group, one per negated address list."""

    entries: dict[str, list[str]]

    def group(self, graph: RuleGraph, group: str) -> str:
        name = table_name(group)
        self.entries[name] = [_address_text(n) for n in graph.host_groups[group].networks]
        return f"<{name}>"

    def anonymous(self, networks: tuple[Network, ...]) -> str:
        name = "neg_" + perimeter.content_digest(*(str(n) for n in networks))
        self.entries[name] = [_address_text(n) for n in networks]
        return f"<{name}>"


def _address(graph: RuleGraph, rule: Rule, match: AddressMatch | None, tables: _Tables) -> str:
    if match is None or not match.networks:
        return "any"
    family = rule.family or "ipv4"
    items: list[str] = []
    covered: list[Network] = []
    for group in match.groups:
        networks = perimeter.group_networks(graph, group, family)
        if networks:
            items.append(tables.group(graph, group))
            covered.extend(networks)
    items.extend(_address_text(n) for n in perimeter.subtract_networks(match.networks, covered))
    if not match.negated:
        return _list(items)
    if len(items) == 1:
        return "! " + items[0]
    # pf reads "! { a b }" as "not a or not b", which matches everything; a
    # negated table has the intended meaning.
    return "! " + tables.anonymous(match.networks)


def _ports(graph: RuleGraph, rule: Rule) -> tuple[str | None, dict[str, str]]:
    """Return the destination port text and the macros it uses."""
    if not rule.dports:
        return None, {}
    items: list[str] = []
    macros: dict[str, str] = {}
    covered: list[PortRange] = []
    for service, ports in perimeter.rule_service_ports(graph, rule):
        name = macro_name(service, rule.protocol or "")
        macros[name] = " ".join(_port_text(p) for p in ports)
        items.append(f"${name}")
        covered.extend(ports)
    items.extend(_port_text(p) for p in perimeter.subtract_ports(rule.dports, covered))
    return "{ " + " ".join(items) + " }", macros


def _action(rule: Rule) -> str:
    if rule.action == "accept":
        return "pass"
    if rule.action == "drop":
        return "block drop"
    return "block " + _return_option(rule.reject_with, rule.family)


def _return_option(reject_with: str | None, family: str | None) -> str:
    if reject_with is None:
        return "return"
    if reject_with == TCP_RESET:
        return "return-rst"
    v4, v6 = REJECT_CODES[reject_with]
    if family == "ipv4":
        return f"return-icmp({v4})"
    if family == "ipv6":
        return f"return-icmp6({v6})"
    return f"return-icmp({v4}, {v6})"


def _family(rule: Rule) -> str | None:
    if rule.family is None:
        return None
    return "inet" if rule.family == "ipv4" else "inet6"


def rule_line(graph: RuleGraph, rule: Rule, tables: _Tables, macros: dict[str, str]) -> str:
    """Render one policy rule as a quick pf rule."""
    direction = "out" if rule.chain in ("output", "forward") else "in"
    words = [_action(rule), direction]
    if rule.log:
        words.append("log")
    words.append("quick")
    on_interface = rule.out_interface if direction == "out" else rule.in_interface
    if on_interface:
        words += ["on", on_interface]
    family = _family(rule)
    if family:
        words.append(family)
    if rule.protocol:
        words += ["proto", PROTOCOLS[rule.protocol]]

    words += ["from", _address(graph, rule, rule.saddr, tables)]
    if rule.sports:
        words += ["port", "{ " + " ".join(_port_text(p) for p in rule.sports) + " }"]
    words += ["to", _address(graph, rule, rule.daddr, tables)]

    ports, used = _ports(graph, rule)
    macros.update(used)
    if ports:
        words += ["port", ports]
    if rule.icmp_types:
        table = ICMP_TYPES if rule.protocol == "icmp" else ICMPV6_TYPES
        keyword = "icmp-type" if rule.protocol == "icmp" else "icmp6-type"
        words += [keyword, _list([str(table[t].code) for t in rule.icmp_types])]

    if rule.chain == "forward":
        words += ["received-on", rule.in_interface or "any"]
    if rule.limit is not None:
        words += ["max-pkt-rate", f"{rule.limit.rate}/{RATE_SECONDS[rule.limit.unit]}"]
    if rule.action == "accept":
        words += ["keep", "state"]
    return " ".join(words)


# Layout


def _skip_reason(rule: Rule, skip_lo: bool) -> str | None:
    states = set(rule.ct_states)
    if states and states <= perimeter.RETURN_STATES and rule.action == "accept":
        return SKIP_RETURN
    if skip_lo and "lo" in (rule.in_interface, rule.out_interface):
        return SKIP_LOOPBACK
    return None


def _reference(graph: RuleGraph, source: Source, text: str) -> str:
    return f"{output_path(graph, source.file)}:{source.line}: {text}"


def _section(graph: RuleGraph, chain: str, tables: _Tables, macros: dict, skip_lo: bool) -> list:
    items: list[dict] = []
    for rule in graph.chains[chain].rules:
        reference = _reference(graph, rule.source, rule.text)
        reason = _skip_reason(rule, skip_lo)
        if reason is not None:
            items.append({"comments": [reference, f"left out: {reason}"]})
            continue
        comments = [reference]
        if rule.comment:
            comments.append(rule.comment)
        items.append({"comments": comments, "rule": rule_line(graph, rule, tables, macros)})
    return items


def _default_action(policy: str) -> str:
    return {"accept": "pass", "drop": "block drop", "reject": "block return"}[policy]


def _default_comment(graph: RuleGraph, chain: str) -> str:
    node = graph.chains[chain]
    if node.policy_source is None:
        return f"no default for {chain} in the policy: {node.policy}"
    return _reference(graph, node.policy_source, f"default {node.policy}")


def render_config(graph: RuleGraph) -> str:
    """Render pf.conf: options, tables, macros, defaults, then the quick rules."""
    skip_lo = uses_skip_on_lo(graph)
    tables = _Tables({})
    macros: dict[str, str] = {}
    forward = _section(graph, "forward", tables, macros, skip_lo)
    incoming = _section(graph, "input", tables, macros, skip_lo)
    outgoing = _section(graph, "output", tables, macros, skip_lo)
    forward_default = graph.chains["forward"].policy
    forward_line = f"{_default_action(forward_default)} out quick all received-on any"
    if forward_default == "accept":
        forward_line += " keep state"
    return perimeter.render_template(
        TEMPLATE,
        FILTERS,
        header=header_lines(graph, TARGET, "#"),
        skip_lo=skip_lo,
        local_table=LOCAL_TABLE,
        local_extra=list(LOCAL_EXTRA),
        tables=[{"name": n, "entries": tables.entries[n]} for n in sorted(tables.entries)],
        macros=[{"name": n, "value": macros[n]} for n in sorted(macros)],
        defaults=[
            {
                "comment": _default_comment(graph, "input"),
                "rule": _default_line("in", graph, "input"),
            },
            {
                "comment": _default_comment(graph, "output"),
                "rule": _default_line("out", graph, "output"),
            },
        ],
        forward=forward,
        forward_default={"comment": _default_comment(graph, "forward"), "rule": forward_line},
        incoming=incoming,
        outgoing=outgoing,
    )


def _default_line(direction: str, graph: RuleGraph, chain: str) -> str:
    policy = graph.chains[chain].policy
    line = f"{_default_action(policy)} {direction} all"
    return line + " keep state" if policy == "accept" else line


def pf_comment(text: str) -> str:
    """Return text for a '#' comment line that cannot continue onto the next line.

    Control characters become spaces. A backslash becomes '/', because pfctl
    joins a line ending in a backslash with the next one, even in a comment.
    """
    return perimeter.printable_ascii(text, " ").replace("\\", "/")


FILTERS = {"pf_comment": pf_comment}


@hookimpl
def polywall_exporters():
    return [PfExporter()]
