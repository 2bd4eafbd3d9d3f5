"""Juniper SRX exporter: ``set`` commands for the global address book, applications and policies.

The output is the form operators paste with ``load set terminal``: global
address-book entries and address-sets, applications and application-sets,
and ``security policies from-zone X to-zone Y`` in policy order, each zone
pair deleted first so that a reload keeps the order. How the policy maps onto
the two zone pairs is described in ``exporters.perimeter`` and
docs/targets/juniper-srx.md.
"""

from __future__ import annotations

import re

from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES
from compiler.errors import Diagnostic
from compiler.graph import Network, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters import perimeter
from exporters.common import header_lines
from exporters.perimeter import INBOUND, AddressOperand, SettingSpec

TARGET = "juniper-srx"
FILE = "juniper-srx.set"
TEMPLATE = "juniper-srx.j2"

# NOTE: 63 characters is the limit commonly given for Junos security object
# and policy names; no Juniper page stating it was found here.
MAX_NAME = 63
# NOTE: unverified limit for a policy description; longer comments are cut.
MAX_DESCRIPTION = 255
ZONE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"

SETTINGS = (
    SettingSpec(
        "outside-zone",
        "untrust",
        "security zone of the outside",
        ZONE_PATTERN,
        MAX_NAME,
        "a zone name: letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "inside-zone",
        "trust",
        "security zone of the inside",
        ZONE_PATTERN,
        MAX_NAME,
        "a zone name: letters, digits, '.', '-' or '_'",
    ),
)

ACTIONS = {"accept": "permit", "drop": "deny", "reject": "reject"}
# Addresses every Junos address book predefines.
RESERVED_ADDRESSES = frozenset({"any", "any-ipv4", "any-ipv6"})
PROTOCOLS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmp6"}


class JuniperSrxExporter:
    name = TARGET
    description = "Juniper SRX set commands: address book, applications and zone-pair policies"
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
            graph, TARGET, values, (("outside-zone", "inside-zone"),)
        )
        problems += perimeter.reject_type_problems(
            graph, TARGET, "a reject policy sends a TCP reset for TCP and an ICMP unreachable otherwise"
        )
        problems += perimeter.check_rules(graph, TARGET, stateful=True)
        problems += _check_object_names(graph)
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_config(graph)}


# Names and text


def srx_name(name: str) -> str:
    """Return a Junos object name: letters, digits, '.', '-' and '_', at most 63 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if not cleaned or not cleaned[0].isalnum():
        cleaned = "n" + cleaned
    return perimeter.fit_name(cleaned, MAX_NAME)


def srx_quote(text: str) -> str:
    """Return text as a quoted Junos string that cannot end the command early.

    Control characters become spaces, double quotes become single quotes and
    backslashes become '/', so the string has no escape sequences at all; '?'
    becomes '.', because the Junos command line shows help for '?'.
    """
    flat = perimeter.printable_ascii(text, " ").replace('"', "'").replace("\\", "/")
    flat = re.sub(r" {2,}", " ", flat.replace("?", ".")).strip()
    return '"' + flat[:MAX_DESCRIPTION] + '"'


def srx_comment(text: str) -> str:
    return perimeter.printable_ascii(text, " ")


def address_name(network: Network) -> str:
    """Name an address-book entry after its prefix, so that names follow content."""
    text = str(network).replace(":", "_").replace("/", "-")
    return srx_name(f"net-{text}")


def _port_text(item: PortRange) -> str:
    return str(item.low) if item.low == item.high else f"{item.low}-{item.high}"


# Applications


def _port_application(protocol: str, dport: PortRange | None, sport: PortRange | None) -> dict:
    name = f"{protocol}-{_port_text(dport) if dport else 'any'}"
    if sport is not None:
        name += f"-src-{_port_text(sport)}"
    settings = [("protocol", protocol)]
    if sport is not None:
        settings.append(("source-port", _port_text(sport)))
    if dport is not None:
        settings.append(("destination-port", _port_text(dport)))
    return {"name": srx_name(name), "settings": settings}


def _icmp_application(protocol: str, icmp_type: str | None) -> dict:
    keyword = PROTOCOLS[protocol]
    if icmp_type is None:
        return {"name": srx_name(f"{keyword}-any"), "settings": [("protocol", keyword)]}
    table = ICMP_TYPES if protocol == "icmp" else ICMPV6_TYPES
    code = table[icmp_type].code
    type_keyword = "icmp-type" if protocol == "icmp" else "icmp6-type"
    return {
        "name": srx_name(f"{keyword}-{code}"),
        "settings": [("protocol", keyword), (type_keyword, str(code))],
    }


def service_set_name(service: str, protocol: str) -> str:
    return srx_name(f"{service}-{protocol}")


def rule_applications(graph: RuleGraph, rule: Rule) -> tuple[list[str], list[dict], list[dict]]:
    """Return the application names a rule matches, the applications and the sets they need."""
    protocol = rule.protocol
    if protocol is None:
        return ["any"], [], []
    if protocol in ("icmp", "icmpv6"):
        apps = [_icmp_application(protocol, t) for t in rule.icmp_types] or [
            _icmp_application(protocol, None)
        ]
        return [a["name"] for a in apps], apps, []
    if rule.sports:
        apps = [
            _port_application(protocol, dport, sport)
            for sport in rule.sports
            for dport in (list(rule.dports) or [None])
        ]
        return [a["name"] for a in apps], apps, []
    names: list[str] = []
    apps: list[dict] = []
    sets: list[dict] = []
    for operand in perimeter.port_operands(graph, rule):
        if operand.service is not None:
            members = [
                _port_application(protocol, item, None)
                for item in graph.services[operand.service].ports[protocol]
            ]
            apps.extend(members)
            name = service_set_name(operand.service, protocol)
            sets.append({"name": name, "members": [m["name"] for m in members]})
            names.append(name)
        else:
            app = _port_application(protocol, operand.ports, None)
            apps.append(app)
            names.append(app["name"])
    return names, apps, sets


# Addresses


def _address_names(graph: RuleGraph, rule: Rule, side: str) -> list[str]:
    names = []
    for operand in perimeter.address_operands(graph, rule, side):
        names.append(_operand_name(graph, operand))
    return names


def _operand_name(graph: RuleGraph, operand: AddressOperand) -> str:
    if operand.group is not None:
        return srx_name(perimeter.group_object_name(graph, operand.group, operand.family or "ipv4"))
    if operand.network is None:
        return "any"
    return address_name(operand.network)


def _address_book(graph: RuleGraph) -> tuple[list[dict], list[dict]]:
    """Collect the addresses and address-sets the rules use, sorted by name."""
    addresses: dict[str, Network] = {}
    sets: dict[str, list[str]] = {}
    for rule in graph.rules():
        for side in ("source", "destination"):
            for operand in perimeter.address_operands(graph, rule, side):
                if operand.network is not None:
                    addresses[address_name(operand.network)] = operand.network
                elif operand.group is not None:
                    family = operand.family or "ipv4"
                    members = perimeter.group_networks(graph, operand.group, family)
                    for network in members:
                        addresses[address_name(network)] = network
                    sets[_operand_name(graph, operand)] = [address_name(n) for n in members]
    return (
        [{"name": name, "prefix": str(addresses[name])} for name in sorted(addresses)],
        [{"name": name, "members": sets[name]} for name in sorted(sets)],
    )


def _check_object_names(graph: RuleGraph) -> list[Diagnostic]:
    """Report a host group whose address-set name equals an address or application name."""
    addresses, _ = _address_book(graph)
    taken = {a["name"] for a in addresses}
    application_names: set[str] = set()
    for rule in graph.rules():
        _, apps, sets = rule_applications(graph, rule)
        application_names |= {a["name"] for a in apps}
        application_names |= {s["name"] for s in sets}
    problems = []
    for service in sorted(graph.services):
        if service.startswith("junos-"):
            problems.append(
                Diagnostic(
                    f"{TARGET} cannot express service '{service}': Junos reserves names that "
                    "start with 'junos-' for its predefined applications",
                    graph.services[service].source,
                    "rename the service",
                )
            )
    for group_name, node in sorted(graph.host_groups.items()):
        for family in ("ipv4", "ipv6"):
            if not perimeter.group_networks(graph, group_name, family):
                continue
            name = srx_name(perimeter.group_object_name(graph, group_name, family))
            if name in taken or name in application_names or name in RESERVED_ADDRESSES:
                problems.append(
                    Diagnostic(
                        f"{TARGET} cannot express host group '{group_name}': its address-set "
                        f"name '{name}' is predefined or also a generated address or application name",
                        node.source,
                        "rename the host group",
                    )
                )
    return problems


# Policies


def policy_name(rule: Rule) -> str:
    """Name a policy after its action, its first service or protocol, and a hash of its matches.

    The hash follows what the rule matches, not its position, so the name
    stays when unrelated rules are added or removed.
    """
    if rule.services:
        label = rule.services[0]
    elif rule.protocol:
        label = PROTOCOLS[rule.protocol]
    else:
        label = "any"
    verb = {"accept": "allow", "drop": "drop", "reject": "reject"}[rule.action]
    digest = perimeter.content_digest(perimeter.rule_fingerprint(rule))
    return srx_name(f"{verb}-{perimeter.fit_name(label, 40)}-{digest}")


def _policy_items(graph: RuleGraph, zone_filter: perimeter.PerimeterFilter) -> list[dict]:
    items: list[dict] = []
    used: dict[str, int] = {}
    previous = None
    for entry in zone_filter.entries:
        rule = entry.rule
        reference = perimeter.source_reference(graph, rule.source, rule.text)
        if entry.skip_reason is not None:
            if reference != previous:
                items.append({"comment": reference})
                items.append({"comment": f"left out: {entry.skip_reason}"})
            previous = reference
            continue
        if reference != previous:
            items.append({"comment": reference})
            previous = reference
        name = policy_name(rule)
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = srx_name(f"{name}-{used[name]}")
        applications, _, _ = rule_applications(graph, rule)
        log = None
        if rule.log:
            log = "session-close" if rule.action == "accept" else "session-init"
        items.append(
            {
                "policy": {
                    "name": name,
                    "sources": _address_names(graph, rule, "source"),
                    "destinations": _address_names(graph, rule, "destination"),
                    "applications": applications,
                    "action": ACTIONS[rule.action],
                    "log": log,
                    "description": rule.comment,
                }
            }
        )
    if zone_filter.default_source is not None:
        reference = perimeter.source_reference(
            graph, zone_filter.default_source, f"default {zone_filter.default}"
        )
    else:
        reference = f"no default in the policy: {zone_filter.default}"
    items.append({"comment": reference})
    items.append(
        {
            "policy": {
                "name": srx_name(f"{graph.name}-default"),
                "sources": ["any"],
                "destinations": ["any"],
                "applications": ["any"],
                "action": ACTIONS[zone_filter.default],
                "log": None,
                "description": None,
            }
        }
    )
    return items


def render_config(graph: RuleGraph) -> str:
    """Render the set commands: address book, applications, then one zone pair per direction."""
    values, _ = perimeter.read_settings(graph, TARGET, SETTINGS)
    addresses, address_sets = _address_book(graph)
    applications: dict[str, dict] = {}
    application_sets: dict[str, dict] = {}
    for rule in graph.rules():
        _, apps, sets = rule_applications(graph, rule)
        applications.update((a["name"], a) for a in apps)
        application_sets.update((s["name"], s) for s in sets)
    zone_pairs = []
    for zone_filter in perimeter.perimeter_filters(graph, stateful=True):
        outside, inside = values["outside-zone"], values["inside-zone"]
        inbound = zone_filter.side == INBOUND
        zone_pairs.append(
            {
                "from_zone": outside if inbound else inside,
                "to_zone": inside if inbound else outside,
                "items": _policy_items(graph, zone_filter),
            }
        )
    return perimeter.render_template(
        TEMPLATE,
        FILTERS,
        header=header_lines(graph, TARGET, "#"),
        addresses=addresses,
        address_sets=address_sets,
        applications=[applications[name] for name in sorted(applications)],
        application_sets=[application_sets[name] for name in sorted(application_sets)],
        zone_pairs=zone_pairs,
    )


FILTERS = {"srx_name": srx_name, "srx_quote": srx_quote, "srx_comment": srx_comment}


@hookimpl
def polywall_exporters():
    return [JuniperSrxExporter()]
