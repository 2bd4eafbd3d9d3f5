"""Cisco ASA exporter: object groups, extended access lists and their access-group bindings.

The output is a configuration snippet for configuration mode (ASA 9.x, with
unified IPv4 and IPv6 access lists). How the policy maps onto the ASA's two
filters is described in ``exporters.perimeter`` and docs/targets/cisco-asa.md.
Facts about names and limits come from the Cisco ASA Series Firewall CLI
Configuration Guide, 9.12, "Objects for Access Control" and "Access Control
Lists" chapters.
"""

from __future__ import annotations

import re

from compiler.errors import Diagnostic
from compiler.graph import PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters import perimeter
from exporters.common import header_lines
from exporters.perimeter import INBOUND, AddressOperand, PortOperand, SettingSpec

TARGET = "cisco-asa"
FILE = "cisco-asa.cfg"
TEMPLATE = "cisco-asa.j2"

# "Object names are limited to 64 characters, including letters, numbers, and
# these characters: .!@#$%^&()-_{}" (ASA 9.12 guide, Guidelines for Objects).
# Generated names keep to letters, digits, '.', '-' and '_'.
MAX_OBJECT_NAME = 64
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# "The text can be up to 100 characters in length" (ASA configuration guide,
# Adding Remarks to Access Lists).
MAX_REMARK = 100
# NOTE: the guides found here give no length limit for access list names or
# interface names (nameif); 64 and 48 are conservative guesses.
MAX_ACL_NAME = 64
MAX_INTERFACE_NAME = 48

SETTINGS = (
    SettingSpec(
        "inbound-acl",
        "outside_in",
        "access list for traffic from the outside",
        NAME_PATTERN,
        MAX_ACL_NAME,
        "letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "outbound-acl",
        "inside_in",
        "access list for traffic from the inside",
        NAME_PATTERN,
        MAX_ACL_NAME,
        "letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "outside-interface",
        "outside",
        "interface name (nameif) of the outside",
        NAME_PATTERN,
        MAX_INTERFACE_NAME,
        "an interface name (nameif)",
    ),
    SettingSpec(
        "inside-interface",
        "inside",
        "interface name (nameif) of the inside",
        NAME_PATTERN,
        MAX_INTERFACE_NAME,
        "an interface name (nameif)",
    ),
)

# ICMP type keywords of the ASA's access-list command, by polywall's type names.
ICMP_NAMES = {
    "echo-reply": "echo-reply",
    "destination-unreachable": "unreachable",
    "source-quench": "source-quench",
    "redirect": "redirect",
    "echo-request": "echo",
    "router-advertisement": "router-advertisement",
    "router-solicitation": "router-solicitation",
    "time-exceeded": "time-exceeded",
    "parameter-problem": "parameter-problem",
    "timestamp-request": "timestamp-request",
    "timestamp-reply": "timestamp-reply",
}
# NOTE: these ICMPv6 keywords were not checked against an ASA command reference.
# Type 143 has no keyword, so it is written as a number.
ICMPV6_NAMES = {
    "destination-unreachable": "unreachable",
    "packet-too-big": "packet-too-big",
    "time-exceeded": "time-exceeded",
    "parameter-problem": "parameter-problem",
    "echo-request": "echo",
    "echo-reply": "echo-reply",
    "mld-listener-query": "membership-query",
    "mld-listener-report": "membership-report",
    "mld-listener-done": "membership-reduction",
    "router-solicitation": "router-solicitation",
    "router-advertisement": "router-advertisement",
    "neighbor-solicitation": "neighbor-solicitation",
    "neighbor-advertisement": "neighbor-advertisement",
    "redirect": "neighbor-redirect",
    "mld2-listener-report": "143",
}
PROTOCOLS = {None: "ip", "tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmp6"}
ACTIONS = {"accept": "permit", "drop": "deny"}


class CiscoAsaExporter:
    name = TARGET
    description = "Cisco ASA object groups, extended access lists and access-group bindings"
    capabilities = frozenset(
        {
            "output-chain",
            "forward-chain",
            "log",
            "source-ports",
            "in-interface",
            "out-interface",
            "conntrack-states",
            "icmp-types",
            "comments",
            "ipv6",
        }
    )

    def check(self, graph: RuleGraph) -> list[Diagnostic]:
        values, problems = perimeter.read_settings(graph, TARGET, SETTINGS)
        problems += perimeter.distinct_settings(
            graph,
            TARGET,
            values,
            (("inbound-acl", "outbound-acl"), ("outside-interface", "inside-interface")),
        )
        problems += perimeter.check_rules(graph, TARGET, stateful=True)
        problems += _check_object_names(graph)
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_config(graph)}


def _check_object_names(graph: RuleGraph) -> list[Diagnostic]:
    """Report a host group whose object name equals a service group's: ASA names share one space."""
    objects = _objects(graph)
    services = {name for name, _ in objects["services"]}
    problems = []
    for name, _, group in objects["networks"]:
        if name in services:
            problems.append(
                Diagnostic(
                    f"{TARGET} cannot express host group '{group}' next to the service object "
                    f"'{name}': ASA objects and object groups share one name space",
                    graph.host_groups[group].source,
                    "rename the host group",
                )
            )
    return problems


# Names and text


def asa_name(name: str) -> str:
    """Return an object or access list name the ASA accepts, cut to 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if not cleaned or not cleaned[0].isalnum():
        cleaned = "o" + cleaned
    return perimeter.fit_name(cleaned, MAX_OBJECT_NAME)


def asa_remarks(text: str) -> list[str]:
    """Split text into remark texts of at most 100 printable ASCII characters.

    A remark runs to the end of its line, so only a line break could end it
    early; those and other control characters become spaces. '?' becomes '.',
    because the ASA command line shows help for '?' instead of taking it.
    """
    flat = perimeter.printable_ascii(text, " ").replace("?", ".").strip()
    flat = re.sub(r" {2,}", " ", flat) or "-"
    return [flat[i : i + MAX_REMARK].strip() or "-" for i in range(0, len(flat), MAX_REMARK)]


# Objects


def service_object_name(service: str, protocol: str) -> str:
    return asa_name(f"{service}-{protocol}")


def _objects(graph: RuleGraph) -> dict[str, list]:
    """Collect the network and service object groups the rules use, sorted by name."""
    networks: dict[str, tuple[str, str]] = {}
    services: dict[str, tuple[str, str]] = {}
    for rule in graph.rules():
        for side in ("source", "destination"):
            for operand in perimeter.address_operands(graph, rule, side):
                if operand.group is not None:
                    name = asa_name(
                        perimeter.group_object_name(graph, operand.group, operand.family)
                    )
                    networks[name] = (operand.group, operand.family)
        if rule.protocol in ("tcp", "udp"):
            for operand in perimeter.port_operands(graph, rule):
                if operand.service is not None:
                    services[service_object_name(operand.service, rule.protocol)] = (
                        operand.service,
                        rule.protocol,
                    )
    return {
        "networks": [(name, *networks[name]) for name in sorted(networks)],
        "services": [(name, services[name]) for name in sorted(services)],
    }


def _network_text(network) -> str:
    if network.version == 4:
        if network.prefixlen == 32:
            return f"host {network.network_address}"
        return f"{network.network_address} {network.netmask}"
    if network.prefixlen == 128:
        return f"host {network.network_address}"
    return str(network)


def _ports_text(item: PortRange) -> str:
    if item.low == item.high:
        return f"eq {item.low}"
    return f"range {item.low} {item.high}"


def _network_groups(graph: RuleGraph, objects) -> list[dict]:
    groups = []
    for name, group, family in objects["networks"]:
        members = [_network_text(n) for n in perimeter.group_networks(graph, group, family)]
        groups.append({"name": name, "members": members})
    return groups


def _service_groups(graph: RuleGraph, objects) -> list[dict]:
    groups = []
    for name, (service, protocol) in objects["services"]:
        members = [_ports_text(p) for p in graph.services[service].ports[protocol]]
        groups.append({"name": name, "protocol": protocol, "members": members})
    return groups


# Access control entries


def _address(graph: RuleGraph, operand: AddressOperand) -> dict:
    if operand.group is not None:
        name = perimeter.group_object_name(graph, operand.group, operand.family or "ipv4")
        return {"group": name, "text": ""}
    if operand.network is None:
        return {"group": None, "text": "any"}
    return {"group": None, "text": _network_text(operand.network)}


def _dport(operand: PortOperand, protocol: str) -> dict:
    if operand.service is not None:
        return {"group": service_object_name(operand.service, protocol), "text": ""}
    if operand.ports is None:
        return {"group": None, "text": ""}
    return {"group": None, "text": _ports_text(operand.ports)}


def rule_entries(graph: RuleGraph, rule: Rule) -> list[dict]:
    """Return the access control entries of one rule, in the order they are written."""
    protocol = rule.protocol
    sources = [_address(graph, o) for o in perimeter.address_operands(graph, rule, "source")]
    targets = [_address(graph, o) for o in perimeter.address_operands(graph, rule, "destination")]
    sports = [_ports_text(p) for p in rule.sports] or [""]
    if protocol in ("tcp", "udp"):
        dports = [_dport(o, protocol) for o in perimeter.port_operands(graph, rule)]
    elif rule.icmp_types:
        table = ICMP_NAMES if protocol == "icmp" else ICMPV6_NAMES
        dports = [{"group": None, "text": table[t]} for t in rule.icmp_types]
    else:
        dports = [{"group": None, "text": ""}]
    entries = []
    for source in sources:
        for sport in sports:
            for target in targets:
                for dport in dports:
                    entries.append(
                        {
                            "action": ACTIONS[rule.action],
                            "protocol": PROTOCOLS[protocol],
                            "source": source,
                            "sport": sport,
                            "destination": target,
                            "dport": dport,
                            "log": rule.log,
                        }
                    )
    return entries


def _acl_items(graph: RuleGraph, acl_filter: perimeter.PerimeterFilter) -> list[dict]:
    items: list[dict] = []
    previous = None
    for entry in acl_filter.entries:
        rule = entry.rule
        reference = perimeter.source_reference(graph, rule.source, rule.text)
        if entry.skip_reason is not None:
            if reference != previous:
                items.append({"remark": reference})
                items.append({"remark": f"left out: {entry.skip_reason}"})
            previous = reference
            continue
        if reference != previous:
            items.append({"remark": reference})
            if rule.comment:
                items.append({"remark": rule.comment})
            previous = reference
        items.extend({"entry": e} for e in rule_entries(graph, rule))
    if acl_filter.default_source is not None:
        reference = perimeter.source_reference(
            graph, acl_filter.default_source, f"default {acl_filter.default}"
        )
    else:
        reference = f"no default in the policy: {acl_filter.default}"
    items.append({"remark": reference})
    default = {
        "action": ACTIONS[acl_filter.default],
        "protocol": "ip",
        "source": {"group": None, "text": "any"},
        "sport": "",
        "destination": {"group": None, "text": "any"},
        "dport": {"group": None, "text": ""},
        "log": False,
    }
    items.append({"entry": default})
    return items


def render_config(graph: RuleGraph) -> str:
    """Render the configuration snippet: object groups, access lists, bindings."""
    values, _ = perimeter.read_settings(graph, TARGET, SETTINGS)
    objects = _objects(graph)
    acls = []
    for acl_filter in perimeter.perimeter_filters(graph, stateful=True):
        inbound = acl_filter.side == INBOUND
        acls.append(
            {
                "name": values["inbound-acl" if inbound else "outbound-acl"],
                "interface": values["outside-interface" if inbound else "inside-interface"],
                "side": acl_filter.side,
                "items": _acl_items(graph, acl_filter),
            }
        )
    return perimeter.render_template(
        TEMPLATE,
        FILTERS,
        header=header_lines(graph, TARGET, "!"),
        network_groups=_network_groups(graph, objects),
        service_groups=_service_groups(graph, objects),
        acls=acls,
    )


def asa_comment(text: str) -> str:
    """Return a '!' comment line with every control character replaced."""
    return perimeter.printable_ascii(text, " ")


FILTERS = {"asa_name": asa_name, "asa_remarks": asa_remarks, "asa_comment": asa_comment}


@hookimpl
def polywall_exporters():
    return [CiscoAsaExporter()]
