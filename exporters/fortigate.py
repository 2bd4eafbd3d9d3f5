"""FortiGate exporter: FortiOS CLI for addresses, custom services and firewall policies.

The output is a CLI script for FortiOS 6.4 and later, where one firewall
policy can carry IPv4 addresses (srcaddr, dstaddr) and IPv6 addresses
(srcaddr6, dstaddr6). How the policy maps onto the two interface pairs is
described in ``exporters.perimeter`` and docs/targets/fortigate.md.

Limits come from the FortiOS 7.2 CLI Reference ("config firewall address":
names at most 79 characters, comments at most 255; "config firewall service
group": names at most 79 characters).
"""

from __future__ import annotations

import re

from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES
from compiler.errors import Diagnostic
from compiler.graph import Network, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters import perimeter
from exporters.common import header_lines, output_path
from exporters.perimeter import INBOUND, AddressOperand, SettingSpec

TARGET = "fortigate"
FILE = "fortigate.conf"
TEMPLATE = "fortigate.j2"

MAX_NAME = 79
# NOTE: 35 characters for a policy name and for an interface name, and 1023
# for policy comments, are the sizes commonly given for FortiOS 6.4 and 7.x.
# No page stating them was opened here.
MAX_POLICY_NAME = 35
MAX_INTERFACE = 35
MAX_COMMENTS = 1023
INTERFACE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"

SETTINGS = (
    SettingSpec(
        "outside-interface",
        "port1",
        "interface or zone on the outside (srcintf of inbound policies)",
        INTERFACE_PATTERN,
        MAX_INTERFACE,
        "an interface or zone name: letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "inside-interface",
        "port2",
        "interface or zone on the inside (dstintf of inbound policies)",
        INTERFACE_PATTERN,
        MAX_INTERFACE,
        "an interface or zone name: letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "first-policy-id",
        "1000",
        "policy ID of the first generated policy; the others follow in order",
        r"[1-9][0-9]{0,8}",
        9,
        "a number from 1 to 999999999",
    ),
)

# Address objects FortiOS predefines in both address tables.
RESERVED_ADDRESSES = frozenset({"all", "none"})
ALL_PORTS = PortRange(0, 65535)


class FortigateExporter:
    name = TARGET
    description = "FortiOS CLI: addresses, address groups, custom services and firewall policies"
    capabilities = frozenset(
        {
            "output-chain",
            "forward-chain",
            "log",
            "reject",
            "reject-type",
            "default-reject",
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
            graph, TARGET, values, (("outside-interface", "inside-interface"),)
        )
        problems += perimeter.reject_type_problems(
            graph, TARGET, "send-deny-packet sends a TCP reset for TCP and an ICMP unreachable otherwise"
        )
        problems += perimeter.check_rules(graph, TARGET, stateful=True)
        problems += _name_problems(graph)
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_config(graph)}


def _name_problems(graph: RuleGraph) -> list[Diagnostic]:
    problems = []
    for group_name, node in sorted(graph.host_groups.items()):
        for family in ("ipv4", "ipv6"):
            if not perimeter.group_networks(graph, group_name, family):
                continue
            name = forti_name(perimeter.group_object_name(graph, group_name, family))
            if name.lower() in RESERVED_ADDRESSES or name.startswith("net-"):
                problems.append(
                    Diagnostic(
                        f"{TARGET} cannot express host group '{group_name}': its address group "
                        f"name '{name}' is predefined or looks like a generated address name",
                        node.source,
                        "rename the host group",
                    )
                )
    return problems


# Names and text


def forti_name(name: str, max_length: int = MAX_NAME) -> str:
    """Return an object name of letters, digits, '.', '-' and '_', at most 79 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if not cleaned or not cleaned[0].isalnum():
        cleaned = "n" + cleaned
    return perimeter.fit_name(cleaned, max_length)


def forti_quote(text: str) -> str:
    """Return text as one double-quoted FortiOS string without escape sequences.

    Control characters and characters outside ASCII become spaces, double
    quotes become single quotes and backslashes '/', because FortiOS reads a
    backslash as an escape; '?' becomes '.', because the CLI shows help for it.
    """
    flat = perimeter.printable_ascii(text, " ")
    flat = flat.replace('"', "'").replace("\\", "/").replace("?", ".")
    flat = re.sub(r" {2,}", " ", flat).strip()[:MAX_COMMENTS]
    return '"' + (flat or "-") + '"'


def forti_comment(text: str) -> str:
    return perimeter.printable_ascii(text, " ")


def address_name(network: Network) -> str:
    text = str(network).replace(":", "_").replace("/", "-")
    return forti_name(f"net-{text}")


def _port_text(item: PortRange) -> str:
    return str(item.low) if item.low == item.high else f"{item.low}-{item.high}"


# Services


def _port_service(protocol: str, dports, sports=()) -> dict:
    dports = tuple(dports) or (ALL_PORTS,)
    label = "_".join(_port_text(p) for p in dports) if dports != (ALL_PORTS,) else "any"
    name = f"{protocol}-{label}"
    if sports:
        name += "-src-" + "_".join(_port_text(p) for p in sports)
    if sports:
        ranges = [f"{_port_text(d)}:{_port_text(s)}" for d in dports for s in sports]
    else:
        ranges = [_port_text(d) for d in dports]
    return {
        "name": forti_name(name),
        "settings": [(f"{protocol}-portrange", " ".join(ranges))],
    }


def _icmp_service(protocol: str, icmp_type: str | None) -> dict:
    keyword = "ICMP" if protocol == "icmp" else "ICMP6"
    prefix = "icmp" if protocol == "icmp" else "icmp6"
    if icmp_type is None:
        return {"name": f"{prefix}-any", "settings": [("protocol", keyword)]}
    table = ICMP_TYPES if protocol == "icmp" else ICMPV6_TYPES
    code = table[icmp_type].code
    return {
        "name": f"{prefix}-{code}",
        "settings": [("protocol", keyword), ("icmptype", str(code))],
    }


def rule_services(graph: RuleGraph, rule: Rule) -> list[dict]:
    """Return the custom services a rule matches; empty for any service."""
    protocol = rule.protocol
    if protocol is None:
        return []
    if protocol in ("icmp", "icmpv6"):
        return [_icmp_service(protocol, t) for t in rule.icmp_types] or [
            _icmp_service(protocol, None)
        ]
    if rule.sports:
        return [_port_service(protocol, rule.dports, rule.sports)]
    services = []
    for operand in perimeter.port_operands(graph, rule):
        if operand.service is not None:
            item = _port_service(protocol, graph.services[operand.service].ports[protocol])
            item["name"] = forti_name(f"{operand.service}-{protocol}")
            services.append(item)
        elif operand.ports is not None:
            services.append(_port_service(protocol, (operand.ports,)))
        else:
            services.append(_port_service(protocol, ()))
    return services


# Addresses


def _operand_name(graph: RuleGraph, operand: AddressOperand) -> str:
    if operand.group is not None:
        return forti_name(
            perimeter.group_object_name(graph, operand.group, operand.family or "ipv4")
        )
    if operand.network is None:
        return "all"
    return address_name(operand.network)


def _address_text(network: Network) -> tuple[str, str]:
    if network.version == 4:
        return "subnet", f"{network.network_address} {network.netmask}"
    return "ip6", str(network)


def collect_objects(graph: RuleGraph) -> dict[str, list[dict]]:
    """Collect addresses and groups per family, and custom services, sorted by name."""
    addresses: dict[str, dict[str, Network]] = {"ipv4": {}, "ipv6": {}}
    groups: dict[str, dict[str, list[str]]] = {"ipv4": {}, "ipv6": {}}
    services: dict[str, dict] = {}
    for rule in graph.rules():
        for side in ("source", "destination"):
            for operand in perimeter.address_operands(graph, rule, side):
                if operand.network is not None:
                    family = "ipv4" if operand.network.version == 4 else "ipv6"
                    addresses[family][address_name(operand.network)] = operand.network
                elif operand.group is not None:
                    family = operand.family or "ipv4"
                    members = perimeter.group_networks(graph, operand.group, family)
                    for network in members:
                        addresses[family][address_name(network)] = network
                    groups[family][_operand_name(graph, operand)] = [
                        address_name(n) for n in members
                    ]
        for service in rule_services(graph, rule):
            services[service["name"]] = service
    out: dict[str, list[dict]] = {}
    for family, suffix in (("ipv4", ""), ("ipv6", "6")):
        found = addresses[family]
        out["addresses" + suffix] = [
            {"name": n, "setting": _address_text(found[n])} for n in sorted(found)
        ]
        out["groups" + suffix] = [
            {"name": n, "members": groups[family][n]} for n in sorted(groups[family])
        ]
    out["services"] = [services[n] for n in sorted(services)]
    return out


# Policies


def policy_name(rule: Rule) -> str:
    """Name a policy after its action and a hash of what it matches, within 35 characters."""
    label = rule.services[0] if rule.services else rule.protocol or "any"
    verb = {"accept": "allow", "drop": "drop", "reject": "reject"}[rule.action]
    digest = perimeter.content_digest(perimeter.rule_fingerprint(rule))
    return forti_name(f"{verb}-{perimeter.fit_name(label, 16)}-{digest}", MAX_POLICY_NAME)


def _addresses(graph: RuleGraph, rule: Rule, side: str) -> list[str]:
    return [_operand_name(graph, o) for o in perimeter.address_operands(graph, rule, side)]


def _policy(graph: RuleGraph, rule: Rule, name: str, interfaces: tuple[str, str]) -> dict:
    sources = _addresses(graph, rule, "source")
    destinations = _addresses(graph, rule, "destination")
    services = [s["name"] for s in rule_services(graph, rule)] or ["ALL"]
    reference = f"{output_path(graph, rule.source.file)}:{rule.source.line}"
    comments = f"{reference}: {rule.comment}" if rule.comment else f"{reference}: {rule.text}"
    return {
        "name": name,
        "srcintf": interfaces[0],
        "dstintf": interfaces[1],
        "action": "accept" if rule.action == "accept" else "deny",
        "send_deny_packet": rule.action == "reject",
        "srcaddr": sources if "ipv4" in rule.families else None,
        "dstaddr": destinations if "ipv4" in rule.families else None,
        # A rule for both families has no addresses, so 'all' on both sides.
        "srcaddr6": sources if "ipv6" in rule.families else None,
        "dstaddr6": destinations if "ipv6" in rule.families else None,
        "service": services,
        "logtraffic": "all" if rule.log else "disable",
        "comments": comments,
    }


def policies(graph: RuleGraph, values: dict[str, str]) -> list[dict]:
    """Return comments and policies of both directions, each ending in its default."""
    items: list[dict] = []
    used: dict[str, int] = {}
    outside, inside = values["outside-interface"], values["inside-interface"]
    policy_id = int(values["first-policy-id"])
    for side_filter in perimeter.perimeter_filters(graph, stateful=True):
        inbound = side_filter.side == INBOUND
        interfaces = (outside, inside) if inbound else (inside, outside)
        for entry in side_filter.entries:
            rule = entry.rule
            if entry.skip_reason is not None:
                reference = perimeter.source_reference(graph, rule.source, rule.text)
                items.append({"comment": f"{reference} (left out: {entry.skip_reason})"})
                continue
            name = policy_name(rule)
            used[name] = used.get(name, 0) + 1
            if used[name] > 1:
                name = forti_name(f"{name[:31]}-{used[name]}", MAX_POLICY_NAME)
            policy = _policy(graph, rule, name, interfaces)
            policy["id"] = policy_id
            policy_id += 1
            items.append({"policy": policy})
        if side_filter.default_source is not None:
            source = side_filter.default_source
            comments = f"{output_path(graph, source.file)}:{source.line}: default"
        else:
            comments = "no default in the policy:"
        default = side_filter.default
        items.append(
            {
                "policy": {
                    "id": policy_id,
                    "name": forti_name(
                        f"{graph.name[:22]}-default-{'in' if inbound else 'out'}", MAX_POLICY_NAME
                    ),
                    "srcintf": interfaces[0],
                    "dstintf": interfaces[1],
                    "action": "accept" if default == "accept" else "deny",
                    "send_deny_packet": default == "reject",
                    "srcaddr": ["all"],
                    "dstaddr": ["all"],
                    "srcaddr6": ["all"],
                    "dstaddr6": ["all"],
                    "service": ["ALL"],
                    "logtraffic": "disable",
                    "comments": f"{comments} {default}",
                }
            }
        )
        policy_id += 1
    return items


def render_config(graph: RuleGraph) -> str:
    """Render the CLI script: addresses, groups, services, then the policies in order."""
    values, _ = perimeter.read_settings(graph, TARGET, SETTINGS)
    objects = collect_objects(graph)
    items = policies(graph, values)
    ids = [item["policy"]["id"] for item in items if "policy" in item]
    return perimeter.render_template(
        TEMPLATE,
        FILTERS,
        header=header_lines(graph, TARGET, "#"),
        moves=list(zip(ids[1:], ids[:-1])),
        items=items,
        **objects,
    )


FILTERS = {"forti_name": forti_name, "forti_quote": forti_quote, "forti_comment": forti_comment}


@hookimpl
def polywall_exporters():
    return [FortigateExporter()]
