"""Features PAN-OS, FortiGate and pf cannot express fail closed: one case per feature and target.

Each case compiles a policy through the command line and expects exit
status 1 and an error ``FILE:LINE:COL: error: TARGET cannot express ...``
pointing at the refused rule. The target blocks (settings) are checked at
the end.
"""

from __future__ import annotations

import pytest

from compiler.api import load_policy_text
from compiler.cli import main
from compiler.plugins import exporters
from tests.helpers import write_policy
from tests.test_vendor_capabilities import COMMON_REFUSALS, STATEFUL_REFUSALS

PAN_REFUSALS = {
    "icmp type": ("allow icmp echo-request", "ICMP types", 2),
    "default reject": ("default reject", "reject as a default", 2),
    "plain reject": ("reject udp 69", "this reject (the default reply)", 2),
    "port unreachable": (
        "reject udp 69 with port-unreachable",
        "this reject (with port-unreachable)",
        2,
    ),
    "ipv4 compatible": ("allow tcp 22 from ::/8", "the IPv6 network ::/8", 2),
}
FORTI_REFUSALS = {
    "reject type": (
        "reject udp 69 with admin-prohibited",
        "a chosen reject type (with admin-prohibited)",
        2,
    ),
    "reserved group": ("hosts all = 192.0.2.1\nallow tcp 22 to all", "host group 'all'", 2),
}
PF_REFUSALS = {
    "log prefix": ('allow tcp 22 log "ssh "', "a per-rule log prefix", 2),
    "burst": ("allow icmp limit 5/second burst 10", "a rate limit burst", 2),
    "interface wildcard": ("allow tcp 22 on eth+", "interface wildcards", 2),
    "interface name": ("allow tcp 22 on eth0@x", "interface name 'eth0@x'", 2),
    "invalid state": ("drop state invalid", "connection tracking states (invalid)", 2),
    "drop established": (
        "drop established",
        "connection tracking states (established,related)",
        2,
    ),
    "table name": (
        "hosts a-b = 192.0.2.1\nhosts a_b = 192.0.2.2\nallow from a-b, a_b",
        "host group 'a_b'",
        3,
    ),
}
TABLES = {
    "paloalto": (COMMON_REFUSALS, STATEFUL_REFUSALS, PAN_REFUSALS),
    "fortigate": (COMMON_REFUSALS, STATEFUL_REFUSALS, FORTI_REFUSALS),
    "pf": (PF_REFUSALS,),
}
CASES = [
    pytest.param(target, *case, id=f"{target}-{feature}")
    for target, tables in TABLES.items()
    for table in tables
    for feature, case in table.items()
]


@pytest.mark.parametrize("target, rule, phrase, line", CASES)
def test_refused_feature(tmp_path, capsys, target, rule, phrase, line):
    path = write_policy(tmp_path, f"allow tcp 80\n{rule}\n")
    status = main(["compile", str(path), "--target", target, "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert status == 1
    errors = [e for e in error.splitlines() if f"error: {target} cannot express" in e]
    matching = [e for e in errors if phrase in e]
    assert matching, error
    assert matching[0].startswith(f"{path}:{line}:"), error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["paloalto", "fortigate"])
def test_stateful_targets_skip_established(tmp_path, capsys, target):
    path = write_policy(tmp_path, "allow established in,out\nallow on lo in,out\nallow tcp 22\n")
    assert main(["compile", str(path), "--target", target, "--output", str(tmp_path)]) == 0
    text = "".join(p.read_text() for p in sorted((tmp_path / target).iterdir()))
    assert text.count("left out: the device passes return traffic") >= 2
    assert text.count("left out: loopback traffic never crosses a perimeter filter") >= 2


def test_pf_accepts_what_perimeter_targets_refuse(tmp_path, capsys):
    text = (
        "allow icmp echo-request limit 5/second\ndrop from !192.0.2.0/24 on eth0\n"
        "reject udp 69 with port-unreachable\nallow tcp 22 on eth1 out-on eth0 fwd\n"
        "default reject in\n"
    )
    assert main(["compile", str(write_policy(tmp_path, text)), "--target", "pf"]) == 0
    out = capsys.readouterr().out
    assert "max-pkt-rate 5/1" in out
    assert "from ! 192.0.2.0/24" in out
    assert "block return-icmp(3, 4) in quick proto udp" in out
    assert "received-on eth1" in out


# Settings


@pytest.mark.parametrize(
    "target, typo, suggestion",
    [
        ("paloalto", "outside-zon", "outside-zone"),
        ("fortigate", "outside-interfce", "outside-interface"),
        ("fortigate", "first-policy", "first-policy-id"),
    ],
)
def test_unknown_key_suggests(target, typo, suggestion):
    graph = load_policy_text(f"target {target} {{\n  {typo} = x\n}}\n")
    (problem,) = exporters()[target].check(graph)
    assert problem.message == f"unknown setting '{typo}' for target {target}"
    assert problem.hint == f"did you mean '{suggestion}'?"
    assert (problem.source.line, problem.source.column) == (2, 3)


def test_pf_has_no_settings():
    graph = load_policy_text("target pf {\n  skip = lo\n}\n")
    (problem,) = exporters()["pf"].check(graph)
    assert problem.message == "unknown setting 'skip' for target pf"


@pytest.mark.parametrize(
    "target, key, value",
    [
        ("paloalto", "outside-zone", '"a b"'),
        ("paloalto", "vsys", "shared"),
        ("paloalto", "inside-zone", '"' + "z" * 32 + '"'),
        ("fortigate", "outside-interface", '"port1 end"'),
        ("fortigate", "first-policy-id", "0"),
        ("fortigate", "first-policy-id", "1234567890"),
    ],
)
def test_invalid_value_is_positioned(target, key, value):
    graph = load_policy_text(f"target {target} {{ {key} = {value} }}\n")
    (problem,) = exporters()[target].check(graph)
    assert problem.message.startswith("invalid value")
    assert key in problem.message
    assert problem.source.column == len(f"target {target} {{ {key} = ") + 1


@pytest.mark.parametrize(
    "target, text",
    [
        ("paloalto", "outside-zone = trust"),
        ("fortigate", "outside-interface = port2"),
    ],
)
def test_same_name_twice_is_an_error(target, text):
    graph = load_policy_text(f"target {target} {{ {text} }}\n")
    (problem,) = exporters()[target].check(graph)
    assert "must differ" in problem.message
    assert problem.source.line == 1
