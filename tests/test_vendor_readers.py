"""Strict readers of the ASA, IOS and SRX output, and the tests of the readers themselves.

No offline parser of ASA or Junos configuration exists, so these readers
accept exactly the command shapes the exporters are meant to write and raise
ReaderError on any other line. They also expand object groups, address sets
and applications into flat entries, which the Aerleon comparison uses:
``Atom(action, protocol, source, sport, destination, dport, icmp_type,
established, log)`` with ``None`` meaning any.

The IOS and SRX readers also read Aerleon's output (numbers where polywall
writes keywords, Junos curly-brace syntax), through separate entry points.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES

MAX_REMARK = 100


class ReaderError(AssertionError):
    """A line of exported configuration that the reader cannot account for."""


@dataclass(frozen=True, order=True)
class Atom:
    """One flat filtering entry: every field a single value, or None for any."""

    action: str
    protocol: str
    source: str | None
    sport: tuple[int, int] | None
    destination: str | None
    dport: tuple[int, int] | None
    icmp_type: int | None = None
    established: bool = False
    log: bool = False


def _net(text: str) -> str:
    return str(ipaddress.ip_network(text, strict=True))


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ReaderError(f"invalid port {text!r}")
    return int(text)


def _check_remark(text: str, line: str) -> None:
    if not text or len(text) > MAX_REMARK:
        raise ReaderError(f"remark empty or longer than {MAX_REMARK} characters: {line!r}")
    if any(not 32 <= ord(c) < 127 for c in text) or "?" in text:
        raise ReaderError(f"remark with a character the command line would act on: {line!r}")


def _check_name(name: str, max_length: int, pattern: str, line: str) -> None:
    if len(name) > max_length or not re.fullmatch(pattern, name):
        raise ReaderError(f"invalid name {name!r} in {line!r}")


ASA_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
ASA_ICMP = {
    "echo-reply": 0,
    "unreachable": 3,
    "source-quench": 4,
    "redirect": 5,
    "echo": 8,
    "router-advertisement": 9,
    "router-solicitation": 10,
    "time-exceeded": 11,
    "parameter-problem": 12,
    "timestamp-request": 13,
    "timestamp-reply": 14,
}
ASA_ICMP6 = {
    "unreachable": 1,
    "packet-too-big": 2,
    "time-exceeded": 3,
    "parameter-problem": 4,
    "echo": 128,
    "echo-reply": 129,
    "membership-query": 130,
    "membership-report": 131,
    "membership-reduction": 132,
    "router-solicitation": 133,
    "router-advertisement": 134,
    "neighbor-solicitation": 135,
    "neighbor-advertisement": 136,
    "neighbor-redirect": 137,
}
IOS_ICMP = dict(ASA_ICMP)


# Cisco ASA


@dataclass
class AsaConfig:
    acls: dict[str, list[Atom]]
    bindings: dict[str, str]
    remarks: dict[str, list[str]]


def read_asa(text: str, port_names: dict[str, int] | None = None) -> AsaConfig:
    """Read an ASA snippet as polywall writes it; raise ReaderError on any other line.

    ``port_names`` maps port keywords to numbers, for Aerleon's output, which
    writes 'eq ssh' where polywall writes 'eq 22'.
    """
    networks: dict[str, list[str]] = {}
    services: dict[str, tuple[str, list[tuple[int, int]]]] = {}
    acls: dict[str, list[Atom]] = {}
    remarks: dict[str, list[str]] = {}
    bindings: dict[str, str] = {}
    current: tuple[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("!"):
            _printable(line)
            continue
        if line.startswith(" "):
            if current is None:
                raise ReaderError(f"indented line outside an object group: {line!r}")
            kind, name = current
            words = line.split()
            if kind == "network" and words[0] == "network-object":
                networks[name].append(_asa_address(words[1:], line))
            elif kind == "service" and words[0] == "port-object":
                ports, rest = _asa_ports(words[1:], port_names, line)
                if ports is None or rest:
                    raise ReaderError(f"invalid port-object: {line!r}")
                services[name][1].append(ports)
            else:
                raise ReaderError(f"unexpected line in object group {name}: {line!r}")
            continue
        current = None
        words = line.split()
        if words[:2] == ["clear", "configure"] and words[2] == "access-list" and len(words) == 4:
            acls.setdefault(words[3], [])
            remarks.setdefault(words[3], [])
        elif words[0] == "no" and words[1] == "object-group" and len(words) == 4:
            if words[2] not in ("network", "service"):
                raise ReaderError(line)
        elif words[0] == "object-group" and words[1] == "network" and len(words) == 3:
            _check_name(words[2], 64, ASA_NAME, line)
            _unique(words[2], networks, services, line)
            networks[words[2]] = []
            current = ("network", words[2])
        elif words[0] == "object-group" and words[1] == "service" and len(words) == 4:
            _check_name(words[2], 64, ASA_NAME, line)
            _unique(words[2], networks, services, line)
            if words[3] not in ("tcp", "udp"):
                raise ReaderError(line)
            services[words[2]] = (words[3], [])
            current = ("service", words[2])
        elif words[0] == "access-list" and len(words) > 3 and words[2] == "remark":
            text_part = line.split(" remark ", 1)[1]
            _check_remark(text_part, line)
            remarks.setdefault(words[1], []).append(text_part)
        elif words[0] == "access-list" and len(words) > 3 and words[2] == "extended":
            _check_name(words[1], 64, ASA_NAME, line)
            atoms = _asa_entry(words[3:], networks, services, port_names, line)
            acls.setdefault(words[1], []).extend(atoms)
        elif words[0] == "access-group" and len(words) == 5 and words[2:4] == ["in", "interface"]:
            if words[1] not in acls:
                raise ReaderError(f"binding of an undefined access list: {line!r}")
            bindings[words[1]] = words[4]
        else:
            raise ReaderError(f"unknown ASA command: {line!r}")
    return AsaConfig(acls, bindings, remarks)


def _printable(line: str) -> None:
    if any(not 32 <= ord(c) < 127 for c in line):
        raise ReaderError(f"non-printable character in {line!r}")


def _unique(name: str, networks: dict, services: dict, line: str) -> None:
    if name in networks or name in services:
        raise ReaderError(f"object name defined twice (one name space on the ASA): {line!r}")


def _asa_address(words: list[str], line: str) -> str:
    if len(words) == 2 and words[0] == "host":
        return _net(words[1])
    if len(words) == 2:
        return _net(f"{words[0]}/{words[1]}")
    if len(words) == 1 and "/" in words[0] and ":" in words[0]:
        return _net(words[0])
    raise ReaderError(f"invalid network object: {line!r}")


def _asa_ports(words, port_names, line) -> tuple[tuple[int, int] | None, list[str]]:
    def number(word: str) -> int:
        if port_names and word in port_names:
            return port_names[word]
        return _port(word)

    if words and words[0] == "eq":
        value = number(words[1])
        return (value, value), words[2:]
    if words and words[0] == "range":
        low, high = number(words[1]), number(words[2])
        if low > high:
            raise ReaderError(f"backwards range: {line!r}")
        return (low, high), words[3:]
    return None, words


def _asa_operand(words, networks, line) -> tuple[list[str | None], list[str]]:
    if not words:
        raise ReaderError(f"missing address: {line!r}")
    if words[0] in ("any", "any4", "any6"):
        return [None], words[1:]
    if words[0] == "host":
        return [_net(words[1])], words[2:]
    if words[0] == "object-group":
        if words[1] not in networks:
            raise ReaderError(f"undefined network object group {words[1]!r}: {line!r}")
        return list(networks[words[1]]), words[2:]
    if ":" in words[0]:
        return [_net(words[0])], words[1:]
    return [_net(f"{words[0]}/{words[1]}")], words[2:]


def _asa_entry(words, networks, services, port_names, line) -> list[Atom]:
    action, protocol, *rest = words
    if action not in ("permit", "deny") or protocol not in ("ip", "tcp", "udp", "icmp", "icmp6"):
        raise ReaderError(f"invalid action or protocol: {line!r}")

    sources, rest = _asa_operand(rest, networks, line)
    sports: list[tuple[int, int] | None] = [None]
    if protocol in ("tcp", "udp"):
        ports, rest = _asa_ports(rest, port_names, line)
        if ports is not None:
            sports = [ports]

    targets, rest = _asa_operand(rest, networks, line)
    dports: list[tuple[int, int] | None] = [None]
    icmp_types: list[int | None] = [None]
    if protocol in ("tcp", "udp") and rest:
        if rest[0] == "object-group":
            kind, ranges = services.get(rest[1], (None, []))
            if kind != protocol:
                raise ReaderError(f"service group of another protocol or undefined: {line!r}")
            dports = list(ranges)
            rest = rest[2:]
        else:
            ports, rest = _asa_ports(rest, port_names, line)
            if ports is not None:
                dports = [ports]
    elif protocol in ("icmp", "icmp6") and rest and rest[0] != "log":
        table = ASA_ICMP if protocol == "icmp" else ASA_ICMP6
        if rest[0] in table:
            icmp_types = [table[rest[0]]]
        elif rest[0].isdigit() and int(rest[0]) < 256:
            icmp_types = [int(rest[0])]
        else:
            raise ReaderError(f"unknown ICMP type: {line!r}")
        rest = rest[1:]

    log = False
    if rest == ["log"]:
        log, rest = True, []
    if rest:
        raise ReaderError(f"unexpected words {rest} in {line!r}")

    atoms = []
    for source in sources:
        for sport in sports:
            for target in targets:
                for dport in dports:
                    for icmp in icmp_types:
                        atoms.append(
                            Atom(action, protocol, source, sport, target, dport, icmp, False, log)
                        )
    return atoms


# Cisco IOS


@dataclass
class IosConfig:
    acls: dict[str, list[Atom]]
    families: dict[str, str]
    entries: dict[str, list[str]]
    bindings: dict[str, dict[str, str]]


IOS_ACL_NAME = r"[A-Za-z][A-Za-z0-9._-]*"


def read_ios(text: str) -> IosConfig:
    """Read an IOS snippet with named access lists; raise ReaderError on any other line."""
    acls: dict[str, list[Atom]] = {}
    families: dict[str, str] = {}
    entries: dict[str, list[str]] = {}
    bindings: dict[str, dict[str, str]] = {}
    mode: tuple[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        words = line.split()
        if line.startswith("!"):
            _printable(line)
            continue
        if line.startswith(" "):
            if mode is None:
                raise ReaderError(f"indented line outside a mode: {line!r}")
            kind, name = mode
            if kind == "acl" and words[0] == "remark":
                _check_remark(line.split("remark ", 1)[1], line)
            elif kind == "acl" and words[0] in ("permit", "deny"):
                entries[name].append(line.strip())
                acls[name].extend(_ios_entry(words, families[name], line))
            elif kind == "interface" and words[:1] == ["ip"] and words[1] == "access-group":
                if len(words) != 4 or words[3] != "in" or families.get(words[2]) != "ipv4":
                    raise ReaderError(f"invalid IPv4 binding: {line!r}")
                bindings[name]["ipv4"] = words[2]
            elif kind == "interface" and words[:2] == ["ipv6", "traffic-filter"]:
                if len(words) != 4 or words[3] != "in" or families.get(words[2]) != "ipv6":
                    raise ReaderError(f"invalid IPv6 binding: {line!r}")
                bindings[name]["ipv6"] = words[2]
            else:
                raise ReaderError(f"unknown line in {kind} {name}: {line!r}")
            continue
        if words == ["exit"]:
            if mode is None:
                raise ReaderError("exit outside a mode")
            mode = None
        elif words[:4] == ["no", "ip", "access-list", "extended"] and len(words) == 5 or words[:3] == ["no", "ipv6", "access-list"] and len(words) == 4:
            pass
        elif words[:3] == ["ip", "access-list", "extended"] and len(words) == 4:
            mode = _open_acl(words[3], "ipv4", acls, families, entries, line)
        elif words[:2] == ["ipv6", "access-list"] and len(words) == 3:
            mode = _open_acl(words[2], "ipv6", acls, families, entries, line)
        elif words[0] == "interface" and len(words) == 2:
            mode = ("interface", words[1])
            bindings[words[1]] = {}
        else:
            raise ReaderError(f"unknown IOS command: {line!r}")
    if mode is not None:
        raise ReaderError(f"{mode[0]} {mode[1]} is not closed with exit")
    return IosConfig(acls, families, entries, bindings)


def _open_acl(name, family, acls, families, entries, line) -> tuple[str, str]:
    _check_name(name, 64, IOS_ACL_NAME, line)
    if name in acls:
        raise ReaderError(f"access list {name} written twice: {line!r}")
    acls[name], families[name], entries[name] = [], family, []
    return ("acl", name)


def _ios_address(words: list[str], family: str, line: str) -> tuple[str | None, list[str]]:
    if words[0] == "any":
        return None, words[1:]
    if words[0] == "host":
        return _net(words[1]), words[2:]
    if family == "ipv6":
        return _net(words[0]), words[1:]
    address, wildcard = words[0], words[1]
    inverse = int(ipaddress.IPv4Address(wildcard))
    if inverse & (inverse + 1):
        raise ReaderError(f"non-contiguous wildcard mask: {line!r}")
    prefix = 32 - inverse.bit_length()
    return _net(f"{address}/{prefix}"), words[2:]


def _ios_ports(words: list[str]) -> tuple[tuple[int, int] | None, list[str]]:
    if words and words[0] == "eq":
        return (_port(words[1]), _port(words[1])), words[2:]
    if words and words[0] == "range":
        return (_port(words[1]), _port(words[2])), words[3:]
    return None, words


def _ios_entry(words: list[str], family: str, line: str) -> list[Atom]:
    action, protocol, *rest = words
    names = {"ipv4": ("ip", "tcp", "udp", "icmp"), "ipv6": ("ipv6", "tcp", "udp", "icmp", "58")}
    if protocol not in names[family]:
        raise ReaderError(f"protocol {protocol} in an {family} access list: {line!r}")
    if protocol in ("ipv6", "ip"):
        protocol = "ip"
    if family == "ipv6" and protocol in ("icmp", "58"):
        protocol = "icmp6"

    source, rest = _ios_address(rest, family, line)
    sport = dport = None
    if protocol in ("tcp", "udp"):
        sport, rest = _ios_ports(rest)
    target, rest = _ios_address(rest, family, line)
    icmp = None
    if protocol in ("tcp", "udp"):
        dport, rest = _ios_ports(rest)
    elif protocol in ("icmp", "icmp6") and rest and rest[0] not in ("log",):
        if rest[0].isdigit() and int(rest[0]) < 256:
            icmp = int(rest[0])
        elif family == "ipv4" and rest[0] in IOS_ICMP:
            icmp = IOS_ICMP[rest[0]]
        else:
            raise ReaderError(f"unknown ICMP type: {line!r}")
        rest = rest[1:]

    established = False
    if rest[:1] == ["established"]:
        if protocol != "tcp":
            raise ReaderError(f"established on a protocol other than tcp: {line!r}")
        established, rest = True, rest[1:]
    log = False
    if rest == ["log"]:
        log, rest = True, []
    if rest:
        raise ReaderError(f"unexpected words {rest} in {line!r}")
    return [Atom(action, protocol, source, sport, target, dport, icmp, established, log)]


# Juniper SRX, set commands


@dataclass
class SrxConfig:
    zone_pairs: dict[tuple[str, str], list[Atom]]
    policy_names: dict[tuple[str, str], list[str]]
    descriptions: list[str]


SRX_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
POLICY_FIELDS = ("source-address", "destination-address", "application")


def read_srx(text: str) -> SrxConfig:
    """Read SRX set commands as polywall writes them; raise ReaderError on any other line."""
    addresses: dict[str, str] = {}
    address_sets: dict[str, list[str]] = {}
    applications: dict[str, dict[str, str]] = {}
    application_sets: dict[str, list[str]] = {}
    policies: dict[tuple[str, str], dict[str, dict]] = {}
    descriptions: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            _printable(line)
            continue
        words = line.split()
        if words[0] == "delete":
            _srx_delete(words[1:], line)
            continue
        if words[0] != "set":
            raise ReaderError(f"unknown SRX command: {line!r}")
        words = words[1:]
        if words[:4] == ["security", "address-book", "global", "address"] and len(words) == 6:
            _check_name(words[4], 63, SRX_NAME, line)
            addresses[words[4]] = _net(words[5])
        elif words[:4] == ["security", "address-book", "global", "address-set"]:
            if len(words) != 7 or words[5] != "address" or words[6] not in addresses:
                raise ReaderError(f"invalid address-set member: {line!r}")
            _check_name(words[4], 63, SRX_NAME, line)
            address_sets.setdefault(words[4], []).append(words[6])
        elif words[:2] == ["applications", "application"] and len(words) == 5:
            _check_name(words[2], 63, SRX_NAME, line)
            key, value = words[3], words[4]
            if key not in (
                "protocol",
                "destination-port",
                "source-port",
                "icmp-type",
                "icmp6-type",
            ):
                raise ReaderError(f"unknown application field: {line!r}")
            applications.setdefault(words[2], {})[key] = value
        elif words[:2] == ["applications", "application-set"] and len(words) == 5:
            if words[3] != "application" or words[4] not in applications:
                raise ReaderError(f"invalid application-set member: {line!r}")
            application_sets.setdefault(words[2], []).append(words[4])
        elif (
            words[:4] == ["security", "policies", "from-zone"] + words[3:4]
            and words[4] == "to-zone"
        ):
            _srx_policy_line(words, line, policies, descriptions)
        else:
            raise ReaderError(f"unknown SRX command: {line!r}")

    book = _AddressBook(addresses, address_sets)
    apps = {name: [_srx_app_atom(fields, name)] for name, fields in applications.items()}
    for name, members in application_sets.items():
        apps[name] = [atom for member in members for atom in apps[member]]

    zone_pairs: dict[tuple[str, str], list[Atom]] = {}
    names: dict[tuple[str, str], list[str]] = {}
    for pair, table in policies.items():
        zone_pairs[pair] = []
        names[pair] = list(table)
        for name, policy in table.items():
            zone_pairs[pair].extend(_srx_policy_atoms(name, policy, book, apps))
    return SrxConfig(zone_pairs, names, descriptions)


def _srx_delete(words: list[str], line: str) -> None:
    if words[:4] == ["security", "address-book", "global", "address-set"] and len(words) == 5:
        return
    applications = (["applications", "application"], ["applications", "application-set"])
    if words[:2] in applications and len(words) == 3:
        return
    if (
        words[:3] == ["security", "policies", "from-zone"]
        and len(words) == 6
        and words[4] == "to-zone"
    ):
        return
    raise ReaderError(f"unknown delete command: {line!r}")


def _srx_policy_line(words, line, policies, descriptions) -> None:
    pair = (words[3], words[5])
    if len(words) < 9 or words[6] != "policy":
        raise ReaderError(f"invalid policy command: {line!r}")
    name = words[7]
    _check_name(name, 63, SRX_NAME, line)
    policy = policies.setdefault(pair, {}).setdefault(
        name,
        {
            "source-address": [],
            "destination-address": [],
            "application": [],
            "then": None,
            "log": None,
        },
    )
    rest = words[8:]
    if rest[0] == "match" and len(rest) == 3 and rest[1] in POLICY_FIELDS:
        policy[rest[1]].append(rest[2])
    elif rest[0] == "then" and len(rest) == 2 and rest[1] in ("permit", "deny", "reject"):
        if policy["then"] is not None:
            raise ReaderError(f"second action for one policy: {line!r}")
        policy["then"] = rest[1]
    elif (
        rest[:2] == ["then", "log"]
        and len(rest) == 3
        and rest[2] in ("session-init", "session-close")
    ):
        policy["log"] = rest[2]
    elif rest[0] == "description":
        quoted = line.split(" description ", 1)[1]
        if not re.fullmatch(r'"[^"\\\x00-\x1f\x7f?]*"', quoted):
            raise ReaderError(f"description is not one plain quoted string: {line!r}")
        descriptions.append(quoted[1:-1])
    else:
        raise ReaderError(f"unknown policy field: {line!r}")


@dataclass
class _AddressBook:
    addresses: dict[str, str]
    sets: dict[str, list[str]]

    def expand(self, name: str) -> list[str | None]:
        if name == "any":
            return [None]
        if name in self.addresses:
            return [self.addresses[name]]
        if name in self.sets:
            return [n for member in self.sets[name] for n in self.expand(member)]
        raise ReaderError(f"undefined address {name!r}")


def _srx_range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, _, high = text.partition("-")
    return (_port(low), _port(high or low))


def _srx_app_atom(fields: dict[str, str], name: str) -> Atom:
    protocol = fields.get("protocol")
    if protocol not in ("tcp", "udp", "icmp", "icmp6"):
        raise ReaderError(f"application {name} has no valid protocol")
    icmp = fields.get("icmp-type") or fields.get("icmp6-type")
    return Atom(
        "",
        protocol,
        None,
        _srx_range(fields.get("source-port")),
        None,
        _srx_range(fields.get("destination-port")),
        int(icmp) if icmp else None,
    )


def _srx_policy_atoms(name, policy, book: _AddressBook, apps) -> list[Atom]:
    if policy["then"] is None or not all(policy[f] for f in POLICY_FIELDS):
        raise ReaderError(f"policy {name} lacks a match field or an action")
    atoms = []
    for source_name in policy["source-address"]:
        for source in book.expand(source_name):
            for target_name in policy["destination-address"]:
                for target in book.expand(target_name):
                    for app_name in policy["application"]:
                        if app_name == "any":
                            app_atoms = [Atom("", "ip", None, None, None, None)]
                        elif app_name in apps:
                            app_atoms = apps[app_name]
                        else:
                            raise ReaderError(f"undefined application {app_name!r}")
                        for app in app_atoms:
                            atoms.append(
                                Atom(
                                    policy["then"],
                                    app.protocol,
                                    source,
                                    app.sport,
                                    target,
                                    app.dport,
                                    app.icmp_type,
                                    False,
                                    policy["log"] is not None,
                                )
                            )
    return atoms


# Juniper SRX, curly-brace syntax (Aerleon's output)


def _junos_tokens(text: str) -> Iterator[str]:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    yield from re.findall(r'"[^"]*"|[{};\[\]]|[^\s{};\[\]]+', text)


def _junos_tree(tokens: list[str], position: int = 0) -> tuple[list, int]:
    """Parse statements into a list of (words, children-or-None) pairs."""
    statements: list = []
    words: list[str] = []
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if token == "{":
            children, position = _junos_tree(tokens, position)
            statements.append((words, children))
            words = []
        elif token == "}":
            return statements, position
        elif token == ";":
            statements.append((words, None))
            words = []
        elif token in ("[", "]"):
            continue
        else:
            words.append(token.removeprefix("replace:") if token != "replace:" else token)
    return statements, position


def _find(statements: list, *path: str) -> list:
    for words, children in statements:
        clean = [w for w in words if w != "replace:"]
        if clean[: len(path)] == list(path):
            return children or []
    return []


def read_aerleon_srx(text: str) -> dict[tuple[str, str], list[Atom]]:
    """Read Aerleon's SRX output (curly-brace syntax) into flat entries per zone pair."""
    tree, _ = _junos_tree(list(_junos_tokens(text)))
    security = _find(tree, "security")
    book = _AddressBook({}, {})
    for words, children in _find(_find(security, "address-book"), "global"):
        if words[0] == "address" and children is None:
            book.addresses[words[1]] = _net(words[2])
        elif words[0] == "address-set":
            book.sets[words[1]] = [w[1] for w, _ in children]

    apps: dict[str, list[Atom]] = {}
    sets: dict[str, list[str]] = {}
    for words, children in _find(tree, "applications"):
        if words[0] == "application":
            atoms = []
            for term_words, _ in children:
                fields = dict(zip(term_words[2::2], term_words[3::2]))
                fields.pop("inactivity-timeout", None)
                atoms.append(_srx_app_atom(fields, words[1]))
            apps[words[1]] = atoms
        elif words[0] == "application-set":
            sets[words[1]] = [w[1] for w, _ in children]
    for name, members in sets.items():
        apps[name] = [atom for member in members for atom in apps[member]]

    out: dict[tuple[str, str], list[Atom]] = {}
    for words, children in _find(security, "policies"):
        if words[:1] != ["from-zone"]:
            continue
        pair = (words[1], words[3])
        atoms = out.setdefault(pair, [])
        for policy_words, body in children:
            match = _find(body, "match")
            then = _find(body, "then")
            policy = {field: [] for field in POLICY_FIELDS}
            for field_words, _ in match:
                policy[field_words[0]].extend(field_words[1:])
            actions = [w[0] for w, _ in then if w[0] in ("permit", "deny", "reject")]
            policy["then"] = actions[0] if actions else None
            policy["log"] = "yes" if any(w[0] == "log" for w, _ in then) else None
            atoms.extend(_srx_policy_atoms(policy_words[1], policy, book, apps))
    return out


# Tests of the readers


def test_asa_reader_rejects_unknown_command():
    with pytest.raises(ReaderError):
        read_asa("access-list A extended permit tcp any any eq 22\nwrite memory\n")


def test_asa_reader_rejects_undefined_group():
    with pytest.raises(ReaderError):
        read_asa("access-list A extended permit tcp any object-group web eq 22\n")


def test_asa_reader_rejects_long_remark():
    with pytest.raises(ReaderError):
        read_asa("access-list A remark " + "x" * 101 + "\n")


def test_asa_reader_expands_groups():
    config = read_asa(
        "object-group network web\n network-object host 192.0.2.1\n"
        " network-object 198.51.100.0 255.255.255.0\n"
        "object-group service ssh-tcp tcp\n port-object eq 22\n"
        "access-list A extended permit tcp any object-group web object-group ssh-tcp log\n"
    )
    assert [a.destination for a in config.acls["A"]] == ["192.0.2.1/32", "198.51.100.0/24"]
    assert {a.dport for a in config.acls["A"]} == {(22, 22)}
    assert all(a.log for a in config.acls["A"])


def test_ios_reader_rejects_trailing_words():
    with pytest.raises(ReaderError):
        read_ios("ip access-list extended A\n permit tcp any any eq 22 junk\nexit\n")


def test_ios_reader_rejects_noncontiguous_wildcard():
    with pytest.raises(ReaderError):
        read_ios("ip access-list extended A\n permit ip 192.0.2.0 0.0.2.255 any\nexit\n")


def test_ios_reader_reads_wildcard():
    config = read_ios("ip access-list extended A\n permit ip 192.0.2.0 0.0.0.255 any\nexit\n")
    assert config.acls["A"][0].source == "192.0.2.0/24"


def test_srx_reader_rejects_unknown_field():
    with pytest.raises(ReaderError):
        read_srx("set security policies from-zone a to-zone b policy p then accept\n")


def test_srx_reader_rejects_unquoted_description():
    with pytest.raises(ReaderError):
        read_srx('set security policies from-zone a to-zone b policy p description "x" y"\n')


def test_srx_reader_rejects_undefined_application():
    text = (
        "set security policies from-zone a to-zone b policy p match source-address any\n"
        "set security policies from-zone a to-zone b policy p match destination-address any\n"
        "set security policies from-zone a to-zone b policy p match application web\n"
        "set security policies from-zone a to-zone b policy p then permit\n"
    )
    with pytest.raises(ReaderError):
        read_srx(text)


def test_icmp_tables_match_catalog():
    assert ASA_ICMP["echo"] == ICMP_TYPES["echo-request"].code
    assert ASA_ICMP6["echo"] == ICMPV6_TYPES["echo-request"].code
