"""User mistakes get file:line:col, the source line with a caret, a hint and exit status 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from compiler.cli import main
from tests.helpers import write_policy

# (policy text, expected "line:col", message part, hint part or None)
CASES = {
    "syntax error": ("allow tcp 22 to\n", "1:16", "unexpected end of line; expected", None),
    "foreign keyword": ("allow tcp 22 input\n", "1:14", "unexpected 'input'", "'in', 'out' and 'fwd'"),
    "duplicate direction": ("allow tcp 22 in fwd\n", "1:17", "'direction' is given twice", "merge"),
    "unknown service": ("allow tcp imapz\n", "1:11", "unknown service 'imapz'", "did you mean 'imaps'?"),
    "unknown host group": (
        "hosts admins = 192.0.2.0/24\nallow ssh from admin\n",
        "2:16",
        "unknown host group 'admin'",
        "did you mean 'admins'?",
    ),
    "bare port": ("allow 8080\n", "1:7", "a bare port needs a protocol: 8080", "write 'tcp 8080' or 'udp 8080'"),
    "port out of range": ("allow tcp 70000\n", "1:11", "port 70000 is out of range", "ports are 1 to 65535"),
    "port zero": ("allow udp 0\n", "1:11", "port 0 is out of range", None),
    "backwards range": ("allow tcp 20-10\n", "1:11", "port range 20-10 runs backwards", "write 10-20"),
    "invalid address": ("allow from 192.0.2.300\n", "1:12", "invalid address '192.0.2.300'", None),
    "invalid ipv6 address": ("allow from 2001:db8:::1\n", "1:12", "invalid address '2001:db8:::1'", None),
    "host bits set": ("allow from 192.0.2.1/24\n", "1:12", "has host bits set", "did you mean 192.0.2.0/24?"),
    "port with icmp": ("allow icmp from any port 53\n", "1:26", "a port on a rule with protocol icmp", None),
    "icmp type unknown": ("allow icmp echo-requst\n", "1:12", "unknown icmp type 'echo-requst'", "echo-request"),
    "no family left": (
        "allow from 192.0.2.0/24 to 2001:db8::/32\n",
        "1:1",
        "matches no address family",
        "split it",
    ),
    "icmp with ipv6 address": ("allow icmp from 2001:db8::1\n", "1:1", "matches no address family", None),
    "service lacks protocol": ("allow udp ssh\n", "1:11", "service 'ssh' has no udp port", None),
    "reject type on allow": ("allow tcp 22 with tcp-reset\n", "1:19", "applies only to reject rules", None),
    "tcp reset on udp": ("reject udp 53 with tcp-reset\n", "1:20", "needs protocol tcp", None),
    "duplicate clause": ("allow tcp 22 from any from any\n", "1:23", "'from' is given twice", None),
    "out-on outside fwd": ("allow tcp 22 out-on eth0\n", "1:21", "'out-on' applies only to fwd rules", None),
    "group used as service": ("hosts web = 192.0.2.1\nallow web\n", "2:7", "unknown service 'web'", "host group"),
    "accept is not an action": ("default accept\n", "1:9", "unexpected 'accept'", "'allow'"),
    "duplicate default": ("default drop\ndefault allow in\n", "2:15", "default for 'in' is already set", None),
    "any mixed with address": ("allow from any, 192.0.2.1\n", "1:17", "'any' cannot be combined", None),
    "negation in list": ("allow from !192.0.2.1, 192.0.2.2\n", "1:12", "negated address must stand alone", None),
    "single quotes": ("allow tcp 22 comment 'hi'\n", "1:22", "unexpected character", "double quotes"),
    "icmp in service definition": (
        "service pings = icmp echo-request\nallow pings\n",
        "1:22",
        "a service definition takes tcp and udp ports, not icmp types",
        "allow icmp echo-request",
    ),
    "service cycle": ("service a = b\nservice b = a\nallow a\n", "1:9", "cycle", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_policy_error(name, tmp_path, capsys, monkeypatch):
    text, position, message, hint = CASES[name]
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, text)
    status = main(["compile", "policy.wall", "-t", "nftables", "-o", "out"])
    err = capsys.readouterr().err
    assert status == 1
    first = err.splitlines()[0]
    assert first.startswith(f"policy.wall:{position}: error: "), err
    assert message in err
    if hint is not None:
        assert f"hint: {hint}" in err or hint in err
    assert "^" in err
    assert not (tmp_path / "out").exists()


def test_caret_under_offending_text(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp smtp, imapz in\n")
    main(["check", "policy.wall"])
    lines = capsys.readouterr().err.splitlines()
    assert lines[1] == "    allow tcp smtp, imapz in"
    assert lines[2] == "                    ^^^^^"


def test_every_error_reported_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp imapz\nallow tcp 99999\nallow from 192.0.2.999\n")
    assert main(["check", "policy.wall"]) == 1
    err = capsys.readouterr().err
    assert "policy.wall:1:11: error: unknown service" in err
    assert "policy.wall:2:11: error: port 99999" in err
    assert "policy.wall:3:12: error: invalid address" in err


def test_missing_include(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, 'allow tcp 22\ninclude "nowhere.wall"\n')
    assert main(["check", "policy.wall"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("policy.wall:2:9: error: included file not found")
    assert "nowhere.wall" in err


def test_include_cycle(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, 'include "b.wall"\n', "a.wall")
    write_policy(tmp_path, 'allow tcp 22\ninclude "a.wall"\n', "b.wall")
    assert main(["check", "a.wall"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("b.wall:2:9: error: include cycle: a.wall -> b.wall -> a.wall")
    assert "included from a.wall:1" in err


def test_error_inside_include_names_chain(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    write_policy(tmp_path, 'include "sub/rules.wall"\n', "main.wall")
    write_policy(tmp_path / "sub", "allow tcp imapz\n", "rules.wall")
    assert main(["check", "main.wall"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sub/rules.wall:1:11: error: unknown service 'imapz'")
    assert "included from main.wall:1" in err


def test_missing_policy_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["check", "absent.wall"]) == 1
    assert "policy file not found: absent.wall" in capsys.readouterr().err


def test_unknown_target_is_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp 22\n")
    assert main(["compile", "policy.wall", "-t", "iptablez"]) == 2
    assert "unknown target 'iptablez'" in capsys.readouterr().err


def test_multi_file_target_needs_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp 22\n")
    assert main(["compile", "policy.wall", "-t", "iptables"]) == 2
    assert "give --output DIR" in capsys.readouterr().err


def test_process_exit_status_and_no_traceback(tmp_path):
    write_policy(tmp_path, "allow tcp imapz\n")
    result = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", "policy.wall", "-t", "iptables", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("policy.wall:1:11: error: unknown service 'imapz'")
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_iptables_log_prefix_limit(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, 'allow tcp 22\ndrop log "' + "x" * 30 + '"\n')
    assert main(["compile", "policy.wall", "-t", "iptables", "-o", "out"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("policy.wall:2:1: error: iptables cannot express a log prefix longer than 29")
    assert not (tmp_path / "out").exists()
