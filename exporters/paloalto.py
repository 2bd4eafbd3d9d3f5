"""Palo Alto PAN-OS exporter: address and service objects and a security rulebase.

Two files describe the same policy: ``paloalto.set``, ``set`` commands for
configure mode, and ``paloalto.xml``, the vsys element with the same objects
and rules for the XML API. How the policy maps onto the two zone pairs is
described in ``exporters.perimeter`` and docs/targets/paloalto.md.

Facts about PAN-OS come from the PAN-OS 9.1 Administrator's Guide, "Policy"
(any means ::/0, and every IPv4 address also matches IPv6 prefixes inside
::/96) and "Security Policy Actions" (drop with Send ICMP Unreachable,
reset-client).
"""

from __future__ import annotations

import ipaddress
import re
from xml.sax.saxutils import escape, quoteattr

from compiler.catalog import TCP_RESET
from compiler.errors import Diagnostic
from compiler.graph import Network, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters import perimeter
from exporters.common import header_lines
from exporters.perimeter import INBOUND, AddressOperand, SettingSpec

TARGET = "paloalto"
SET_FILE = "paloalto.set"
XML_FILE = "paloalto.xml"

# NOTE: 63 characters for object and rule names are the limit commonly given
# for PAN-OS 8.1 and later, but no Palo Alto page stating it was opened here.
# Generated names keep to letters, digits, '.', '-' and '_'.
MAX_NAME = 63
# NOTE: unverified limit for a rule description; longer comments are cut.
MAX_DESCRIPTION = 1023
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"

SETTINGS = (
    SettingSpec(
        "outside-zone",
        "untrust",
        "security zone of the outside",
        NAME_PATTERN,
        31,
        "a zone name: letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "inside-zone",
        "trust",
        "security zone of the inside",
        NAME_PATTERN,
        31,
        "a zone name: letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "vsys",
        "vsys1",
        "virtual system that the XML element is for",
        r"vsys[0-9]{1,3}",
        7,
        "a virtual system name such as vsys1",
    ),
)

ACTIONS = {"accept": "allow", "drop": "drop"}
# Applications that stand for a whole protocol; TCP and UDP use service objects.
APPLICATIONS = {"icmp": "icmp", "icmpv6": "ipv6-icmp"}
# Addresses PAN-OS reads as both families.
IPV4_MAPPED = ipaddress.ip_network("::/96")
ANY_IPV4 = ipaddress.ip_network("0.0.0.0/0")
# Service objects need a destination port; this one means every port.
ALL_PORTS = PortRange(0, 65535)
RESERVED_NAMES = frozenset({"any", "application-default"})


class PaloAltoExporter:
    name = TARGET
    description = "PAN-OS set commands and XML: address and service objects, security rules"
    capabilities = frozenset(
        {
            "output-chain",
            "forward-chain",
            "log",
            "reject",
            "reject-type",
            "source-ports",
            "in-interface",
            "out-interface",
            "conntrack-states",
            "comments",
            "ipv6",
        }
    )

    def check(self, graph: RuleGraph) -> list[Diagnostic]:
        values, problems = perimeter.read_settings(graph, TARGET, SETTINGS)
        problems += perimeter.distinct_settings(
            graph, TARGET, values, (("outside-zone", "inside-zone"),)
        )
        for rule in graph.rules():
            problem = _reject_problem(rule) or _family_problem(rule)
            if problem is not None:
                problems.append(problem)
        problems += perimeter.check_rules(graph, TARGET, stateful=True)
        problems += _name_problems(graph)
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        model = build_model(graph)
        return {
            SET_FILE: perimeter.render_template("paloalto-set.j2", FILTERS, **model),
            XML_FILE: perimeter.render_template("paloalto-xml.j2", FILTERS, **model),
        }


# Checks


def _reject_problem(rule: Rule) -> Diagnostic | None:
    if rule.action != "reject":
        return None
    if rule.reject_with == TCP_RESET and rule.protocol == "tcp":
        return None
    if rule.reject_with == "admin-prohibited":
        return None
    shown = f"with {rule.reject_with}" if rule.reject_with else "the default reply"
    return Diagnostic(
        f"{TARGET} cannot express this reject ({shown}): PAN-OS replies with a TCP reset "
        "(reset-client) or with ICMP administratively prohibited (drop with "
        "icmp-unreachable)",
        rule.source,
        "write 'with admin-prohibited', or 'with tcp-reset' on a tcp rule",
    )


def _family_problem(rule: Rule) -> Diagnostic | None:
    for match in (rule.saddr, rule.daddr):
        for network in match.networks if match else ():
            if network.version == 6 and network.overlaps(IPV4_MAPPED):
                return Diagnostic(
                    f"{TARGET} cannot express the IPv6 network {network}: PAN-OS matches every "
                    "IPv4 address against IPv6 prefixes inside ::/96",
                    rule.source,
                    "use IPv6 networks outside ::/96",
                )
    if rule.family == "ipv6" and not _has_addresses(rule) and rule.protocol != "icmpv6":
        return Diagnostic(
            f"{TARGET} cannot express an IPv6-only rule without addresses: 'any' and ::/0 "
            "also match IPv4",
            rule.source,
            "name IPv6 addresses in the rule",
        )
    return None


def _has_addresses(rule: Rule) -> bool:
    return any(m is not None and m.networks for m in (rule.saddr, rule.daddr))


def _name_problems(graph: RuleGraph) -> list[Diagnostic]:
    """Report a host group whose address-group name is reserved or taken by another object."""
    objects = collect_objects(graph)
    taken = {a["name"] for a in objects["addresses"]} | {s["name"] for s in objects["services"]}
    problems = []
    for group_name, node in sorted(graph.host_groups.items()):
        for family in ("ipv4", "ipv6"):
            if not perimeter.group_networks(graph, group_name, family):
                continue
            name = pan_name(perimeter.group_object_name(graph, group_name, family))
            if name in taken or name in RESERVED_NAMES:
                problems.append(
                    Diagnostic(
                        f"{TARGET} cannot express host group '{group_name}': its address-group "
                        f"name '{name}' is reserved or also an address or service object name",
                        node.source,
                        "rename the host group",
                    )
                )
    return problems


# Names and text


def pan_name(name: str) -> str:
    """Return a PAN-OS object name: letters, digits, '.', '-' and '_', at most 63 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if not cleaned or not cleaned[0].isalnum():
        cleaned = "n" + cleaned
    return perimeter.fit_name(cleaned, MAX_NAME)


def _flat(text: str) -> str:
    flat = perimeter.printable_ascii(text, " ")
    return re.sub(r" {2,}", " ", flat).strip()[:MAX_DESCRIPTION]


def pan_quote(text: str) -> str:
    """Return text as one double-quoted CLI word that cannot end the command early.

    Control characters and characters outside ASCII become spaces, double quotes
    become single quotes and backslashes '/', so the word has no escapes; '?'
    becomes '.', because the CLI shows help for '?'.
    """
    flat = _flat(text.replace('"', "'").replace("\\", "/").replace("?", "."))
    return '"' + flat + '"'


def pan_comment(text: str) -> str:
    return perimeter.printable_ascii(text, " ")


def xml_text(text: str) -> str:
    """Return text as XML character data: control characters become spaces, markup is escaped."""
    kept = "".join(" " if ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return escape(re.sub(r" {2,}", " ", kept).strip()[:MAX_DESCRIPTION])


def xml_attribute(text: str) -> str:
    return quoteattr(text)


def xml_comment(text: str) -> str:
    """Return text for an XML comment: printable ASCII without '--'."""
    flat = perimeter.printable_ascii(text, " ")
    while "--" in flat:
        flat = flat.replace("--", "- ")
    return flat.rstrip("-")


def address_name(network: Network) -> str:
    text = str(network).replace(":", "_").replace("/", "-")
    return pan_name(f"net-{text}")


def _port_list(ports) -> str:
    return ",".join(str(p) for p in ports)


def _port_label(ports) -> str:
    return "_".join(str(p) for p in ports)


# Objects


def _service(protocol: str, dports, sports=()) -> dict:
    dports = tuple(dports) or (ALL_PORTS,)
    name = f"{protocol}-{_port_label(dports) if dports != (ALL_PORTS,) else 'any'}"
    if sports:
        name += f"-src-{_port_label(sports)}"
    return {
        "name": pan_name(name),
        "protocol": protocol,
        "port": _port_list(dports),
        "source_port": _port_list(sports) if sports else None,
    }


def named_service_object(graph: RuleGraph, service: str, protocol: str) -> dict:
    item = _service(protocol, graph.services[service].ports[protocol])
    item["name"] = pan_name(f"{service}-{protocol}")
    return item


def rule_services(graph: RuleGraph, rule: Rule) -> list[dict]:
    """Return the service objects a rule matches; empty for any service."""
    protocol = rule.protocol
    if protocol not in ("tcp", "udp"):
        return []
    if rule.sports:
        return [_service(protocol, rule.dports, rule.sports)]
    services = []
    for operand in perimeter.port_operands(graph, rule):
        if operand.service is not None:
            services.append(named_service_object(graph, operand.service, protocol))
        elif operand.ports is not None:
            services.append(_service(protocol, (operand.ports,)))
        else:
            services.append(_service(protocol, ()))
    return services


def _operand_name(graph: RuleGraph, operand: AddressOperand) -> str:
    if operand.group is not None:
        return pan_name(perimeter.group_object_name(graph, operand.group, operand.family or "ipv4"))
    if operand.network is None:
        return "any"
    return address_name(operand.network)


def rule_addresses(graph: RuleGraph, rule: Rule, side: str) -> list[AddressOperand]:
    """Return one side's operands; an IPv4-only rule without addresses gets 0.0.0.0/0."""
    operands = perimeter.address_operands(graph, rule, side)
    only_ipv4 = rule.family == "ipv4" and rule.protocol != "icmp" and not _has_addresses(rule)
    if side == "source" and only_ipv4:
        return [AddressOperand(network=ANY_IPV4)]
    return operands


def collect_objects(graph: RuleGraph) -> dict[str, list[dict]]:
    """Collect the addresses, address groups and services the rules use, sorted by name."""
    addresses: dict[str, Network] = {}
    groups: dict[str, list[str]] = {}
    services: dict[str, dict] = {}
    for rule in graph.rules():
        for side in ("source", "destination"):
            for operand in rule_addresses(graph, rule, side):
                if operand.network is not None:
                    addresses[address_name(operand.network)] = operand.network
                elif operand.group is not None:
                    members = perimeter.group_networks(
                        graph, operand.group, operand.family or "ipv4"
                    )
                    for network in members:
                        addresses[address_name(network)] = network
                    groups[_operand_name(graph, operand)] = [address_name(n) for n in members]
        for service in rule_services(graph, rule):
            services[service["name"]] = service
    return {
        "addresses": [{"name": n, "prefix": str(addresses[n])} for n in sorted(addresses)],
        "groups": [{"name": n, "members": groups[n]} for n in sorted(groups)],
        "services": [services[n] for n in sorted(services)],
    }


# Rules


def rule_name(rule: Rule) -> str:
    """Name a rule after its action, its first service or protocol, and a hash of its matches."""
    if rule.services:
        label = rule.services[0]
    else:
        label = rule.protocol or "any"
    verb = {"accept": "allow", "drop": "drop", "reject": "reject"}[rule.action]
    digest = perimeter.content_digest(perimeter.rule_fingerprint(rule))
    return pan_name(f"{verb}-{perimeter.fit_name(label, 40)}-{digest}")


def _action(rule: Rule) -> tuple[str, bool]:
    """Return the PAN-OS action and whether it sends ICMP unreachable."""
    if rule.action == "reject":
        if rule.reject_with == TCP_RESET:
            return "reset-client", False
        return "drop", True
    return ACTIONS[rule.action], False


def _rule_item(graph: RuleGraph, rule: Rule, name: str, zones: tuple[str, str]) -> dict:
    action, unreachable = _action(rule)
    services = rule_services(graph, rule)
    return {
        "name": name,
        "from": zones[0],
        "to": zones[1],
        "sources": [_operand_name(graph, o) for o in rule_addresses(graph, rule, "source")],
        "destinations": [
            _operand_name(graph, o) for o in rule_addresses(graph, rule, "destination")
        ],
        "applications": [APPLICATIONS.get(rule.protocol or "", "any")],
        "services": [s["name"] for s in services] or ["any"],
        "action": action,
        "icmp_unreachable": unreachable,
        "log_end": "yes" if rule.log else "no",
        "description": rule.comment,
    }


def _default_item(graph: RuleGraph, side_filter, name: str, zones: tuple[str, str]) -> dict:
    action = {"accept": "allow", "drop": "drop"}[side_filter.default]
    return {
        "name": name,
        "from": zones[0],
        "to": zones[1],
        "sources": ["any"],
        "destinations": ["any"],
        "applications": ["any"],
        "services": ["any"],
        "action": action,
        "icmp_unreachable": False,
        "log_end": "no",
        "description": None,
    }


def rulebase(graph: RuleGraph, values: dict[str, str]) -> list[dict]:
    """Return the comments and rules of both zone pairs, inbound first, each ending in its default."""
    items: list[dict] = []
    used: dict[str, int] = {}
    outside, inside = values["outside-zone"], values["inside-zone"]
    for side_filter in perimeter.perimeter_filters(graph, stateful=True):
        inbound = side_filter.side == INBOUND
        zones = (outside, inside) if inbound else (inside, outside)
        previous = None
        for entry in side_filter.entries:
            rule = entry.rule
            reference = perimeter.source_reference(graph, rule.source, rule.text)
            if reference != previous:
                items.append({"comment": reference})
                previous = reference
            if entry.skip_reason is not None:
                items.append({"comment": f"left out: {entry.skip_reason}"})
                continue
            name = rule_name(rule)
            used[name] = used.get(name, 0) + 1
            if used[name] > 1:
                name = pan_name(f"{name}-{used[name]}")
            items.append({"rule": _rule_item(graph, rule, name, zones)})
        if side_filter.default_source is not None:
            reference = perimeter.source_reference(
                graph, side_filter.default_source, f"default {side_filter.default}"
            )
        else:
            reference = f"no default in the policy: {side_filter.default}"
        items.append({"comment": reference})
        name = pan_name(f"{graph.name}-default-{'in' if inbound else 'out'}")
        items.append({"rule": _default_item(graph, side_filter, name, zones)})
    return items


def build_model(graph: RuleGraph) -> dict:
    """Return the template context shared by the set and the XML file."""
    values, _ = perimeter.read_settings(graph, TARGET, SETTINGS)
    objects = collect_objects(graph)
    return {
        "header": header_lines(graph, TARGET, "#"),
        "vsys": values["vsys"],
        "addresses": objects["addresses"],
        "groups": objects["groups"],
        "services": objects["services"],
        "items": rulebase(graph, values),
    }


FILTERS = {
    "pan_name": pan_name,
    "pan_quote": pan_quote,
    "pan_comment": pan_comment,
    "xml_text": xml_text,
    "xml_attribute": xml_attribute,
    "xml_comment": xml_comment,
}


@hookimpl
def polywall_exporters():
    return [PaloAltoExporter()]
