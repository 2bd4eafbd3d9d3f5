"""Aerleon as an independent oracle for the ASA, IOS and SRX exporters.

A helper turns the perimeter filters of polywall's rule graph into an
Aerleon policy (one term per rule, in order, plus the default as a last
term). Aerleon then writes its own ASA, IOS and SRX output. Both outputs are
read into flat entries (action, protocol, source, destination, ports), and
they must describe the same filtering. That is, the same sequence of
same-action blocks, each block the same set of entries. Entries within a
block of one action can be reordered without changing what the filter does.

Aerleon's known faults, worked around here with the reason:

- its ciscoasa generator renders IPv4 only (its ASA Term is always built for
  address family 4), so ASA output is compared on IPv4 entries only;
- for an ICMPv6 term its ASA output writes two bare 'remark' lines without
  'access-list NAME', which the ASA would reject; they are dropped before
  reading;
- its IOS output writes ICMPv6 as protocol number 58 and its ASA output
  writes port keywords ('eq ssh'); the readers translate both.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools

import pytest

from compiler import capabilities
from compiler.api import load_policy
from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES
from compiler.graph import PortRange, Rule, RuleGraph, normalize_networks, normalize_ports
from compiler.plugins import exporters
from exporters import perimeter
from tests.conftest import require, sample_files
from tests.helpers import write_policy
from tests.test_vendor_readers import Atom, read_aerleon_srx, read_asa, read_ios, read_srx
from tests.test_vendor_syntax import FEATURES

try:
    from aerleon import api as aerleon_api
    from aerleon.lib import cisco as aerleon_cisco
    from aerleon.lib import naming as aerleon_naming
    from aerleon.lib import policy as aerleon_policy
except ImportError:  # pragma: no cover - depends on the test environment
    aerleon_api = None

TARGETS = ("cisco-asa", "cisco-ios", "juniper-srx")
AERLEON_PLATFORMS = {"cisco-asa": "ciscoasa", "cisco-ios": "cisco", "juniper-srx": "srx"}


@pytest.fixture(autouse=True)
def need_aerleon():
    require(aerleon_api is not None, "needs the aerleon package (test extra)")


# The Aerleon policy


class _Definitions:
    """Network and service tokens for Aerleon's naming definitions, one per distinct value."""

    def __init__(self) -> None:
        self.networks: dict[str, dict] = {}
        self.services: dict[str, list] = {}

    def network(self, networks) -> str:
        token = f"NET{len(self.networks)}"
        self.networks[token] = {"values": [{"address": str(n)} for n in networks]}
        return token

    def service(self, protocol: str, ports) -> str:
        token = f"SVC{len(self.services)}"
        self.services[token] = [
            {"port": str(p.low) if p.low == p.high else f"{p.low}-{p.high}", "protocol": protocol}
            for p in ports
        ]
        return token


def _icmp_names(family: int) -> dict[int, str]:
    table = aerleon_policy.Term.ICMP_TYPE[family]
    return {code: name for name, code in table.items()}


def _term(rule: Rule, name: str, definitions: _Definitions, stateless: bool) -> dict:
    term: dict = {"name": name, "action": {"drop": "deny"}.get(rule.action, rule.action)}
    protocol = rule.protocol
    if rule.ct_states and stateless:
        protocol = "tcp"
        term["option"] = "tcp-established"
    if protocol:
        term["protocol"] = protocol
    if rule.saddr and rule.saddr.networks:
        term["source-address"] = definitions.network(rule.saddr.networks)
    if rule.daddr and rule.daddr.networks:
        term["destination-address"] = definitions.network(rule.daddr.networks)
    if rule.dports:
        term["destination-port"] = definitions.service(protocol, rule.dports)
    if rule.sports:
        term["source-port"] = definitions.service(protocol, rule.sports)
    if rule.icmp_types:
        family = 4 if protocol == "icmp" else 6
        table = ICMP_TYPES if protocol == "icmp" else ICMPV6_TYPES
        names = _icmp_names(family)
        term["icmp-type"] = [names[table[t].code] for t in rule.icmp_types]
    if rule.log:
        term["logging"] = "true"
    return term


def aerleon_policy_for(graph: RuleGraph, target: str) -> tuple[dict, dict]:
    """Build an Aerleon policy equivalent to the target's perimeter filters."""
    stateless = target == "cisco-ios"
    definitions = _Definitions()
    filters = []
    sides = perimeter.perimeter_filters(graph, stateful=not stateless)
    for side_filter, names in zip(
        sides, (("outside_in", "untrust", "trust"), ("inside_in", "trust", "untrust"))
    ):
        rules = [e.rule for e in side_filter.entries if e.skip_reason is None]
        families = ("inet", "inet6") if target == "cisco-ios" else ("mixed",)
        for family in families:
            kept = rules
            if family != "mixed":
                wanted = "ipv4" if family == "inet" else "ipv6"
                kept = [r for r in rules if wanted in r.families]
            # Aerleon's SRX generator names applications after terms, so names are unique per policy.
            prefix = f"{side_filter.side}-{family}"
            terms = [_term(r, f"{prefix}-{i}", definitions, stateless) for i, r in enumerate(kept)]
            terms.append(
                {
                    "name": f"{prefix}-default",
                    "action": {"drop": "deny"}.get(side_filter.default, side_filter.default),
                }
            )
            if target == "cisco-ios":
                acl = names[0] if family == "inet" else names[0] + "6"
                kind = "extended" if family == "inet" else "inet6"
                header = {"targets": {"cisco": f"{acl} {kind}"}}
            elif target == "cisco-asa":
                header = {"targets": {"ciscoasa": names[0]}}
            else:
                header = {"targets": {"srx": f"from-zone {names[1]} to-zone {names[2]}"}}
            filters.append({"header": header, "terms": terms})
    policy = {"filename": "oracle", "filters": filters}
    return policy, {"networks": definitions.networks, "services": definitions.services}


def run_aerleon(graph: RuleGraph, target: str) -> str:
    policy, definitions = aerleon_policy_for(graph, target)
    table = aerleon_naming.Naming()
    table.ParseDefinitionsObject(definitions, "")
    outputs = aerleon_api.Generate([policy], table)
    assert len(outputs) == 1, sorted(outputs)
    return next(iter(outputs.values()))


# Normalization


def blocks(atoms: list[Atom]) -> list[tuple[str, frozenset]]:
    """Group consecutive entries of one action; order inside a group does not matter.

    Inside a group, port ranges and networks that differ only in how they are
    split (22-23 or 22 and 23) are merged, so that both sides compare equal
    when they match the same packets.
    """
    out = []
    for action, group in itertools.groupby(atoms, key=lambda a: a.action):
        merged = set(group)
        for field in ("dport", "sport", "source", "destination"):
            merged = _merge_field(merged, field)
        out.append((action, frozenset(merged)))
    return out


def _merge_field(atoms: set[Atom], field: str) -> set[Atom]:
    by_rest: dict[tuple, list] = {}
    for atom in atoms:
        values = dict(atom.__dict__)
        value = values.pop(field)
        by_rest.setdefault(tuple(sorted(values.items())), []).append(value)
    out = set()
    for rest, values in by_rest.items():
        for value in _merge_values(field, values):
            out.add(Atom(**dict(rest), **{field: value}))
    return out


def _merge_values(field: str, values: list) -> list:
    if None in values:
        return [None]
    if field in ("dport", "sport"):
        ranges = normalize_ports(PortRange(low, high) for low, high in values)
        return [(r.low, r.high) for r in ranges]
    networks = normalize_networks(ipaddress.ip_network(v) for v in values)
    return [str(n) for n in networks]


def _ipv4_only(atoms: list[Atom]) -> list[Atom]:
    kept = []
    for atom in atoms:
        if atom.protocol == "icmp6":
            continue
        if any(a is not None and ":" in a for a in (atom.source, atom.destination)):
            continue
        kept.append(atom)
    return kept


@functools.cache
def _asa_port_names() -> dict[str, int]:
    names: dict[str, int] = {}
    for protocol in ("tcp", "udp"):
        for port in range(1, 65536):
            name = str(aerleon_cisco.PortMap.GetProtocol(port, protocol))
            if not name.isdigit():
                names[name] = port
    return names


def compare(graph: RuleGraph, target: str, ours: str) -> None:
    theirs = run_aerleon(graph, target)
    if target == "cisco-asa":
        mine = read_asa(ours)
        theirs = "\n".join(line for line in theirs.splitlines() if not line.startswith("remark "))
        other = read_asa(theirs, port_names=_asa_port_names())
        for acl in ("outside_in", "inside_in"):
            assert blocks(_ipv4_only(mine.acls[acl])) == blocks(_ipv4_only(other.acls[acl])), acl
    elif target == "cisco-ios":
        mine_ios = read_ios(ours)
        other_ios = read_ios(theirs)
        for acl in ("outside_in", "outside_in6", "inside_in", "inside_in6"):
            assert blocks(mine_ios.acls[acl]) == blocks(other_ios.acls[acl]), acl
    else:
        mine_srx = read_srx(ours).zone_pairs
        other_srx = read_aerleon_srx(theirs)
        assert set(mine_srx) == set(other_srx)
        for pair in mine_srx:
            assert blocks(mine_srx[pair]) == blocks(other_srx[pair]), pair


def _expressible_samples(target: str) -> list:
    exporter = exporters()[target]
    kept = []
    for path in sample_files():
        graph = load_policy(str(path))
        if not capabilities.check(graph, target, frozenset(exporter.capabilities)) + exporter.check(
            graph
        ):
            kept.append(pytest.param(path, id=path.stem))
    return kept


@pytest.mark.parametrize("target", TARGETS)
def test_feature_policy_matches_aerleon(target, tmp_path):
    graph = load_policy(str(write_policy(tmp_path, FEATURES)))
    output = exporters()[target].render(graph)
    compare(graph, target, next(iter(output.values())))


def test_srx_reject_matches_aerleon(tmp_path):
    text = "reject tcp 25 with tcp-reset log\ndrop udp 69 from 192.0.2.0/24\ndefault reject\n"
    graph = load_policy(str(write_policy(tmp_path, text)))
    compare(graph, "juniper-srx", exporters()["juniper-srx"].render(graph)["juniper-srx.set"])


@pytest.mark.parametrize("target", TARGETS)
def test_samples_match_aerleon(target):
    samples = _expressible_samples(target)
    assert samples, f"no sample compiles for {target}"
    for param in samples:
        path = param.values[0]
        graph = load_policy(str(path))
        output = exporters()[target].render(graph)
        compare(graph, target, next(iter(output.values())))


def test_blocks_see_a_changed_order():
    allow = Atom("permit", "tcp", None, None, None, (22, 22))
    deny = Atom("deny", "ip", None, None, None, None)
    assert blocks([allow, deny]) != blocks([deny, allow])
