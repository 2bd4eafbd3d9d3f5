"""Readers of the PAN-OS, FortiOS and pf output, and the tests of the readers themselves.

- PAN-OS: the XML file is loaded with pan-os-python into rule and object
  instances; the set file, which no offline parser reads, is read by a strict
  reader that raises ReaderError on any line it cannot account for.
- FortiOS: the config is parsed with anyconfig's fortios backend
  (anyconfig-fortios-backend). That parser skips lines it does not know, so a
  strict line check runs first and accounts for every line.
- pf: no parser exists on Debian, so a strict reader accounts for every line.
  A looser mode reads Aerleon's packetfilter output (commas in lists, tables
  continued over several lines).

All of them expand objects into flat ``Atom`` entries, which the Aerleon
comparison in test_vendor2_oracle uses. ``None`` means any; IPv4-only or
IPv6-only "any" (0.0.0.0/0, ::/0, or FortiOS 'all' on one family) is read as
``None`` as well, because the family comparison is done separately.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from dataclasses import dataclass, field, replace
from xml.etree import ElementTree

import pytest

from tests.conftest import require
from tests.test_vendor_readers import Atom, ReaderError

ANY_NETWORKS = {"0.0.0.0/0", "::/0"}
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"


def need_package(module: str, package: str) -> None:
    """Skip the test when a parser package is missing, but fail it under CI."""
    require(importlib.util.find_spec(module) is not None, f"needs {package} (test extra)")


def _printable(line: str) -> None:
    if any(not 32 <= ord(c) < 127 for c in line):
        raise ReaderError(f"line with a character outside printable ASCII: {line!r}")


def _network(text: str) -> str | None:
    network = str(ipaddress.ip_network(text, strict=True))
    return None if network in ANY_NETWORKS else network


def _range(text: str, separator: str = "-") -> tuple[int, int] | None:
    low, _, high = text.partition(separator)
    pair = (int(low), int(high or low))
    if not 0 <= pair[0] <= pair[1] <= 65535:
        raise ReaderError(f"invalid port range {text!r}")
    return None if pair == (0, 65535) else pair


# PAN-OS


@dataclass
class PanRule:
    name: str
    from_zone: str
    to_zone: str
    sources: list[str]
    destinations: list[str]
    applications: list[str]
    services: list[str]
    action: str
    icmp_unreachable: bool
    log_end: bool
    description: str | None


@dataclass
class PanConfig:
    addresses: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    services: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)
    rules: list[PanRule] = field(default_factory=list)
    deleted_rules: list[str] = field(default_factory=list)


PAN_RULE = re.compile(
    rf"set rulebase security rules (?P<name>{NAME}) from (?P<from>{NAME}) to (?P<to>{NAME})"
    r" source \[ (?P<source>[^]]*)\] destination \[ (?P<destination>[^]]*)\]"
    r" application \[ (?P<application>[^]]*)\] service \[ (?P<service>[^]]*)\]"
    r" action (?P<action>allow|deny|drop|reset-client)(?P<unreachable> icmp-unreachable yes)?"
    r" log-end (?P<log>yes|no)(?: description \"(?P<description>[^\"\\?]*)\")?"
)
PAN_SERVICE = re.compile(
    rf"set service (?P<name>{NAME}) protocol (?P<protocol>tcp|udp) port (?P<port>[0-9,-]+)"
    r"(?: source-port (?P<sport>[0-9,-]+))?"
)


# 'application-default' means the ports of the rule's applications; Aerleon
# writes it for ICMP rules, where it adds nothing to the application.
PREDEFINED_SERVICES = {"any", "application-default"}


def _members(text: str, line: str) -> list[str]:
    names = text.split()
    if not names or any(not re.fullmatch(NAME, n) for n in names):
        raise ReaderError(f"invalid member list in {line!r}")
    return names


def read_pan_set(text: str) -> PanConfig:
    """Read PAN-OS set commands as polywall writes them; raise ReaderError on any other line."""
    config = PanConfig()
    for line in text.splitlines():
        _printable(line)
        if line.startswith("# ") or line == "#":
            continue
        words = line.split(" ")
        if match := PAN_RULE.fullmatch(line):
            if match["name"] in {r.name for r in config.rules}:
                raise ReaderError(f"rule set twice: {line!r}")
            config.rules.append(
                PanRule(
                    match["name"],
                    match["from"],
                    match["to"],
                    _members(match["source"], line),
                    _members(match["destination"], line),
                    _members(match["application"], line),
                    _members(match["service"], line),
                    match["action"],
                    match["unreachable"] is not None,
                    match["log"] == "yes",
                    match["description"],
                )
            )
        elif match := PAN_SERVICE.fullmatch(line):
            config.services[match["name"]] = (match["protocol"], match["port"], match["sport"])
        elif words[:2] == ["set", "address"] and len(words) == 5 and words[3] == "ip-netmask":
            if not re.fullmatch(NAME, words[2]):
                raise ReaderError(f"invalid name in {line!r}")
            config.addresses[words[2]] = words[4]
        elif words[:2] == ["delete", "address-group"] and len(words) == 3:
            config.groups.pop(words[2], None)
        elif re.fullmatch(rf"set address-group {NAME} static \[ [^]]*\]", line):
            config.groups[words[2]] = _members(line.split("[", 1)[1].rstrip("]"), line)
        elif words[:4] == ["delete", "rulebase", "security", "rules"] and len(words) == 5:
            config.deleted_rules.append(words[4])
        else:
            raise ReaderError(f"unknown PAN-OS command: {line!r}")
    _check_pan_references(config)
    return config


def _check_pan_references(config: PanConfig) -> None:
    for name, members in config.groups.items():
        for member in members:
            if member not in config.addresses:
                raise ReaderError(f"address-group {name} names undefined address {member}")
    for rule in config.rules:
        for member in rule.sources + rule.destinations:
            if member != "any" and member not in config.addresses and member not in config.groups:
                raise ReaderError(f"rule {rule.name} names undefined address {member}")
        for member in rule.services:
            if member not in PREDEFINED_SERVICES and member not in config.services:
                raise ReaderError(f"rule {rule.name} names undefined service {member}")


def read_pan_xml(text: str) -> PanConfig:
    """Load PAN-OS XML with pan-os-python: a vsys entry, or a whole config (Aerleon's)."""
    need_package("panos", "pan-os-python")
    from panos.firewall import Firewall
    from panos.objects import AddressGroup, AddressObject, ServiceObject
    from panos.policies import Rulebase, SecurityRule

    root = ElementTree.fromstring(text.encode())
    if root.tag == "config":
        root = root.find("./devices/entry/vsys/entry")
    firewall = Firewall(vsys=root.get("name"))
    rulebase = Rulebase()
    firewall.add(rulebase)
    config = PanConfig()
    for address in AddressObject().refreshall_from_xml(root.find("address")):
        if address.type != "ip-netmask":
            raise ReaderError(f"address {address.name} is not ip-netmask")
        config.addresses[address.name] = address.value
    for group in AddressGroup().refreshall_from_xml(root.find("address-group")):
        config.groups[group.name] = list(group.static_value or [])
    for service in ServiceObject().refreshall_from_xml(root.find("service")):
        config.services[service.name] = (
            service.protocol,
            service.destination_port,
            service.source_port,
        )
    prototype = SecurityRule()
    rulebase.add(prototype)
    for rule in prototype.refreshall_from_xml(root.find("rulebase/security/rules")):
        if len(rule.fromzone) != 1 or len(rule.tozone) != 1:
            raise ReaderError(f"rule {rule.name} has more than one zone")
        config.rules.append(
            PanRule(
                rule.name,
                rule.fromzone[0],
                rule.tozone[0],
                list(rule.source),
                list(rule.destination),
                list(rule.application),
                list(rule.service),
                rule.action,
                bool(rule.icmp_unreachable),
                bool(rule.log_end),
                rule.description,
            )
        )
    _check_pan_references(config)
    return config


PAN_ACTIONS = {"allow": "permit", "deny": "deny", "drop": "deny", "reset-client": "reject"}
PAN_APPLICATIONS = {"any": "ip", "icmp": "icmp", "ipv6-icmp": "icmp6"}


def _pan_networks(config: PanConfig, name: str) -> list[str | None]:
    if name == "any":
        return [None]
    if name in config.groups:
        return [_network(config.addresses[m]) for m in config.groups[name]]
    return [_network(config.addresses[name])]


def _pan_ports(text: str | None) -> list[tuple[int, int] | None]:
    if text is None:
        return [None]
    return [_range(item) for item in text.split(",")]


def pan_atoms(config: PanConfig) -> dict[tuple[str, str], list[Atom]]:
    """Expand the rules into entries per zone pair, in rule order."""
    pairs: dict[tuple[str, str], list[Atom]] = {}
    for rule in config.rules:
        action = PAN_ACTIONS[rule.action]
        if rule.icmp_unreachable:
            action = "reject"
        (application,) = rule.applications
        protocol = PAN_APPLICATIONS[application]
        if rule.services in (["any"], ["application-default"]):
            ports = [(protocol, None, None)]
        else:
            if protocol != "ip":
                raise ReaderError(f"rule {rule.name} mixes an application and services")
            ports = []
            for name in rule.services:
                service_protocol, dports, sports = config.services[name]
                for dport in _pan_ports(dports):
                    for sport in _pan_ports(sports):
                        ports.append((service_protocol, sport, dport))
        atoms = pairs.setdefault((rule.from_zone, rule.to_zone), [])
        for source_name in rule.sources:
            for source in _pan_networks(config, source_name):
                for destination_name in rule.destinations:
                    for destination in _pan_networks(config, destination_name):
                        for service_protocol, sport, dport in ports:
                            atoms.append(
                                Atom(
                                    action,
                                    service_protocol,
                                    source,
                                    sport,
                                    destination,
                                    dport,
                                    log=rule.log_end,
                                )
                            )
    return pairs


# FortiOS


FORTI_WORD = r'(?:"[^"\\?]*"|[A-Za-z0-9._:/-]+)'
FORTI_POLICY_KEYS = {
    "name",
    "srcintf",
    "dstintf",
    "action",
    "send-deny-packet",
    "srcaddr",
    "dstaddr",
    "srcaddr6",
    "dstaddr6",
    "service",
    "schedule",
    "logtraffic",
    "comments",
}
FORTI_TABLE_KEYS = {
    "firewall address": {"subnet", "type"},
    "firewall address6": {"ip6", "type"},
    "firewall addrgrp": {"member"},
    "firewall addrgrp6": {"member"},
    "firewall service custom": {"tcp-portrange", "udp-portrange", "protocol", "icmptype"},
    "firewall policy": FORTI_POLICY_KEYS,
}


def check_fortios_lines(text: str, strict: bool = True) -> list[tuple[int, int]]:
    """Account for every line of a FortiOS script; return the 'move' commands in order.

    The anyconfig parser skips lines it does not know, so this check makes
    sure that there are none: every line is a comment, config, edit, set,
    next, end or (in the policy table) move, with balanced blocks, values made
    of bare words or plain quoted strings, and known keys.
    """
    moves: list[tuple[int, int]] = []
    table: str | None = None
    editing = False
    for line in text.splitlines():
        _printable(line)
        stripped = line.strip()
        if stripped.startswith("#") or (not strict and not stripped):
            continue
        if match := re.fullmatch(r"config (firewall [a-z0-9 ]+)", stripped):
            if table is not None or match[1] not in FORTI_TABLE_KEYS:
                raise ReaderError(f"unexpected config block: {line!r}")
            table = match[1]
        elif stripped == "end":
            if table is None or editing:
                raise ReaderError(f"unbalanced end: {line!r}")
            table = None
        elif match := re.fullmatch(rf"edit ({FORTI_WORD})", stripped):
            if table is None or editing:
                raise ReaderError(f"edit outside a table: {line!r}")
            editing = True
        elif stripped == "next":
            if not editing:
                raise ReaderError(f"next without edit: {line!r}")
            editing = False
        elif match := re.fullmatch(rf"set ([a-z0-9-]+)((?: {FORTI_WORD})+)", stripped):
            if not editing or match[1] not in FORTI_TABLE_KEYS[table or ""]:
                raise ReaderError(f"unexpected set: {line!r}")
        elif match := re.fullmatch(r"move ([0-9]+) after ([0-9]+)", stripped):
            if table != "firewall policy" or editing:
                raise ReaderError(f"move outside the policy table: {line!r}")
            moves.append((int(match[1]), int(match[2])))
        else:
            raise ReaderError(f"unknown FortiOS line: {line!r}")
    if table is not None:
        raise ReaderError("config block without end")
    return moves


@dataclass
class FortiConfig:
    tables: dict[str, dict[str, dict]]
    policies: list[dict]


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def read_fortios(text: str, tmp_path, strict: bool = True) -> FortiConfig:
    """Check every line, then parse with anyconfig's fortios backend."""
    need_package("anyconfig_fortios_backend", "anyconfig-fortios-backend")
    import anyconfig

    moves = check_fortios_lines(text, strict=strict)
    path = tmp_path / "fortios.conf"
    path.write_text(text, encoding="ascii")
    data = anyconfig.load(str(path), ac_parser="fortios")
    tables: dict[str, dict[str, dict]] = {}
    for block in data["configs"]:
        if "config" not in block:
            continue
        tables[block["config"]] = {str(e["edit"]): dict(e) for e in block.get("edits", [])}
    policies = list(tables.get("firewall policy", {}).values())
    if moves:
        policies = _apply_moves(policies, moves)
    return FortiConfig(tables, policies)


def _apply_moves(policies: list[dict], moves: list[tuple[int, int]]) -> list[dict]:
    order = [p["edit"] for p in policies]
    for moved, after in moves:
        order.remove(str(moved))
        order.insert(order.index(str(after)) + 1, str(moved))
    by_id = {p["edit"]: p for p in policies}
    return [by_id[i] for i in order]


def _forti_networks(config: FortiConfig, name: str, family: str) -> list[str | None]:
    suffix = "6" if family == "ipv6" else ""
    if name == "all":
        return [None]
    groups = config.tables.get(f"firewall addrgrp{suffix}", {})
    addresses = config.tables[f"firewall address{suffix}"]
    names = _as_list(groups[name]["member"]) if name in groups else [name]
    out = []
    for member in names:
        entry = addresses[member]
        if family == "ipv6":
            out.append(_network(entry["ip6"]))
        else:
            address, mask = entry["subnet"]
            out.append(_network(f"{address}/{mask}"))
    return out


def _forti_services(config: FortiConfig, name: str) -> list[tuple]:
    if name == "ALL":
        return [("ip", None, None, None)]
    entry = config.tables["firewall service custom"][name]
    if "protocol" in entry and entry["protocol"] in ("ICMP", "ICMP6"):
        protocol = "icmp" if entry["protocol"] == "ICMP" else "icmp6"
        code = int(entry["icmptype"]) if "icmptype" in entry else None
        return [(protocol, None, None, code)]
    out = []
    for protocol in ("tcp", "udp"):
        for item in _as_list(entry.get(f"{protocol}-portrange")):
            dport, _, sport = item.partition(":")
            out.append((protocol, _range(sport) if sport else None, _range(dport), None))
    if not out:
        raise ReaderError(f"custom service {name} matches nothing")
    return out


def forti_atoms(config: FortiConfig) -> dict[tuple[str, str], list[Atom]]:
    """Expand the policies into entries per interface pair, in policy order."""
    pairs: dict[tuple[str, str], list[Atom]] = {}
    for policy in config.policies:
        action = policy.get("action", "deny")
        action = {"accept": "permit", "deny": "deny"}[action]
        if policy.get("send-deny-packet") == "enable":
            action = "reject"
        log = policy.get("logtraffic", "utm") != "disable"
        services = [s for n in _as_list(policy["service"]) for s in _forti_services(config, n)]
        found: list[Atom] = []
        for family, suffix in (("ipv4", ""), ("ipv6", "6")):
            sources = _as_list(policy.get("srcaddr" + suffix))
            destinations = _as_list(policy.get("dstaddr" + suffix))
            for source in (n for s in sources for n in _forti_networks(config, s, family)):
                for target in (n for d in destinations for n in _forti_networks(config, d, family)):
                    for protocol, sport, dport, code in services:
                        found.append(
                            Atom(action, protocol, source, sport, target, dport, code, log=log)
                        )
        # A policy for both families with 'all' yields each entry twice; one is kept.
        pairs.setdefault((policy["srcintf"], policy["dstintf"]), []).extend(dict.fromkeys(found))
    return pairs


# pf


@dataclass
class PfRule:
    """One pf filter rule, with macros and tables expanded."""

    action: str
    text: str
    direction: str | None = None
    log: bool = False
    quick: bool = False
    interface: str | None = None
    family: str | None = None
    protocol: str | None = None
    sources: list[str | None] = field(default_factory=list)
    source_negated: bool = False
    sports: list[tuple[int, int] | None] = field(default_factory=lambda: [None])
    destinations: list[str | None] = field(default_factory=list)
    destination_negated: bool = False
    dports: list[tuple[int, int] | None] = field(default_factory=lambda: [None])
    icmp_types: list[int | None] = field(default_factory=lambda: [None])
    received_on: str | None = None
    rate: str | None = None
    keep_state: bool = False


@dataclass
class PfConfig:
    skip: list[str]
    tables: dict[str, list[str]]
    macros: dict[str, str]
    rules: list[PfRule]


PF_ACTIONS = (
    r"pass|block drop|block return|block return-rst|block return-icmp\([0-9, ]+\)"
    r"|block return-icmp6\([0-9]+\)|block"
)


def _pf_tokens(text: str) -> list[str]:
    return re.findall(r"<[A-Za-z0-9_]+>|\$[A-Za-z0-9_]+|[{}!]|[^\s{},!]+", text)


def read_pf(text: str, strict: bool = True) -> PfConfig:
    """Read a pf.conf; in strict mode (polywall's output) raise ReaderError on any unknown line.

    The loose mode reads Aerleon's packetfilter output: lines continued with a
    backslash, commas in lists, and the 'flags' option.
    """
    if not strict:
        text = re.sub(r"\\\n", " ", text)
    elif re.search(r"\\$", text, re.MULTILINE):
        raise ReaderError("a line ends in a backslash and would continue onto the next")
    config = PfConfig([], {}, {}, [])
    for line in text.splitlines():
        _printable(line)
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if match := re.fullmatch(r"set skip on ([A-Za-z0-9_.]+)", stripped):
            config.skip.append(match[1])
        elif match := re.fullmatch(
            r"table <([A-Za-z0-9_]{1,31})> (?:const )?\{([^}]*)\}", stripped
        ):
            entries = [e for e in re.split(r"[\s,]+", match[2]) if e]
            for entry in entries:
                if entry != "self":
                    ipaddress.ip_network(entry)
            config.tables[match[1]] = entries
        elif match := re.fullmatch(r'([A-Za-z_][A-Za-z0-9_]*) = "([0-9: ]+)"', stripped):
            config.macros[match[1]] = match[2]
        elif re.match(rf"(?:{PF_ACTIONS}) ", stripped):
            config.rules.append(_pf_rule(stripped, config, strict))
        else:
            raise ReaderError(f"unknown pf line: {line!r}")
    return config


def _pf_rule(line: str, config: PfConfig, strict: bool) -> PfRule:
    action_match = re.match(rf"({PF_ACTIONS}) ", line)
    assert action_match is not None
    action = action_match[1]
    words = _pf_tokens(line[action_match.end() :])
    position = 0

    def peek() -> str | None:
        return words[position] if position < len(words) else None

    def take(expected: str | None = None) -> str:
        nonlocal position
        if position >= len(words):
            raise ReaderError(f"rule ends early: {line!r}")
        word = words[position]
        if expected is not None and word != expected:
            raise ReaderError(f"expected {expected!r}, found {word!r}: {line!r}")
        position += 1
        return word

    def items() -> list[str]:
        if peek() == "{":
            take("{")
            found = []
            while peek() != "}":
                found.append(take())
            take("}")
            return found
        return [take()]

    rule = PfRule(action, line)
    if peek() in ("in", "out"):
        rule.direction = take()
    if peek() == "log":
        rule.log = bool(take())
    if peek() == "quick":
        rule.quick = bool(take())
    if peek() == "log" and not rule.log:  # pfctl takes "quick log" as well as "log quick"
        rule.log = bool(take())
    if peek() == "on":
        take()
        rule.interface = take()
    if peek() in ("inet", "inet6"):
        rule.family = take()
    if peek() == "proto":
        take()
        (rule.protocol,) = items()
    if peek() == "all":
        take()
        rule.sources, rule.destinations = [None], [None]
    else:
        take("from")
        rule.source_negated, rule.sources = _pf_hosts(items, peek, take, config)
        if peek() == "port":
            take()
            rule.sports = _pf_ports(items(), config)
        take("to")
        rule.destination_negated, rule.destinations = _pf_hosts(items, peek, take, config)
        if peek() == "port":
            take()
            rule.dports = _pf_ports(items(), config)
    while peek() is not None:
        word = take()
        if word in ("icmp-type", "icmp6-type"):
            rule.icmp_types = [int(t) for t in items()]
        elif word == "received-on":
            rule.received_on = take()
        elif word == "max-pkt-rate":
            rule.rate = take()
        elif word == "keep":
            take("state")
            rule.keep_state = True
        elif word == "flags" and not strict:
            take()
        else:
            raise ReaderError(f"unknown rule option {word!r}: {line!r}")
    return rule


def _pf_hosts(items, peek, take, config: PfConfig) -> tuple[bool, list[str | None]]:
    negated = False
    if peek() == "!":
        take()
        negated = True
    found: list[str | None] = []
    for item in items():
        if item == "!":
            raise ReaderError("a negation inside a list matches more than intended")
        if item == "any":
            found.append(None)
        elif item.startswith("<"):
            name = item[1:-1]
            if name not in config.tables:
                raise ReaderError(f"undefined table {item}")
            found.extend(None if e == "self" else _network(e) for e in config.tables[name])
        else:
            found.append(_network(item))
    return negated, found


def _pf_ports(words: list[str], config: PfConfig) -> list[tuple[int, int] | None]:
    out = []
    for word in words:
        if word.startswith("$"):
            if word[1:] not in config.macros:
                raise ReaderError(f"undefined macro {word}")
            out.extend(_range(p, ":") for p in config.macros[word[1:]].split())
        else:
            out.append(_range(word, ":"))
    return out


PF_PROTOCOLS = {
    None: "ip",
    "tcp": "tcp",
    "udp": "udp",
    "icmp": "icmp",
    "icmp6": "icmp6",
    "ipv6-icmp": "icmp6",
}


def pf_atoms(rule: PfRule, family: str) -> list[Atom]:
    """Expand a rule into entries of one family; empty when the rule is for the other one."""
    if rule.family is not None and rule.family != ("inet" if family == "ipv4" else "inet6"):
        return []
    if rule.action == "pass":
        action = "permit"
    elif rule.action in ("block drop", "block"):
        action = "deny"
    else:
        action = "reject"
    version = 4 if family == "ipv4" else 6

    def of_family(values: list[str | None]) -> list[str | None]:
        return [v for v in values if v is None or ipaddress.ip_network(v).version == version]

    out = []
    for source in of_family(rule.sources):
        for sport in rule.sports:
            for destination in of_family(rule.destinations):
                for dport in rule.dports:
                    for code in rule.icmp_types:
                        out.append(
                            Atom(
                                action,
                                PF_PROTOCOLS[rule.protocol],
                                source,
                                sport,
                                destination,
                                dport,
                                code,
                                log=rule.log,
                            )
                        )
    return out


@dataclass
class PfSections:
    """The rules of polywall's pf.conf, sorted into the sections that it writes."""

    defaults: dict[str, PfRule]
    dispatch: PfRule
    forward: list[PfRule]
    forward_default: PfRule
    incoming: list[PfRule]
    outgoing: list[PfRule]


def pf_sections(config: PfConfig) -> PfSections:
    """Split polywall's rules into defaults, forwarding and the rules per direction.

    Raise ReaderError if the layout that keeps first-match order is broken: two
    defaults without quick first, then only quick rules.
    """
    rules = list(config.rules)
    if len(rules) < 4:
        raise ReaderError("fewer rules than the fixed layout has")
    defaults = {"in": rules[0], "out": rules[1]}
    for direction, rule in defaults.items():
        if rule.quick or rule.direction != direction or rule.sources != [None]:
            raise ReaderError(f"the first rules must be the defaults: {rule.text!r}")
    dispatch = rules[2]
    if not (
        dispatch.quick
        and dispatch.direction == "in"
        and dispatch.destination_negated
        and "self" in config.tables.get("polywall_local", [])
    ):
        raise ReaderError(f"the forwarding rule is missing: {dispatch.text!r}")
    rest = rules[3:]
    if any(not r.quick for r in rest):
        raise ReaderError("a rule after the defaults lacks quick")
    forward = []
    while rest and rest[0].received_on is not None:
        forward.append(rest.pop(0))
    if not forward or forward[-1].sources != [None] or forward[-1].protocol is not None:
        raise ReaderError("the forward default is missing")
    forward_default = forward.pop()
    incoming = [r for r in rest if r.direction == "in"]
    outgoing = [r for r in rest if r.direction == "out"]
    if rest != incoming + outgoing:
        raise ReaderError("incoming and outgoing rules are interleaved")
    return PfSections(defaults, dispatch, forward, forward_default, incoming, outgoing)


def rule_family_atoms(rules: list[PfRule], family: str) -> list[Atom]:
    return [atom for rule in rules for atom in pf_atoms(rule, family)]


def without_log(atoms: list[Atom]) -> list[Atom]:
    return [replace(a, log=False) for a in atoms]


# Tests of the readers


def test_pan_reader_rejects_unknown_command():
    with pytest.raises(ReaderError):
        read_pan_set("set rulebase security rules x from a to b source [ any ] foo\n")


def test_pan_reader_rejects_undefined_service():
    text = (
        "set rulebase security rules r from a to b source [ any ] destination [ any ] "
        "application [ any ] service [ nope ] action allow log-end no\n"
    )
    with pytest.raises(ReaderError):
        read_pan_set(text)


def test_pan_reader_rejects_quote_in_description():
    text = (
        "set rulebase security rules r from a to b source [ any ] destination [ any ] "
        'application [ any ] service [ any ] action allow log-end no description "a"b"\n'
    )
    with pytest.raises(ReaderError):
        read_pan_set(text)


def test_pan_atoms_expand_groups():
    text = (
        "set address h1 ip-netmask 192.0.2.1/32\nset address h2 ip-netmask 192.0.2.2/32\n"
        "set address-group g static [ h1 h2 ]\n"
        "set service s protocol tcp port 22,80-81\n"
        "set rulebase security rules r from a to b source [ g ] destination [ any ] "
        "application [ any ] service [ s ] action drop icmp-unreachable yes log-end yes\n"
    )
    atoms = pan_atoms(read_pan_set(text))[("a", "b")]
    assert len(atoms) == 4
    assert {a.source for a in atoms} == {"192.0.2.1/32", "192.0.2.2/32"}
    assert {a.dport for a in atoms} == {(22, 22), (80, 81)}
    assert {a.action for a in atoms} == {"reject"}


def test_fortios_check_rejects_unknown_line():
    with pytest.raises(ReaderError):
        check_fortios_lines("config firewall policy\n    purge\nend\n")


def test_fortios_check_rejects_escaped_quote():
    text = 'config firewall policy\n    edit 1\n        set comments "a\\"b"\n    next\nend\n'
    with pytest.raises(ReaderError):
        check_fortios_lines(text)


def test_fortios_check_rejects_open_block():
    with pytest.raises(ReaderError):
        check_fortios_lines("config firewall policy\n    edit 1\n    next\n")


def test_fortios_moves_reorder(tmp_path):
    text = (
        'config firewall policy\n    edit 2\n        set service "ALL"\n    next\n'
        '    edit 1\n        set service "ALL"\n    next\n    move 2 after 1\nend\n'
    )
    config = read_fortios(text, tmp_path)
    assert [p["edit"] for p in config.policies] == ["1", "2"]


def test_pf_reader_rejects_backslash_line_end():
    with pytest.raises(ReaderError):
        read_pf("# comment \\\npass in quick all\n")


def test_pf_reader_rejects_negated_list():
    with pytest.raises(ReaderError):
        read_pf("pass in quick from { ! 192.0.2.1 } to any\n")


def test_pf_reader_rejects_unknown_option():
    with pytest.raises(ReaderError):
        read_pf("pass in quick from any to any synproxy state\n")


def test_pf_reader_expands_macros_and_tables():
    config = read_pf(
        'table <t> const { 192.0.2.0/24 2001:db8::/32 }\nm = "22 1000:2000"\n'
        "pass in quick proto tcp from <t> to any port { $m 80 } keep state\n"
    )
    (rule,) = config.rules
    assert rule.dports == [(22, 22), (1000, 2000), (80, 80)]
    assert len(pf_atoms(rule, "ipv4")) == 3
    assert len(pf_atoms(rule, "ipv6")) == 3
    assert pf_atoms(rule, "ipv6")[0].source == "2001:db8::/32"
