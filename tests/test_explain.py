"""`polywall explain`: the packet parser, the reference evaluator and the command."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.api import load_policy
from compiler.cli import main
from compiler.errors import PolicyError, SourceCache
from compiler.evaluate import address_matches, evaluate, interface_matches, mismatches
from compiler.graph import AddressMatch
from compiler.packet import packet_text, parse_packet
from tests.conftest import ROOT, need_tool
from tests.helpers import export, write_policy

SAMPLE = "samples/safesquid-outlook.wall"
SAMPLE_DEFAULT_LINE = 25
CLIENT = "198.51.100.5:40000"
SERVER = "192.0.2.10"
CLIENT6 = "[2001:db8::5]:40000"
SERVER6 = "[2001:db8::1]"


def run_json(capsys, policy: str, *packet: str) -> dict:
    """Run `polywall explain --json` in-process and return the parsed output."""
    status = main(["explain", policy, *packet, "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def run_text(capsys, policy: str, packet: str) -> str:
    status = main(["explain", policy, packet])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


# The article sample. Line 9: established, 10: on lo, 11: icmp, 15: tcp list
# 22,25,53,110,389,465,587,636,953,993,995, 17: tcp 1023, 3268-3269, 5222,
# 5269, 5280, 8080, 19: udp 53, 953, 23: icmpv6, 25: default drop (in, fwd).
# (packet, chain, verdict, deciding line or None for the default)
SAMPLE_CASES = [
    (f"tcp {CLIENT} -> {SERVER}:22 in on eth0", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:21 in on eth0", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:23 in on eth0", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:53 in", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:54 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:110 in", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:111 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:388 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:389 in", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:390 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:464 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:465 in", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:466 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:586 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:587 in", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:588 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:993 in on eth0", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:995 in", "input", "accept", 15),
    (f"tcp {CLIENT} -> {SERVER}:1022 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:1023 in", "input", "accept", 17),
    (f"tcp {CLIENT} -> {SERVER}:1024 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:3267 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:3268 in", "input", "accept", 17),
    (f"tcp {CLIENT} -> {SERVER}:3269 in", "input", "accept", 17),
    (f"tcp {CLIENT} -> {SERVER}:3270 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:5221 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:5222 in", "input", "accept", 17),
    (f"tcp {CLIENT} -> {SERVER}:5223 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:8079 in", "input", "drop", None),
    (f"tcp {CLIENT} -> {SERVER}:8080 in", "input", "accept", 17),
    (f"tcp {CLIENT} -> {SERVER}:8081 in", "input", "drop", None),
    (f"udp {CLIENT} -> {SERVER}:52 in", "input", "drop", None),
    (f"udp {CLIENT} -> {SERVER}:53 in", "input", "accept", 19),
    (f"udp {CLIENT} -> {SERVER}:54 in", "input", "drop", None),
    (f"udp {CLIENT} -> {SERVER}:952 in", "input", "drop", None),
    (f"udp {CLIENT} -> {SERVER}:953 in", "input", "accept", 19),
    (f"udp {CLIENT} -> {SERVER}:954 in", "input", "drop", None),
    # imaps is a tcp-only service, so udp 993 is not in the tcp list's rule.
    (f"udp {CLIENT} -> {SERVER}:993 in", "input", "drop", None),
    # The direction defaults to in.
    (f"tcp {CLIENT} -> {SERVER}:22", "input", "accept", 15),
    # IPv6 packets: the tcp lists apply to both families, icmp (line 11) only to IPv4.
    (f"tcp {CLIENT6} -> {SERVER6}:993 in on eth0", "input", "accept", 15),
    (f"tcp {CLIENT6} -> {SERVER6}:994 in on eth0", "input", "drop", None),
    (f"udp [2001:db8::5]:5353 -> {SERVER6}:53 in", "input", "accept", 19),
    ("icmp echo-request 192.0.2.9 -> 192.0.2.1 in", "input", "accept", 11),
    ("icmpv6 echo-request 2001:db8::9 -> 2001:db8::1 in", "input", "accept", 23),
    ("icmpv6 neighbor-solicitation 2001:db8::9 -> 2001:db8::1 in", "input", "accept", 23),
    # Conntrack state: `established` in a policy means established or related.
    (f"tcp established {CLIENT} -> {SERVER}:12345 in", "input", "accept", 9),
    (f"udp related {CLIENT} -> {SERVER}:12345 in", "input", "accept", 9),
    (f"tcp established {CLIENT6} -> {SERVER6}:12345 in", "input", "accept", 9),
    (f"tcp invalid {CLIENT} -> {SERVER}:12345 in", "input", "drop", None),
    (f"tcp untracked {CLIENT} -> {SERVER}:12345 in", "input", "drop", None),
    (f"tcp new {CLIENT} -> {SERVER}:12345 in", "input", "drop", None),
    # Loopback: any protocol and port on lo.
    ("tcp 127.0.0.1:40000 -> 127.0.0.1:12345 in on lo", "input", "accept", 10),
    ("udp [::1]:40000 -> [::1]:9 in on lo", "input", "accept", 10),
    ("tcp 127.0.0.1:40000 -> 127.0.0.1:12345 in on lo0", "input", "drop", None),
    # Forwarded packets go through the forward chain, which has the same rules.
    (f"tcp {CLIENT} -> 203.0.113.7:993 fwd on eth1 out-on eth0", "forward", "accept", 15),
    (f"udp {CLIENT} -> 203.0.113.7:953 fwd", "forward", "accept", 19),
    (f"tcp {CLIENT} -> 203.0.113.7:8081 fwd on eth1 out-on eth0", "forward", "drop", None),
    ("icmp echo-request 192.0.2.9 -> 203.0.113.7 fwd", "forward", "accept", 11),
    (f"tcp established {CLIENT} -> 203.0.113.7:40000 fwd", "forward", "accept", 9),
]


@pytest.mark.parametrize(("packet", "chain", "verdict", "line"), SAMPLE_CASES)
def test_sample_decisions(packet, chain, verdict, line, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_json(capsys, SAMPLE, packet)

    assert result["chain"] == chain
    assert result["verdict"] == verdict
    if line is None:
        assert result["default"] is True
        assert result["rule"] is None
        assert result["default_source"]["line"] == SAMPLE_DEFAULT_LINE
        assert result["default_source"]["text"] == "default drop"
    else:
        assert result["default"] is False
        assert result["rule"]["file"] == SAMPLE
        assert result["rule"]["line"] == line
        assert result["default_source"] is None


def test_sample_out_builtin_default(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_json(capsys, SAMPLE, f"tcp {SERVER}:40000 -> 203.0.113.7:25 out on eth0")

    assert result["chain"] == "output"
    assert result["verdict"] == "accept"
    assert result["default"] is True
    assert result["builtin_default"] is True
    assert result["default_source"] is None


def test_icmp_rule_skips_ipv6_packet():
    graph = load_policy(str(ROOT / SAMPLE))
    icmp_rule = next(r for r in graph.chains["input"].rules if r.source.line == 11)
    packet = parse_packet("icmpv6 echo-request 2001:db8::9 -> 2001:db8::1 in")

    assert "family" in mismatches(icmp_rule, packet)
    assert "protocol" in mismatches(icmp_rule, packet)
    assert evaluate(graph, packet).rule.source.line == 23


def test_text_output_rule(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = run_text(capsys, SAMPLE, f"tcp {CLIENT} -> {SERVER}:993 in on eth0")
    lines = out.splitlines()

    assert lines[0] == "verdict: accept"
    assert lines[1].startswith(f"rule:    {SAMPLE}:15: allow tcp ssh, smtp, domain,")
    assert lines[1].endswith("imaps, pop3s in,fwd")
    assert lines[2] == "chain:   input"
    assert lines[3] == f"packet:  tcp new {CLIENT} -> {SERVER}:993 in on eth0"


def test_text_output_default_line(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = run_text(capsys, SAMPLE, f"tcp {CLIENT} -> {SERVER}:994 in on eth0")
    lines = out.splitlines()

    assert lines[0] == "verdict: drop (the default: no rule of chain input matches)"
    assert lines[1] == f"default: {SAMPLE}:25: default drop"


def test_text_output_builtin_default(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = run_text(capsys, SAMPLE, f"udp {SERVER}:40000 -> 203.0.113.7:53 out")
    lines = out.splitlines()

    assert lines[0] == "verdict: accept (the default: no rule of chain output matches)"
    assert lines[1] == "default: built-in accept; the policy has no 'default' line for out"


def test_note_for_packet_without_interface(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_json(capsys, SAMPLE, "tcp 127.0.0.1:40000 -> 127.0.0.1:12345 in")

    assert result["verdict"] == "drop"
    expected = (
        f"{SAMPLE}:10 applies only to input interface lo, but the packet names no interface; "
        "add 'on IFACE' to test it"
    )
    assert result["notes"] == [expected]


def test_no_note_when_verdict_is_same(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_json(capsys, SAMPLE, f"tcp {CLIENT} -> {SERVER}:22 in")

    assert result["verdict"] == "accept"
    assert result["notes"] == []


# Inline policies


def decide(tmp_path: Path, policy: str, packet: str):
    """Evaluate a packet against policy text and return (verdict, deciding line or None)."""
    path = write_policy(tmp_path, policy)
    decision = evaluate(load_policy(str(path)), parse_packet(packet))
    line = decision.rule.source.line if decision.rule is not None else None
    return decision.verdict, line


NEGATION = """\
hosts office = 192.0.2.0/24, 198.51.100.0/24
drop tcp 22 from !office
reject tcp 25 to !192.0.2.1
allow tcp 22, 25
default drop
"""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ("tcp 203.0.113.5:40000 -> 192.0.2.1:22", ("drop", 2)),
        ("tcp 192.0.2.7:40000 -> 192.0.2.1:22", ("accept", 4)),
        ("tcp 198.51.100.9:40000 -> 192.0.2.1:22", ("accept", 4)),
        # The group has only IPv4 networks, so its negation is an IPv4 rule.
        ("tcp [2001:db8::9]:40000 -> [2001:db8::1]:22", ("accept", 4)),
        ("tcp 203.0.113.5:40000 -> 192.0.2.1:25", ("accept", 4)),
        ("tcp 203.0.113.5:40000 -> 192.0.2.2:25", ("reject", 3)),
    ],
)
def test_negated_addresses(packet, expected, tmp_path):
    assert decide(tmp_path, NEGATION, packet) == expected


RANGES = """\
allow tcp 6000-6063
allow udp 60000-61000, 5353
default drop
"""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:5999", ("drop", None)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:6000", ("accept", 1)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:6063", ("accept", 1)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:6064", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 192.0.2.1:6000", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 192.0.2.1:59999", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 192.0.2.1:60000", ("accept", 2)),
        ("udp 192.0.2.9:40000 -> 192.0.2.1:61000", ("accept", 2)),
        ("udp 192.0.2.9:40000 -> 192.0.2.1:61001", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 192.0.2.1:5353", ("accept", 2)),
    ],
)
def test_port_ranges(packet, expected, tmp_path):
    assert decide(tmp_path, RANGES, packet) == expected


INTERFACES = """\
allow tcp 80 on eth+
allow tcp 81 on eth0
allow fwd on br+ out-on wan+
drop out on eth1
default drop in, fwd
"""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80 on eth0", ("accept", 1)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80 on eth12", ("accept", 1)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80 on eth", ("accept", 1)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80 on et", ("drop", None)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80 on wlan0", ("drop", None)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80", ("drop", None)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:81 on eth0", ("accept", 2)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:81 on eth00", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 203.0.113.1:53 fwd on br0 out-on wan1", ("accept", 3)),
        ("udp 192.0.2.9:40000 -> 203.0.113.1:53 fwd on br0 out-on lan1", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 203.0.113.1:53 fwd on wan1 out-on br0", ("drop", None)),
        ("udp 192.0.2.9:40000 -> 203.0.113.1:53 fwd on br0", ("drop", None)),
        # For out packets, 'on' is the outgoing interface, as in a policy.
        ("udp 192.0.2.1:40000 -> 203.0.113.1:53 out on eth1", ("drop", 4)),
        ("udp 192.0.2.1:40000 -> 203.0.113.1:53 out on eth2", ("accept", None)),
    ],
)
def test_interfaces(packet, expected, tmp_path):
    assert decide(tmp_path, INTERFACES, packet) == expected


SOURCE_PORTS = """\
allow udp 53 from any port 53
allow udp from 192.0.2.0/24 port 67-68
default drop
"""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ("udp 198.51.100.1:53 -> 192.0.2.1:53", ("accept", 1)),
        ("udp 198.51.100.1:54 -> 192.0.2.1:53", ("drop", None)),
        ("udp 198.51.100.1:53 -> 192.0.2.1:54", ("drop", None)),
        ("tcp 198.51.100.1:53 -> 192.0.2.1:53", ("drop", None)),
        ("udp 192.0.2.7:68 -> 192.0.2.1:6000", ("accept", 2)),
        ("udp 192.0.2.7:67 -> 192.0.2.1:6000", ("accept", 2)),
        ("udp 192.0.2.7:69 -> 192.0.2.1:6000", ("drop", None)),
        ("udp 198.51.100.1:68 -> 192.0.2.1:6000", ("drop", None)),
    ],
)
def test_source_ports(packet, expected, tmp_path):
    assert decide(tmp_path, SOURCE_PORTS, packet) == expected


FAMILIES = """\
allow tcp 22 from 192.0.2.0/24
allow tcp 22 from 2001:db8:1::/48
allow to 192.0.2.53
allow icmp echo-request
default drop
"""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:22", ("accept", 1)),
        ("tcp [2001:db8:1::9]:40000 -> [2001:db8::1]:22", ("accept", 2)),
        ("tcp [2001:db8:2::9]:40000 -> [2001:db8::1]:22", ("drop", None)),
        # ::ffff:192.0.2.9 is an IPv6 address, so the IPv4 network does not hold it.
        ("tcp [::ffff:192.0.2.9]:40000 -> [2001:db8::1]:22", ("drop", None)),
        # A rule without protocol matches every protocol of its family.
        ("udp 198.51.100.1:40000 -> 192.0.2.53:53", ("accept", 3)),
        ("tcp 198.51.100.1:40000 -> 192.0.2.53:443", ("accept", 3)),
        ("icmp timestamp-request 198.51.100.1 -> 192.0.2.53", ("accept", 3)),
        ("icmp echo-request 198.51.100.1 -> 192.0.2.1", ("accept", 4)),
        ("icmp echo-reply 198.51.100.1 -> 192.0.2.1", ("drop", None)),
        # The icmp rule is IPv4 only, and ICMPv6 echo-request is type 128, not 8.
        ("icmpv6 echo-request 2001:db8::9 -> 2001:db8::1", ("drop", None)),
        ("icmpv6 8 2001:db8::9 -> 2001:db8::1", ("drop", None)),
    ],
)
def test_families(packet, expected, tmp_path):
    assert decide(tmp_path, FAMILIES, packet) == expected


STATES = """\
drop state invalid
allow state related
allow tcp 80 state new
allow established
default reject
"""


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ("tcp invalid 192.0.2.9:40000 -> 192.0.2.1:80", ("drop", 1)),
        ("udp related 192.0.2.9:40000 -> 192.0.2.1:9", ("accept", 2)),
        ("tcp new 192.0.2.9:40000 -> 192.0.2.1:80", ("accept", 3)),
        ("tcp 192.0.2.9:40000 -> 192.0.2.1:80", ("accept", 3)),
        ("tcp established 192.0.2.9:40000 -> 192.0.2.1:80", ("accept", 4)),
        ("tcp untracked 192.0.2.9:40000 -> 192.0.2.1:80", ("reject", None)),
        ("tcp new 192.0.2.9:40000 -> 192.0.2.1:81", ("reject", None)),
    ],
)
def test_states(packet, expected, tmp_path):
    assert decide(tmp_path, STATES, packet) == expected


def test_reject_types(tmp_path):
    path = write_policy(tmp_path, "reject tcp 113 with tcp-reset\nreject udp 111\ndefault reject\n")
    graph = load_policy(str(path))

    reset = evaluate(graph, parse_packet("tcp 192.0.2.9:40000 -> 192.0.2.1:113"))
    unreachable = evaluate(graph, parse_packet("udp 192.0.2.9:40000 -> 192.0.2.1:111"))
    default = evaluate(graph, parse_packet("udp 192.0.2.9:40000 -> 192.0.2.1:112"))

    assert (reset.verdict, reset.reject_with) == ("reject", "tcp-reset")
    assert (unreachable.verdict, unreachable.reject_with) == ("reject", "port-unreachable")
    assert (default.verdict, default.reject_with, default.default) == (
        "reject",
        "port-unreachable",
        True,
    )


def test_limit_and_log(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, 'allow tcp 22 limit 3/minute burst 5 log "ssh"\ndrop tcp 22\n')
    result = run_json(capsys, "policy.wall", "tcp 192.0.2.9:40000 -> 192.0.2.1:22")

    assert result["verdict"] == "accept"
    assert result["rule"]["line"] == 1
    assert result["logged"] is True
    assert result["log_prefix"] == "ssh "
    assert len(result["notes"]) == 1
    assert result["notes"][0].startswith(
        "rate-limited: matches while under the rate (3/minute, burst 5)"
    )
    assert result["over_limit"]["verdict"] == "drop"
    assert result["over_limit"]["rule"]["line"] == 2


def test_limit_text_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp 22 limit 3/minute\ndefault drop\n")
    out = run_text(capsys, "policy.wall", "tcp 192.0.2.9:40000 -> 192.0.2.1:22")

    assert "note:    rate-limited: matches while under the rate (3/minute)" in out
    assert "above the rate: drop by the default of chain input: policy.wall:2: default drop" in out


def test_address_match_checks_version():
    everything_v6 = AddressMatch((ipaddress.ip_network("::/0"),))

    assert address_matches(everything_v6, ipaddress.ip_address("2001:db8::1"))
    assert not address_matches(everything_v6, ipaddress.ip_address("192.0.2.1"))
    assert address_matches(None, ipaddress.ip_address("192.0.2.1"))


def test_interface_wildcard_semantics():
    assert interface_matches("eth+", "eth0")
    assert interface_matches("eth+", "eth")
    assert not interface_matches("eth+", "et")
    assert not interface_matches("eth0", "eth0.5")
    assert not interface_matches("eth0", None)


# Packet syntax


def test_packet_canonical_text():
    packet = parse_packet("udp [2001:db8::5]:5353->[2001:db8::1]:53 fwd on eth1 out-on eth0")

    assert str(packet) == "udp new [2001:db8::5]:5353 -> [2001:db8::1]:53 fwd on eth1 out-on eth0"
    assert packet.family == "ipv6"
    assert packet.chain == "forward"
    assert (packet.in_interface, packet.out_interface) == ("eth1", "eth0")


def test_packet_out_interface_from_on():
    packet = parse_packet("tcp 192.0.2.1:40000 -> 203.0.113.1:443 out on eth0")

    assert (packet.in_interface, packet.out_interface) == (None, "eth0")


def test_packet_icmp_type_by_number():
    packet = parse_packet("icmp 8 192.0.2.9 -> 192.0.2.1")

    assert packet.icmp_type == 8
    assert packet.icmp_type_name == "echo-request"
    assert str(packet) == "icmp echo-request new 192.0.2.9 -> 192.0.2.1 in"


def test_packet_words_in_any_order():
    first = parse_packet("icmp established echo-reply 192.0.2.9 -> 192.0.2.1 on eth0 in")
    second = parse_packet("icmp echo-reply established 192.0.2.9 -> 192.0.2.1 in on eth0")

    assert first == second


def test_packet_text_joins_arrow_groups():
    text = packet_text(["tcp", "192.0.2.9:40000"], [["192.0.2.1:22", "in"]])

    assert text == "tcp 192.0.2.9:40000 -> 192.0.2.1:22 in"


# (packet, column, message, hint part or None)
PACKET_ERRORS = {
    "missing arrow": (
        "tcp 192.0.2.9:40000 192.0.2.1:22",
        21,
        "expected '->' between the source and the destination, found '192.0.2.1:22'",
        "SOURCE -> DESTINATION",
    ),
    "arrow at the end": (
        "tcp 192.0.2.9:40000",
        20,
        "missing '->' and the destination address",
        None,
    ),
    "bad address": (
        "tcp 192.0.2.300:40000 -> 192.0.2.1:22",
        5,
        "invalid address '192.0.2.300'",
        None,
    ),
    "bad ipv6 address": (
        "udp [2001:db8:::1]:53 -> [2001:db8::1]:53",
        6,
        "invalid address '2001:db8:::1'",
        None,
    ),
    "network as address": (
        "tcp 192.0.2.0/24:1 -> 192.0.2.1:22",
        5,
        "'192.0.2.0/24' is a network",
        None,
    ),
    "port out of range": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:70000",
        34,
        "port 70000 is out of range",
        "ports are 1 to 65535",
    ),
    "port zero": ("udp 192.0.2.9:0 -> 192.0.2.1:53", 15, "port 0 is out of range", None),
    "port not a number": (
        "tcp 192.0.2.9:ssh -> 192.0.2.1:22",
        15,
        "invalid source port 'ssh'",
        None,
    ),
    "missing port": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1",
        24,
        "missing destination port: a tcp packet has a port on both ends",
        "write 192.0.2.1:PORT",
    ),
    "ipv6 port without brackets": (
        "tcp [2001:db8::5]:40000 -> 2001:db8::1:22",
        28,
        "missing destination port",
        "brackets",
    ),
    "port with icmp": (
        "icmp echo-request 192.0.2.9:53 -> 192.0.2.1",
        28,
        "icmp packets have no ports",
        "remove ':53'",
    ),
    "unknown icmp type": (
        "icmp echo-requst 192.0.2.9 -> 192.0.2.1",
        6,
        "unknown icmp type 'echo-requst'",
        "did you mean 'echo-request'?",
    ),
    "icmpv6 name for icmp": (
        "icmp neighbor-solicitation 192.0.2.9 -> 192.0.2.1",
        6,
        "unknown icmp type 'neighbor-solicitation'",
        "'neighbor-solicitation' is an icmpv6 type; write 'icmpv6 neighbor-solicitation'",
    ),
    "missing icmp type": (
        "icmp 192.0.2.9 -> 192.0.2.1",
        1,
        "missing icmp type after 'icmp'",
        "echo-request",
    ),
    "icmp with ipv6": (
        "icmp echo-request 2001:db8::9 -> 2001:db8::1",
        19,
        "icmp is the IPv4 protocol, but the source address is IPv6",
        "icmpv6",
    ),
    "ipv4 source ipv6 destination": (
        "tcp 192.0.2.9:40000 -> [2001:db8::1]:22",
        24,
        "the source address is IPv4 but the destination address is IPv6",
        None,
    ),
    "unknown direction": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 inbound on eth0",
        37,
        "unknown direction 'inbound'; expected in, out or fwd",
        None,
    ),
    "second arrow": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 -> 203.0.113.1:22",
        37,
        "unexpected second '->'",
        None,
    ),
    "direction twice": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 in fwd",
        40,
        "the direction is given twice",
        None,
    ),
    "trailing garbage": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 in on eth0 please",
        48,
        "unexpected 'please' after the packet",
        None,
    ),
    "out-on without fwd": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 in out-on eth0",
        40,
        "'out-on' applies only to fwd packets, not to in packets",
        None,
    ),
    "interface wildcard": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 on eth+",
        40,
        "'eth+' is a wildcard, but a packet passes one interface",
        None,
    ),
    "missing interface": (
        "tcp 192.0.2.9:40000 -> 192.0.2.1:22 on",
        39,
        "missing interface name after 'on'",
        None,
    ),
    "unknown protocol": ("sctp 192.0.2.9:1 -> 192.0.2.1:2", 1, "unknown protocol 'sctp'", None),
    "missing protocol": ("192.0.2.9:1 -> 192.0.2.1:2", 1, "missing protocol", None),
    "unknown state": (
        "tcp establised 192.0.2.9:1 -> 192.0.2.1:2",
        5,
        "unknown connection state 'establised'",
        "did you mean 'established'?",
    ),
    "empty packet": ("   ", 1, "the packet is empty", None),
}


@pytest.mark.parametrize("name", list(PACKET_ERRORS))
def test_packet_error(name, capsys, monkeypatch):
    packet, column, message, hint = PACKET_ERRORS[name]
    monkeypatch.chdir(ROOT)
    status = main(["explain", SAMPLE, packet])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()

    assert status == 1
    assert captured.out == ""
    assert lines[0].startswith(f"<packet>:1:{column}: error: {message}")
    if packet.strip():
        assert lines[1] == f"    {packet}"
        assert lines[2].index("^") == 4 + column - 1
    if hint is not None:
        assert any(line.startswith("hint: ") and hint in line for line in lines)


def test_packet_error_columns_span_the_word():
    with pytest.raises(PolicyError) as caught:
        parse_packet("tcp 192.0.2.9:40000 -> 192.0.2.1:22 on eth0 please")
    source = caught.value.diagnostics[0].source

    assert (source.column, source.end_column) == (45, 51)


def test_packet_stored_in_source_cache():
    sources = SourceCache()
    with pytest.raises(PolicyError):
        parse_packet("tcp 192.0.2.9:1 -> 192.0.2.1:2 sideways", sources)

    assert sources.line("<packet>", 1) == "tcp 192.0.2.9:1 -> 192.0.2.1:2 sideways"


def test_packet_checked_before_policy(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = main(["explain", "absent.wall", "tcp 192.0.2.9:1 -> 192.0.2.1:99999"])
    err = capsys.readouterr().err

    assert status == 1
    assert err.startswith("<packet>:1:30: error: port 99999 is out of range")


# Command line


def test_packet_as_several_arguments(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_json(capsys, SAMPLE, "tcp", CLIENT, "->", f"{SERVER}:993", "in", "on", "eth0")

    assert result["packet"]["text"] == f"tcp new {CLIENT} -> {SERVER}:993 in on eth0"
    assert result["rule"]["line"] == 15


def test_several_arguments_error_column(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status = main(["explain", SAMPLE, "tcp", CLIENT, "->", f"{SERVER}:99999"])
    lines = capsys.readouterr().err.splitlines()

    assert status == 1
    assert lines[0] == "<packet>:1:38: error: port 99999 is out of range"
    assert lines[1] == f"    tcp {CLIENT} -> {SERVER}:99999"


def test_json_fields(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run_json(capsys, SAMPLE, f"tcp {CLIENT} -> {SERVER}:993 in on eth0")

    assert list(result) == [
        "format",
        "version",
        "policy",
        "policy_file",
        "packet",
        "chain",
        "verdict",
        "reject_with",
        "default",
        "builtin_default",
        "rule",
        "default_source",
        "logged",
        "log_prefix",
        "notes",
        "over_limit",
    ]
    assert result["format"] == "polywall-explain"
    assert result["version"] == 1
    assert result["policy"] == "safesquid"
    assert result["rule"]["text"].startswith("allow tcp ssh, smtp")
    assert result["rule"]["column"] == 1
    assert result["packet"] == {
        "text": f"tcp new {CLIENT} -> {SERVER}:993 in on eth0",
        "protocol": "tcp",
        "family": "ipv4",
        "icmp_type": None,
        "icmp_type_name": None,
        "state": "new",
        "source": "198.51.100.5",
        "source_port": 40000,
        "destination": SERVER,
        "destination_port": 993,
        "direction": "in",
        "chain": "input",
        "in_interface": "eth0",
        "out_interface": None,
    }


def test_json_is_deterministic(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    packet = "tcp 127.0.0.1:40000 -> 127.0.0.1:12345 in"
    assert main(["explain", SAMPLE, packet, "--json"]) == 0
    first = capsys.readouterr().out
    assert main(["explain", SAMPLE, packet, "--json"]) == 0
    second = capsys.readouterr().out

    assert first == second


def test_process_exit_status():
    command = [sys.executable, "-m", "compiler.cli", "explain", SAMPLE]
    dropped = subprocess.run(
        [*command, f"tcp {CLIENT} -> {SERVER}:994"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    malformed = subprocess.run(
        [*command, f"tcp {CLIENT} => {SERVER}:994"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert dropped.returncode == 0
    assert dropped.stdout.startswith("verdict: drop")
    assert malformed.returncode == 1
    assert malformed.stderr.startswith("<packet>:1:24: error: expected '->'")
    assert "Traceback" not in malformed.stderr


# The evaluator against the kernel


# Kernel outcomes that each verdict gives a client probe (compiler.netlab).
OUTCOMES = {"accept": "open", "drop": "dropped", "reject": "rejected"}


def kernel_policy(extra4: str, extra6: str, client4: str, client6: str) -> str:
    """Return a policy that uses most rule fields, for the addresses of a lab."""
    return f"""\
policy evalcheck
allow icmpv6
allow tcp 2000-2010
reject tcp 2011
drop tcp 2012 on pwb+
allow tcp 2012
allow tcp 2013 on eth+
reject tcp 2014 with tcp-reset
allow tcp 2015 to !{extra4}
drop tcp 2016 from {client6}
allow tcp 2016 from {client4}, {client6}
allow tcp 2017 to {extra6}
allow udp 3000, 3002
reject udp 3001
drop icmp
default reject
"""


@pytest.mark.root
@pytest.mark.parametrize("target", ["nftables", "iptables"])
def test_evaluator_matches_kernel(target, tmp_path, need_namespaces):
    from compiler.netlab import Lab, Probe

    need_tool("nft" if target == "nftables" else "iptables-restore")
    tcp_ports = list(range(1999, 2018))
    udp_ports = list(range(2999, 3005))
    extra4, extra6 = "10.250.0.1", "fd00:250::1"
    with Lab() as lab:
        firewall = lab.namespace("fw")
        client = lab.namespace("client")
        link = lab.link(client, firewall)
        # The extra addresses sit on the firewall's loopback in their own
        # prefix, so that the link's addresses stay the ones the kernel picks
        # as the source of replies.
        lab.add_address(firewall, "lo", f"{extra4}/32")
        lab.add_address(firewall, "lo", f"{extra6}/128")
        lab.run(client, ["ip", "route", "add", f"{extra4}/32", "via", link.b4])
        lab.run(client, ["ip", "-6", "route", "add", f"{extra6}/128", "via", link.b6])
        # The kernel rate-limits ICMP errors, which would turn rejects into
        # timeouts; these settings are per namespace.
        lab.run(
            firewall,
            [
                "sysctl",
                "-qw",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
                "net.ipv4.icmp_msgs_burst=10000",
            ],
        )
        lab.serve(firewall, tcp=tcp_ports, udp=udp_ports)

        path = write_policy(tmp_path, kernel_policy(extra4, extra6, link.a4, link.a6))
        files = export(path, target)
        if target == "nftables":
            lab.run(firewall, ["nft", "-f", "-"], input=files["ruleset.nft"])
        else:
            lab.run(firewall, ["iptables-restore"], input=files["rules.v4"])
            lab.run(firewall, ["ip6tables-restore"], input=files["rules.v6"])

        # The listener replies to UDP from the address the kernel picks, not
        # the one the client sent to, so UDP goes only to the link's addresses.
        probes = []
        for address in (link.b4, extra4, link.b6, extra6):
            probes += [Probe("tcp", address, port) for port in tcp_ports]
        for address in (link.b4, link.b6):
            probes += [Probe("udp", address, port) for port in udp_ports]
        # Seen on Linux 6.18: a TCP connect over IPv6 often ignores the first
        # ICMPv6 port-unreachable and fails only on the SYN retransmitted
        # after 1 s, so a reject needs a timeout above that.
        outcomes = lab.probe(client, probes, timeout=3.0)
        # The echo probe takes any destination-unreachable on its raw socket
        # for its own, so it runs apart from the probes that get rejects.
        echoes = [Probe("icmp", address) for address in (link.b4, extra4, link.b6, extra6)]
        outcomes.update(lab.probe(client, echoes))

    graph = load_policy(str(path))
    wrong = {}
    for probe, outcome in outcomes.items():
        packet = parse_packet(_probe_packet(probe, link.a4, link.a6, link.b_if))
        expected = OUTCOMES[evaluate(graph, packet).verdict]
        if outcome != expected:
            wrong[str(probe)] = (outcome, expected)

    assert wrong == {}, "\n".join(
        f"{k}: kernel {v[0]}, evaluator {v[1]}" for k, v in sorted(wrong.items())
    )
    assert set(outcomes.values()) == {"open", "dropped", "rejected"}


def _probe_packet(probe, client4: str, client6: str, interface: str) -> str:
    """Write a netlab probe as packet text; any client port will do, as the policy names none."""
    v6 = ":" in probe.address
    client = client6 if v6 else client4
    if probe.protocol == "icmp":
        protocol = "icmpv6" if v6 else "icmp"
        return f"{protocol} echo-request {client} -> {probe.address} in on {interface}"
    if v6:
        return (
            f"{probe.protocol} [{client}]:40000 -> [{probe.address}]:{probe.port} in on {interface}"
        )
    return f"{probe.protocol} {client}:40000 -> {probe.address}:{probe.port} in on {interface}"
