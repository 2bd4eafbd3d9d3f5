"""Features the vendor targets cannot express fail closed: one case per refused feature and target.

Each case compiles a policy through the command line and expects exit
status 1 and an error ``FILE:LINE:COL: error: TARGET cannot express ...``
pointing at the refused rule.
"""

from __future__ import annotations

import pytest

from compiler.cli import main
from tests.helpers import write_policy

# Feature -> (policy lines after "allow tcp 80", phrase of the error, line of the error).
COMMON_REFUSALS = {
    "log prefix": ('allow tcp 22 log "ssh "', "a per-rule log prefix", 2),
    "rate limit": ("allow icmp limit 5/second", "arbitrary rate limits", 2),
    "negated address": ("allow tcp 22 from !192.0.2.0/24", "negated addresses", 2),
    "interface": ("allow tcp 22 on eth0", "an incoming interface match ('eth0')", 2),
    "outgoing interface": (
        "allow tcp 22 out-on eth1 fwd",
        "an outgoing interface match ('eth1')",
        2,
    ),
    "interface wildcard": ("allow tcp 22 on eth+", "interface wildcards", 2),
    "invalid state": ("drop state invalid", "connection tracking states (invalid)", 2),
    "in and fwd defaults": (
        "default drop in\ndefault allow fwd",
        "different defaults for in and fwd",
        3,
    ),
}
CISCO_REFUSALS = {
    "reject": ("reject tcp 23", "reject rules", 2),
    "default reject": ("default reject", "reject as a default", 2),
}
STATEFUL_REFUSALS = {
    "drop established": ("drop established", "connection tracking states (established,related)", 2),
}
IOS_REFUSALS = {
    "new state": ("allow tcp 22 state new", "connection tracking states (new)", 2),
    "udp established": (
        "allow udp established",
        "connection tracking states (established,related)",
        2,
    ),
}
SRX_REFUSALS = {
    "reject type": (
        "reject udp 69 with admin-prohibited",
        "a chosen reject type (with admin-prohibited)",
        2,
    ),
}
TABLES = {
    "cisco-asa": (COMMON_REFUSALS, CISCO_REFUSALS, STATEFUL_REFUSALS),
    "cisco-ios": (COMMON_REFUSALS, CISCO_REFUSALS, IOS_REFUSALS),
    "juniper-srx": (COMMON_REFUSALS, STATEFUL_REFUSALS, SRX_REFUSALS),
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
    status = main(["compile", str(path), "--target", target])
    error = capsys.readouterr().err
    assert status == 1
    errors = [e for e in error.splitlines() if f"error: {target} cannot express" in e]
    matching = [e for e in errors if phrase in e]
    assert matching, error
    assert matching[0].startswith(f"{path}:{line}:"), error


def test_ios_accepts_tcp_established(tmp_path, capsys):
    path = write_policy(tmp_path, "allow tcp established\nallow established\n")
    assert main(["compile", str(path), "--target", "cisco-ios"]) == 0
    assert "permit tcp any any established" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["cisco-asa", "juniper-srx"])
def test_stateful_targets_skip_established(tmp_path, capsys, target):
    path = write_policy(
        tmp_path, "allow established in,out\nallow on lo in,out\nallow tcp 22 state new\n"
    )
    assert main(["compile", str(path), "--target", target]) == 0
    out = capsys.readouterr().out
    assert out.count("left out: the device passes return traffic") == 2
    assert out.count("left out: loopback traffic never crosses a perimeter filter") == 2


def test_srx_accepts_reset_on_tcp(tmp_path, capsys):
    path = write_policy(tmp_path, "reject tcp 25 with tcp-reset\n")
    assert main(["compile", str(path), "--target", "juniper-srx"]) == 0
    assert "then reject" in capsys.readouterr().out
