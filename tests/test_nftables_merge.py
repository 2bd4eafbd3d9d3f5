"""Merging adjacent nftables rules into set lookups: grouping, output, and the real kernel."""

from __future__ import annotations

import ipaddress
from itertools import combinations, product

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.api import load_policy_text
from compiler.errors import Source
from compiler.graph import AddressMatch, PortRange, Rule, normalize_networks, normalize_ports
from compiler.netlab import Lab, Probe
from exporters.nftables import NftablesExporter
from exporters.nftables_merge import ElementIndex, field_values, group_rules, merge_key
from tests.conftest import need_tool


def _render(text: str) -> str:
    return NftablesExporter().render(load_policy_text(text))["ruleset.nft"]


def _rule_lines(nft: str) -> list[str]:
    return [
        line.strip()
        for line in nft.splitlines()
        if line.startswith("\t\t") and not line.strip().startswith(("#", "type "))
    ]


def test_one_varying_field_merges_into_set():
    nft = _render("allow tcp 22 from 192.0.2.1\nallow tcp 22 from 192.0.2.7\ndefault drop in")
    assert "ip saddr { 192.0.2.1, 192.0.2.7 } tcp dport 22 accept" in _rule_lines(nft)
    assert "# <policy>:1: allow tcp 22 from 192.0.2.1" in nft
    assert "# <policy>:2: allow tcp 22 from 192.0.2.7" in nft


def test_two_varying_fields_use_concatenation():
    nft = _render("allow tcp 22 from 192.0.2.1\nallow tcp 80, 443 from 192.0.2.7")
    expected = "ip saddr . tcp dport { 192.0.2.1 . 22, 192.0.2.7 . 80, 192.0.2.7 . 443 } accept"
    assert expected in _rule_lines(nft)


def test_comment_log_and_limit_block_merging():
    for extra in ('comment "web"', 'log "web"', "limit 5/second"):
        text = f"allow tcp 22 from 192.0.2.1\nallow tcp 22 from 192.0.2.7 {extra}"
        rules = _rule_lines(_render(text))
        assert len(rules) == 2, (extra, rules)


def test_different_verdicts_do_not_merge():
    rules = _rule_lines(_render("allow tcp 22 from 192.0.2.1\ndrop tcp 22 from 192.0.2.7"))
    assert rules == ["ip saddr 192.0.2.1 tcp dport 22 accept", "ip saddr 192.0.2.7 tcp dport 22 drop"]


def test_negated_address_does_not_merge():
    rules = _rule_lines(_render("allow tcp 22 from !192.0.2.1\nallow tcp 22 from !192.0.2.7"))
    assert len(rules) == 2


def test_rule_between_breaks_group():
    text = "allow tcp 22 from 192.0.2.1\nallow udp 53\nallow tcp 22 from 192.0.2.7"
    rules = _rule_lines(_render(text))
    assert rules == [
        "ip saddr 192.0.2.1 tcp dport 22 accept",
        "udp dport 53 accept",
        "ip saddr 192.0.2.7 tcp dport 22 accept",
    ]


def test_overlapping_elements_start_new_group():
    # The kernel rejects 192.0.0.0/16 . 22 after 192.0.2.0/24 . 20-30 in one set.
    text = "allow tcp 20-30 from 192.0.2.0/24\nallow tcp 22 from 192.0.0.0/16"
    rules = _rule_lines(_render(text))
    assert rules == [
        "ip saddr 192.0.2.0/24 tcp dport 20-30 accept",
        "ip saddr 192.0.0.0/16 tcp dport 22 accept",
    ]


def test_long_group_gets_named_set():
    text = "\n".join(f"allow tcp {1000 + i} from 192.0.2.{i}" for i in range(1, 21))
    nft = _render(text)
    assert _rule_lines(nft) == ["ip saddr . tcp dport @input_1 accept"]
    assert "\tset input_1 { type ipv4_addr . inet_service; flags interval; }" in nft
    body = nft.split("add element inet polywall input_1 {\n", 1)[1].split("\n}", 1)[0]
    assert body.splitlines()[0] == "\t192.0.2.1 . 1001,"
    assert body.splitlines()[-1] == "\t192.0.2.20 . 1020"
    assert len(body.splitlines()) == 20
    for i in range(1, 21):
        assert f"# <policy>:{i}: allow tcp {1000 + i} from 192.0.2.{i}" in nft


def test_small_long_group_keeps_rules():
    ports = ", ".join(str(p) for p in range(2000, 2030, 2))
    text = f"allow tcp {ports} from 192.0.2.1\nallow tcp {ports} from 192.0.2.9"
    rules = _rule_lines(_render(text))
    assert len(rules) == 2
    assert all("@" not in rule for rule in rules)


def test_index_rejects_nested_networks_in_either_order():
    net = ipaddress.ip_network
    wide, narrow = net("192.0.0.0/16"), net("192.0.2.0/24")
    ssh = (PortRange(22, 22),)
    for first, second in ((wide, narrow), (narrow, wide)):
        index = ElementIndex(("saddr", "dports"))
        assert index.add([(first,), ssh]) == [(first, PortRange(22, 22))]
        assert index.conflicts([(second,), ssh])
        assert not index.conflicts([(first,), (PortRange(23, 23),)])
        assert not index.conflicts([(net("198.51.100.0/24"),), ssh])


def test_index_rejects_port_range_over_single_port():
    index = ElementIndex(("dports", "saddr"))
    host = (ipaddress.ip_network("192.0.2.1/32"),)
    assert index.add([(PortRange(22, 22),), host])
    assert index.conflicts([(PortRange(20, 30),), host])
    assert index.conflicts([(PortRange(1, 60000),), host])
    assert not index.conflicts([(PortRange(23, 30),), host])
    assert index.add([(PortRange(22, 22), PortRange(23, 30)), host]) == [(PortRange(23, 30), host[0])]


# Property test: groups keep the chain's rules and order, share a key, and a
# merged group's elements are exactly the members' elements, with no overlap.

_NETWORKS = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "192.0.2.0/25", "192.0.2.128/25", "192.0.2.1/32", "192.0.2.200/32",
    "198.51.100.0/24", "198.51.0.0/16",
)]  # fmt: skip
_PORTS = [PortRange(22, 22), PortRange(80, 80), PortRange(20, 30), PortRange(1000, 2000)]


@st.composite
def _rules(draw) -> list[Rule]:
    rules = []
    for line in range(1, draw(st.integers(1, 12)) + 1):
        saddr = draw(st.lists(st.sampled_from(_NETWORKS), max_size=2))
        daddr = draw(st.lists(st.sampled_from(_NETWORKS), max_size=1))
        dports = draw(st.lists(st.sampled_from(_PORTS), max_size=2))
        rules.append(
            Rule(
                chain="input",
                action=draw(st.sampled_from(["accept", "drop"])),
                families=("ipv4",),
                source=Source("p.wall", line, 1),
                text=f"rule {line}",
                protocol="tcp" if dports else None,
                dports=normalize_ports(dports),
                saddr=AddressMatch(normalize_networks(saddr)) if saddr else None,
                daddr=AddressMatch(normalize_networks(daddr)) if daddr else None,
                comment=draw(st.sampled_from([None, None, "c"])),
            )
        )
    return rules


def _interval(value) -> tuple[int, int]:
    if isinstance(value, PortRange):
        return value.low, value.high
    return int(value.network_address), int(value.broadcast_address)


def _overlap(a: tuple, b: tuple) -> bool:
    for x, y in zip(a, b):
        (x_low, x_high), (y_low, y_high) = _interval(x), _interval(y)
        if x_high < y_low or y_high < x_low:
            return False
    return True


def _covered(values) -> set[int]:
    return {i for v in values for i in range(_interval(v)[0], _interval(v)[1] + 1)}


@settings(max_examples=300, deadline=None)
@given(_rules())
def test_groups_keep_rules_and_elements(rules):
    groups = group_rules(rules)
    assert [r for g in groups for r in g.rules] == rules
    for group in groups:
        if not group.fields:
            continue
        assert len({merge_key(r) for r in group.rules}) == 1
        if len(group.fields) == 1:
            name = group.fields[0]
            expected = _covered(v for r in group.rules for v in field_values(r, name))
            assert _covered(e[0] for e in group.elements) == expected
            continue
        expected = {
            element
            for rule in group.rules
            for element in product(*(field_values(rule, name) for name in group.fields))
        }
        assert set(group.elements) == expected
        assert len(group.elements) == len(expected)
        for a, b in combinations(group.elements, 2):
            assert not _overlap(a, b), (a, b)


def test_merged_sets_decide_packets_in_kernel(need_namespaces):
    need_tool("nft")
    with Lab() as lab:
        firewall = lab.namespace("fw")
        client = lab.namespace("client")
        link = lab.link(client, firewall)
        # Odd ports are open to the client, even ones to another host only.
        lines = []
        for client_address, other in ((link.a4, "10.201.0.99"), (link.a6, "fd00:201::99")):
            for port in range(8001, 8013):
                lines.append(f"allow tcp {port} from {client_address if port % 2 else other}")
        # Overlapping elements, which must not share one set.
        lines += [f"allow tcp 9000-9010 from {link.a4}", "allow tcp 9005 from 10.201.0.0/24"]
        lines.append("default drop in")
        nft = _render("\n".join(lines))
        assert "@input_1" in nft
        assert "@input_2" in nft
        lab.serve(firewall, tcp=[*range(8001, 8013), 9005, 9011])
        lab.run(firewall, ["nft", "-f", "-"], input=nft)
        probes = [Probe("tcp", address, port) for address in (link.b4, link.b6)
                  for port in range(8001, 8013)]  # fmt: skip
        probes += [Probe("tcp", link.b4, 9005), Probe("tcp", link.b4, 9011)]
        outcomes = lab.probe(client, probes)
    for probe in probes:
        if probe.port >= 9000:
            expected = "open" if probe.port == 9005 else "dropped"
        else:
            expected = "open" if probe.port % 2 else "dropped"
        assert outcomes[probe] == expected, probe
