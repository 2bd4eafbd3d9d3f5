"""Cisco IOS exporter: named extended access lists for IPv4 and IPv6, bound to two interfaces.

IOS access lists are stateless, so the policy's ``established`` becomes the
``established`` keyword, which matches TCP segments with ACK or RST set. How
the policy maps onto the router's two filters is described in
``exporters.perimeter`` and docs/targets/cisco-ios.md. Syntax follows the
Cisco IOS XE security configuration guides for IP access lists.
"""

from __future__ import annotations

import re

from compiler.errors import Diagnostic
from compiler.graph import Network, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters import perimeter
from exporters.common import header_lines
from exporters.perimeter import INBOUND, SettingSpec

TARGET = "cisco-ios"
FILE = "cisco-ios.cfg"
TEMPLATE = "cisco-ios.j2"

# "Each remark is limited to 100 characters in length" (Cisco IOS XE 16.7
# Security Configuration Guide, Commented IP Access List Entries).
MAX_REMARK = 100
# NOTE: no length limit for access list names was found in the guides here;
# 64 is a conservative guess.
MAX_ACL_NAME = 64
MAX_INTERFACE_NAME = 64
ACL_PATTERN = r"[A-Za-z][A-Za-z0-9._-]*"
INTERFACE_PATTERN = r"[A-Za-z][A-Za-z0-9/.:-]*"

SETTINGS = (
    SettingSpec(
        "inbound-acl",
        "outside_in",
        "IPv4 access list for traffic from the outside",
        ACL_PATTERN,
        MAX_ACL_NAME,
        "a letter, then letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "inbound-acl6",
        "outside_in6",
        "IPv6 access list for traffic from the outside",
        ACL_PATTERN,
        MAX_ACL_NAME,
        "a letter, then letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "outbound-acl",
        "inside_in",
        "IPv4 access list for traffic from the inside",
        ACL_PATTERN,
        MAX_ACL_NAME,
        "a letter, then letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "outbound-acl6",
        "inside_in6",
        "IPv6 access list for traffic from the inside",
        ACL_PATTERN,
        MAX_ACL_NAME,
        "a letter, then letters, digits, '.', '-' or '_'",
    ),
    SettingSpec(
        "outside-interface",
        "GigabitEthernet0/0",
        "interface toward the outside",
        INTERFACE_PATTERN,
        MAX_INTERFACE_NAME,
        'an interface name such as "GigabitEthernet0/0"',
    ),
    SettingSpec(
        "inside-interface",
        "GigabitEthernet0/1",
        "interface toward the inside",
        INTERFACE_PATTERN,
        MAX_INTERFACE_NAME,
        'an interface name such as "GigabitEthernet0/1"',
    ),
)

# ICMP message keywords of IOS IPv4 access lists, by polywall's type names.
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
ACTIONS = {"accept": "permit", "drop": "deny"}
STATELESS_NOTE = (
    "IOS access lists are stateless: this matches TCP return traffic only, not UDP or ICMP replies"
)


class CiscoIosExporter:
    name = TARGET
    description = "Cisco IOS named extended access lists (IPv4 and IPv6) and interface bindings"
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
        node = graph.settings.get(TARGET)
        names = [
            values[k] for k in ("inbound-acl", "inbound-acl6", "outbound-acl", "outbound-acl6")
        ]
        if len(set(names)) < len(names):
            problems.append(
                Diagnostic(
                    f"{TARGET} needs four different access list names",
                    node.source if node else None,
                )
            )
        problems += perimeter.distinct_settings(
            graph, TARGET, values, (("outside-interface", "inside-interface"),)
        )
        problems += perimeter.check_rules(graph, TARGET, stateful=False)
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_config(graph)}


# Names and text


def ios_name(name: str) -> str:
    """Return an access list name IOS accepts: a letter first, no spaces, at most 64 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "acl" + cleaned
    return perimeter.fit_name(cleaned, MAX_ACL_NAME)


def ios_interface(name: str) -> str:
    """Return an interface name with everything but letters, digits and '/.:-' removed."""
    return re.sub(r"[^A-Za-z0-9/.:-]", "", name) or "invalid-interface"


def ios_remarks(text: str) -> list[str]:
    """Split text into remark texts of at most 100 printable ASCII characters.

    Control characters become spaces, so no text ends the remark's line, and
    '?' becomes '.', because the IOS command line shows help for '?'.
    """
    flat = perimeter.printable_ascii(text, " ").replace("?", ".").strip()
    flat = re.sub(r" {2,}", " ", flat) or "-"
    return [flat[i : i + MAX_REMARK].strip() or "-" for i in range(0, len(flat), MAX_REMARK)]


def ios_comment(text: str) -> str:
    return perimeter.printable_ascii(text, " ")


# Access control entries


def wildcard_mask(network: Network) -> str:
    """Return the IOS wildcard mask of an IPv4 network: the inverted netmask."""
    return str(network.hostmask)


def address_text(network: Network | None) -> str:
    if network is None:
        return "any"
    if network.num_addresses == 1:
        return f"host {network.network_address}"
    if network.version == 4:
        return f"{network.network_address} {wildcard_mask(network)}"
    return str(network)


def ports_text(item: PortRange | None) -> str:
    if item is None:
        return ""
    if item.low == item.high:
        return f"eq {item.low}"
    return f"range {item.low} {item.high}"


def _networks(rule: Rule, side: str) -> list[Network | None]:
    match = rule.saddr if side == "source" else rule.daddr
    if match is None or not match.networks:
        return [None]
    return list(match.networks)


def rule_entries(rule: Rule, family: str) -> list[str]:
    """Return the access list entries (without the leading space) of one rule for one family."""
    protocol = rule.protocol
    established = bool(rule.ct_states)
    if established:
        protocol = "tcp"
    if protocol is None:
        words = "ip" if family == "ipv4" else "ipv6"
    elif protocol == "icmpv6":
        words = "icmp"
    else:
        words = protocol
    if protocol in ("icmp", "icmpv6") and rule.icmp_types:
        if family == "ipv4":
            extras = [ICMP_NAMES[t] for t in rule.icmp_types]
        else:
            from compiler.catalog import ICMPV6_TYPES

            # Numbers, because IOS accepts an ICMPv6 type number 0-255 in place of a keyword.
            extras = [str(ICMPV6_TYPES[t].code) for t in rule.icmp_types]
        dports: list[PortRange | None] = [None]
    else:
        extras = [""]
        dports = list(rule.dports) or [None]
    sports: list[PortRange | None] = list(rule.sports) or [None]
    tail = []
    if established:
        tail.append("established")
    if rule.log:
        tail.append("log")
    entries = []
    for source in _networks(rule, "source"):
        for sport in sports:
            for target in _networks(rule, "destination"):
                for dport in dports:
                    for extra in extras:
                        parts = [
                            ACTIONS[rule.action],
                            words,
                            address_text(source),
                            ports_text(sport),
                        ]
                        parts += [address_text(target), ports_text(dport), extra, *tail]
                        entries.append(" ".join(p for p in parts if p))
    return entries


def _acl_items(graph: RuleGraph, acl_filter: perimeter.PerimeterFilter, family: str) -> list[dict]:
    items: list[dict] = []
    previous = None
    for entry in acl_filter.entries:
        rule = entry.rule
        if family not in rule.families:
            continue
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
            if rule.ct_states and rule.protocol is None:
                items.append({"remark": STATELESS_NOTE})
            previous = reference
        items.extend({"entry": text} for text in rule_entries(rule, family))
    if acl_filter.default_source is not None:
        reference = perimeter.source_reference(
            graph, acl_filter.default_source, f"default {acl_filter.default}"
        )
    else:
        reference = f"no default in the policy: {acl_filter.default}"
    items.append({"remark": reference})
    everything = "ip any any" if family == "ipv4" else "ipv6 any any"
    items.append({"entry": f"{ACTIONS[acl_filter.default]} {everything}"})
    return items


def render_config(graph: RuleGraph) -> str:
    """Render the configuration snippet: four access lists and two interface bindings."""
    values, _ = perimeter.read_settings(graph, TARGET, SETTINGS)
    acls = []
    bindings = []
    for acl_filter in perimeter.perimeter_filters(graph, stateful=False):
        prefix = "inbound" if acl_filter.side == INBOUND else "outbound"
        names = {"ipv4": values[f"{prefix}-acl"], "ipv6": values[f"{prefix}-acl6"]}
        for family in ("ipv4", "ipv6"):
            acls.append(
                {
                    "family": family,
                    "name": names[family],
                    "items": _acl_items(graph, acl_filter, family),
                }
            )
        interface = values["outside-interface" if prefix == "inbound" else "inside-interface"]
        bindings.append({"interface": interface, "acl": names["ipv4"], "acl6": names["ipv6"]})
    return perimeter.render_template(
        TEMPLATE,
        FILTERS,
        header=header_lines(graph, TARGET, "!"),
        acls=acls,
        bindings=bindings,
    )


FILTERS = {
    "ios_name": ios_name,
    "ios_interface": ios_interface,
    "ios_remarks": ios_remarks,
    "ios_comment": ios_comment,
}


@hookimpl
def polywall_exporters():
    return [CiscoIosExporter()]
