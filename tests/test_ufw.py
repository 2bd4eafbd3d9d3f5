"""The ufw exporter, checked against the real ufw 0.36 inside private namespaces.

ufw keeps its state in /etc/ufw, /lib/ufw and /etc/default/ufw. Every test
that runs ufw copies them to a temporary folder and binds the copies over the
real paths inside a new mount namespace, within a network namespace of its
own, so the host's ufw and firewall stay untouched.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import capabilities
from compiler.api import load_policy
from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES
from compiler.cli import main
from compiler.netlab import Lab, Probe
from compiler.plugins import exporters
from exporters.ufw import (
    PARSER_WORDS,
    STOCK_ALLOWANCES,
    UfwExporter,
    _comment_problem,
    _interface_problem,
)
from tests.conftest import ROOT, SAMPLES, need_tool, require
from tests.helpers import write_policy

EXPORTER = UfwExporter()
SAMPLE = SAMPLES / "safesquid-outlook.wall"
STOCK_RULES = Path("/usr/share/ufw/iptables")


def compile_text(tmp_path: Path, text: str, name: str = "policy.wall"):
    """Compile policy text for ufw and return the graph and ufw.sh, failing on any error."""
    path = write_policy(tmp_path, text, name)
    graph = load_policy(str(path))
    problems = capabilities.check(graph, "ufw", frozenset(EXPORTER.capabilities))
    problems += EXPORTER.check(graph)
    assert not problems, [f"{p.source}: {p.message}" for p in problems]
    return graph, EXPORTER.render(graph)["ufw.sh"]


def unwrapped(script: str) -> str:
    """Join the wrapped warning lines at the top of ufw.sh back into one line each."""
    return script.replace("\n#     ", " ")


class UfwState:
    """Copies of ufw's state folders, bound over the real paths inside a mount namespace."""

    def __init__(self, folder: Path):
        need_tool("ufw")
        need_tool("unshare")
        self.folder = folder
        self.etc = folder / "etc-ufw"
        self.lib = folder / "lib-ufw"
        self.default = folder / "default-ufw"
        shutil.copytree("/etc/ufw", self.etc, symlinks=True)
        # On Debian 12 /lib is a link to /usr/lib, and a bind mount needs the real path.
        self.lib_path = os.path.realpath("/lib/ufw")
        shutil.copytree(self.lib_path, self.lib, symlinks=True)
        shutil.copy2("/etc/default/ufw", self.default)
        empty = folder / "sysctl-empty.conf"
        empty.write_text("")
        text = self.default.read_text()
        text = re.sub(r"(?m)^IPT_SYSCTL=.*$", f"IPT_SYSCTL={empty}", text)
        self.default.write_text(text)

    def run(self, lab: Lab, namespace: str, shell: str) -> subprocess.CompletedProcess:
        """Run shell text with the copies in place of ufw's state, inside a namespace."""
        script = self.folder / f"run-{len(list(self.folder.glob('run-*')))}.sh"
        script.write_text(shell)
        binds = [
            (self.etc, "/etc/ufw"),
            (self.lib, self.lib_path),
            (self.default, "/etc/default/ufw"),
        ]
        mounts = " && ".join(
            f"mount --bind {shlex.quote(str(a))} {shlex.quote(b)}" for a, b in binds
        )
        # TESTSTATE moves ufw's lock file from /run into the copied /lib/ufw.
        command = (
            f"mount --make-rprivate / && {mounts} && TESTSTATE=1 sh {shlex.quote(str(script))}"
        )
        return lab.run(namespace, ["unshare", "-m", "sh", "-c", command], check=False, timeout=180)

    def load(self, lab: Lab, namespace: str, ufw_script: str) -> subprocess.CompletedProcess:
        """Run an exported ufw.sh and fail the test when it fails."""
        path = self.folder / "ufw.sh"
        path.write_text(ufw_script)
        completed = self.run(lab, namespace, f"sh {shlex.quote(str(path))}\n")
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed


def chain_rules(lab: Lab, namespace: str, tool: str, chain: str) -> list[str]:
    listed = lab.run(namespace, [tool, "-S", chain]).stdout
    return [line for line in listed.splitlines() if line.startswith("-A ")]


def tuple_comments(rules_file: Path) -> list[str]:
    text = rules_file.read_text()
    return [
        binascii.unhexlify(h).decode()
        for h in re.findall(r"^### tuple ###.* comment=(\S+)$", text, re.MULTILINE)
    ]


# The script under the real ufw

FEATURES = """\
policy features

hosts office = 10.9.0.0/24, fd00:9::/64
hosts everyone4 = 0.0.0.0/0

allow established
allow on lo
drop tcp 22 from 10.9.0.128/25
allow tcp ssh from office comment "SSH; $(reboot) `id` \\"x\\" \\\\ ü"
drop tcp 2222 from office
allow tcp 2222 from office
drop tcp 25 from everyone4
allow tcp 25
allow tcp 1000-1001, 1003, 1005, 1007, 1009, 1011, 1013, 1015, 1017, 1019, 1021, 1023,
    1025, 1027, 1029
allow udp 68 from any port 67
reject tcp 23 with tcp-reset
reject udp 69
allow tcp 80 on eth+ log
allow tcp 443 out
allow tcp 8080 on veth0 out-on veth1 fwd comment "web to the lab"

default drop in
default reject fwd
"""

FEATURES_INPUT4 = [
    "-A ufw-user-input -i lo -j ACCEPT",
    "-A ufw-user-input -s 10.9.0.128/25 -p tcp -m tcp --dport 22 -j DROP",
    "-A ufw-user-input -s 10.9.0.0/24 -p tcp -m tcp --dport 22 -j ACCEPT",
    "-A ufw-user-input -s 10.9.0.0/24 -p tcp -m tcp --dport 2222 -j DROP",
    "-A ufw-user-input -p tcp -m tcp --dport 25 -j DROP",
    (
        "-A ufw-user-input -p tcp -m multiport --dports "
        "1000:1001,1003,1005,1007,1009,1011,1013,1015,1017,1019,1021,1023,1025,1027 -j ACCEPT"
    ),
    "-A ufw-user-input -p tcp -m tcp --dport 1029 -j ACCEPT",
    "-A ufw-user-input -p udp -m udp --sport 67 --dport 68 -j ACCEPT",
    "-A ufw-user-input -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset",
    "-A ufw-user-input -p udp -m udp --dport 69 -j REJECT --reject-with icmp-port-unreachable",
    "-A ufw-user-input -i eth+ -p tcp -m tcp --dport 80 -j ufw-user-logging-input",
    "-A ufw-user-input -i eth+ -p tcp -m tcp --dport 80 -j ACCEPT",
]

FEATURES_INPUT6 = [
    "-A ufw6-user-input -i lo -j ACCEPT",
    "-A ufw6-user-input -s fd00:9::/64 -p tcp -m tcp --dport 22 -j ACCEPT",
    "-A ufw6-user-input -s fd00:9::/64 -p tcp -m tcp --dport 2222 -j DROP",
    "-A ufw6-user-input -p tcp -m tcp --dport 25 -j ACCEPT",
    (
        "-A ufw6-user-input -p tcp -m multiport --dports "
        "1000:1001,1003,1005,1007,1009,1011,1013,1015,1017,1019,1021,1023,1025,1027 -j ACCEPT"
    ),
    "-A ufw6-user-input -p tcp -m tcp --dport 1029 -j ACCEPT",
    "-A ufw6-user-input -p udp -m udp --sport 67 --dport 68 -j ACCEPT",
    "-A ufw6-user-input -p tcp -m tcp --dport 23 -j REJECT --reject-with tcp-reset",
    "-A ufw6-user-input -p udp -m udp --dport 69 -j REJECT --reject-with icmp6-port-unreachable",
    "-A ufw6-user-input -i eth+ -p tcp -m tcp --dport 80 -j ufw6-user-logging-input",
    "-A ufw6-user-input -i eth+ -p tcp -m tcp --dport 80 -j ACCEPT",
]


def test_script_loads_in_real_ufw(need_namespaces, tmp_path):
    _, script = compile_text(tmp_path, FEATURES)
    state = UfwState(tmp_path / "state")
    with Lab() as lab:
        ns = lab.namespace("ufw")
        state.load(lab, ns, script)
        input4 = chain_rules(lab, ns, "iptables", "ufw-user-input")
        input6 = chain_rules(lab, ns, "ip6tables", "ufw6-user-input")
        output4 = chain_rules(lab, ns, "iptables", "ufw-user-output")
        forward6 = chain_rules(lab, ns, "ip6tables", "ufw6-user-forward")
        logging4 = chain_rules(lab, ns, "iptables", "ufw-user-logging-input")
        reject4 = chain_rules(lab, ns, "iptables", "ufw-reject-forward")
        policies = lab.run(ns, ["iptables", "-S"]).stdout.splitlines()

    assert input4 == FEATURES_INPUT4
    assert input6 == FEATURES_INPUT6
    assert output4 == ["-A ufw-user-output -p tcp -m tcp --dport 443 -j ACCEPT"]
    assert forward6 == [
        "-A ufw6-user-forward -i veth0 -o veth1 -p tcp -m tcp --dport 8080 -j ACCEPT"
    ]
    assert "-P INPUT DROP" in policies
    assert "-P FORWARD DROP" in policies
    assert "-P OUTPUT ACCEPT" in policies
    assert reject4 == ["-A ufw-reject-forward -j REJECT --reject-with icmp-port-unreachable"]
    # With log level off ufw would put a RETURN first and log nothing.
    assert logging4[0].endswith('-j LOG --log-prefix "[UFW ALLOW] "')
    assert "-j RETURN" not in logging4[0]
    assert re.search(r"(?m)^ENABLED=yes$", (state.etc / "ufw.conf").read_text())
    comments = tuple_comments(state.etc / "user.rules")
    assert 'SSH; $(reboot) `id` "x" \\ ü' in comments
    assert "web to the lab" in comments


def test_duplicate_match_left_out(tmp_path):
    _, script = compile_text(tmp_path, FEATURES)
    commands = [line for line in script.splitlines() if line.startswith("ufw ")]
    assert "ufw deny from 10.9.0.0/24 to any port 2222 proto tcp" in commands
    assert not any("allow from 10.9.0.0/24 to any port 2222" in c for c in commands)
    assert "ufw deny from 0.0.0.0/0 to any port 25 proto tcp" in commands
    # The IPv4 half of 'allow tcp 25' matches the rule above, so only IPv6 is added.
    assert "ufw allow from ::/0 to any port 25 proto tcp" in commands


def test_port_list_split_at_ufw_limit(tmp_path):
    ports = ", ".join(str(p) for p in range(2001, 2033, 2))  # 16 single ports
    _, script = compile_text(tmp_path, f"allow tcp {ports}\nallow udp 3000-3010, 3020-3030\n")
    commands = [line for line in script.splitlines() if line.startswith("ufw allow")]
    first = ",".join(str(p) for p in range(2001, 2031, 2))
    assert commands == [
        f"ufw allow to any port {first} proto tcp",
        "ufw allow to any port 2031 proto tcp",
        "ufw allow to any port 3000:3010,3020:3030 proto udp",
    ]


def test_hostile_comment_quoted(tmp_path):
    policy = r'allow tcp 22 comment "a;b && c $(id) `id` \"q\" \\ | > *"' + "\n"
    _, script = compile_text(tmp_path, policy)
    line = next(line for line in script.splitlines() if line.startswith("ufw allow"))
    words = shlex.split(line)
    assert words[-2:] == ["comment", 'a;b && c $(id) `id` "q" \\ | > *']


# Real packets


def _sample_without_icmp() -> tuple[str, list[str]]:
    text = SAMPLE.read_text()
    lines = text.splitlines(keepends=True)
    removed = [line for line in lines if line.startswith(("allow icmp ", "allow icmpv6 "))]
    remaining = [line for line in lines if line not in removed]
    return "".join(remaining), removed


def test_sample_refused_for_icmp(capsys, tmp_path):
    status = main(["compile", str(SAMPLE), "-t", "ufw", "-o", str(tmp_path / "out")])
    errors = capsys.readouterr().err
    assert status == 1
    assert f"{SAMPLE}:11:1: error: ufw cannot express rules for protocol icmp:" in errors
    assert f"{SAMPLE}:23:1: error: ufw cannot express rules for protocol icmpv6:" in errors
    assert not (tmp_path / "out").exists()


def test_sample_probed_with_packets(need_namespaces, tmp_path):
    text, removed = _sample_without_icmp()
    assert len(removed) == 2
    graph, script = compile_text(tmp_path, text, "safesquid-outlook.wall")
    warnings = [w.message for w in EXPORTER.warnings(graph)]
    state = UfwState(tmp_path / "state")
    with Lab() as lab:
        fw = lab.namespace("fw")
        client = lab.namespace("client")
        link = lab.link(client, fw)
        state.load(lab, fw, script)
        lab.serve(fw, tcp=[22, 25, 8080, 3306, 8443], udp=[53, 953, 5000])
        probes = {}
        for address in (link.b4, link.b6):
            for port in (22, 25, 8080):
                probes[Probe("tcp", address, port)] = "open"
            for port in (3306, 8443):
                probes[Probe("tcp", address, port)] = "dropped"
            for port in (53, 953):
                probes[Probe("udp", address, port)] = "open"
            probes[Probe("udp", address, 5000)] = "dropped"
            # The policy without its ICMP rules drops echo requests, but ufw's
            # stock before.rules accepts them: the case the warnings report.
            probes[Probe("icmp", address)] = "open"
        outcomes = lab.probe(client, list(probes), timeout=1.0)
    for probe, expected in probes.items():
        assert outcomes[probe] == expected, str(probe)
    assert any("before.rules accepts ICMP types" in m and "echo-request" in m for m in warnings)
    assert any("before6.rules accepts ICMPv6 types" in m and "echo-request" in m for m in warnings)


def test_drop_before_allow_like_nftables(need_namespaces, tmp_path):
    need_tool("nft")
    state = UfwState(tmp_path / "state")
    with Lab() as lab:
        client = lab.namespace("client")
        fw_ufw = lab.namespace("ufw")
        fw_nft = lab.namespace("nft")
        links = [lab.link(client, fw_ufw), lab.link(client, fw_nft)]
        inner, outside = {}, {}
        networks = []
        for link in links:
            # The lab's client sits on .2 of a /24; .200 is in the upper /25, which is dropped.
            subnet = ipaddress.ip_interface(f"{link.a4}/24").network
            dropped = list(subnet.subnets(new_prefix=25))[1]
            networks.append(str(dropped))
            inner[link.b4] = str(subnet[200])
            outside[link.b4] = link.a4
            assert ipaddress.ip_address(link.a4) not in dropped
            lab.add_address(client, link.a_if, f"{inner[link.b4]}/24")
        text = (
            f"hosts inner = {', '.join(networks)}\n"
            "drop tcp 22 from inner\n"
            "allow tcp 22\n"
            "default drop\n"
        )
        graph, script = compile_text(tmp_path, text)
        state.load(lab, fw_ufw, script)
        ruleset = exporters()["nftables"].render(graph)["ruleset.nft"]
        lab.run(fw_nft, ["nft", "-f", "-"], input=ruleset)
        for fw in (fw_ufw, fw_nft):
            lab.serve(fw, tcp=[22, 23])
        expected = {}
        for link in links:
            expected[Probe("tcp", link.b4, 22, source=outside[link.b4])] = "open"
            expected[Probe("tcp", link.b4, 22, source=inner[link.b4])] = "dropped"
            expected[Probe("tcp", link.b4, 23, source=outside[link.b4])] = "dropped"
        outcomes = lab.probe(client, list(expected), timeout=1.0)
    for probe, outcome in expected.items():
        assert outcomes[probe] == outcome, str(probe)


# Comments and interfaces against ufw's own parser

ACCEPTED_COMMENTS = [
    "plain text",
    'double "quotes" and \\ backslash',
    "$(id) `id` ; && | > *",
    "delete",
    "comment",
    "to any port 9",
    "ends with in",
    "in on eth7",
    "-f",
    "ünïcødé ✓",
]
REJECTED_COMMENTS = ["it's", "log", "log-all", "in", "out", "--datadir=/tmp/x"]
REJECTED_ROUTE_COMMENTS = ["log in here", "in on eth8 out on eth9", "delete", "out there"]
ROUTE_INTERFACES = [
    [],
    ["in", "on", "eth0"],
    ["out", "on", "eth1"],
    ["in", "on", "eth0", "out", "on", "eth1"],
]


def _dry_run_cases() -> list[tuple[list[str] | None, str]]:
    """Return (route interface words or None, comment) pairs to run through ufw --dry-run."""
    cases: list[tuple[list[str] | None, str]] = []
    for comment in ACCEPTED_COMMENTS + REJECTED_COMMENTS:
        cases.append((None, comment))
    for interfaces in ROUTE_INTERFACES:
        for comment in ACCEPTED_COMMENTS + REJECTED_ROUTE_COMMENTS:
            cases.append((interfaces, comment))
    return cases


def _tuple_interfaces(interfaces: list[str]) -> str:
    names = dict(zip(interfaces[0::3], interfaces[2::3]))
    if not names:
        return "in"
    if len(names) == 2:
        return f"in_{names['in']}!out_{names['out']}"
    direction, name = next(iter(names.items()))
    return f"{direction}_{name}"


def _run_dry(
    lab: Lab, namespace: str, state: UfwState, commands: list[list[str]]
) -> list[tuple[int, str]]:
    """Run ufw commands one by one and return each exit status with its output."""
    shell = []
    for index, words in enumerate(commands):
        shell.append(f"echo '@@case {index}'")
        shell.append(" ".join(shlex.quote(w) for w in words) + " 2>&1")
        shell.append('echo "@@status $?"')
    output = state.run(lab, namespace, "\n".join(shell) + "\n").stdout
    blocks = re.split(r"^@@case (\d+)\n", output, flags=re.MULTILINE)[1:]
    results = {int(blocks[i]): blocks[i + 1] for i in range(0, len(blocks), 2)}
    assert len(results) == len(commands), output
    out = []
    for index in range(len(commands)):
        block = results[index]
        status = int(re.search(r"^@@status (\d+)$", block, re.MULTILINE).group(1))
        out.append((status, block))
    return out


def test_comment_limits_match_ufw_parser(need_namespaces, tmp_path):
    cases = _dry_run_cases()
    commands = []
    for interfaces, comment in cases:
        route = ["route"] if interfaces is not None else []
        commands.append(
            [
                "ufw",
                "--dry-run",
                *route,
                "allow",
                *(interfaces or []),
                "to",
                "any",
                "port",
                "22",
                "proto",
                "tcp",
                "comment",
                comment,
            ]
        )
    state = UfwState(tmp_path / "state")
    with Lab() as lab:
        results = _run_dry(lab, lab.namespace("ufw"), state, commands)
    for (interfaces, comment), (status, block) in zip(cases, results):
        action = "allow" if interfaces is None else "route:allow"
        where = _tuple_interfaces(interfaces or [])
        prefix = f"### tuple ### {action} tcp 22 0.0.0.0/0 any 0.0.0.0/0 {where} comment="
        stored = [line[len(prefix) :] for line in block.splitlines() if line.startswith(prefix)]
        faithful = status == 0 and [binascii.unhexlify(h).decode() for h in stored] == [comment]
        accepted = _comment_problem(comment, interfaces) is None
        assert accepted == faithful, (interfaces, comment, block)


def test_interface_limits_match_ufw_parser(need_namespaces, tmp_path):
    names = ["eth0", "eth+", "br-lan.5", "wg@x", "eth0:1", "comment", "log", "from"]
    commands = [["ufw", "--dry-run", "allow", "in", "on", name] for name in names]
    state = UfwState(tmp_path / "state")
    with Lab() as lab:
        results = _run_dry(lab, lab.namespace("ufw"), state, commands)
    for name, (status, block) in zip(names, results):
        expected = f"### tuple ### allow any any 0.0.0.0/0 any 0.0.0.0/0 in_{name}"
        faithful = status == 0 and expected in block.splitlines()
        # Words of ufw's syntax are rejected even where this ufw happens to parse them.
        if name not in PARSER_WORDS:
            assert (_interface_problem(name) is None) == faithful, (name, block)
        else:
            assert _interface_problem(name) is not None


# Errors through the command line

ERRORS = [
    ("limit", "allow tcp 22 limit 6/minute", "ufw cannot express arbitrary rate limits"),
    ("burst", "allow tcp 22 limit 12/minute burst 6", "ufw cannot express a rate limit burst"),
    ("log-prefix", 'drop tcp 23 log "telnet"', "ufw cannot express a per-rule log prefix"),
    ("negated", "allow tcp 22 from !10.0.0.0/8", "ufw cannot express negated addresses"),
    ("icmp-types", "allow icmp echo-request", "ufw cannot express ICMP types"),
    ("icmp", "allow icmp", "ufw cannot express rules for protocol icmp:"),
    ("icmpv6", "allow icmpv6", "ufw cannot express rules for protocol icmpv6:"),
    ("state", "drop state invalid", "ufw cannot express connection tracking states"),
    ("state-match", "allow tcp established", "ufw cannot express connection tracking states"),
    ("tcp-reject", "reject tcp 23", "ufw cannot express a TCP reject with port-unreachable"),
    ("reject-type", "reject udp 69 with admin-prohibited", "ufw cannot express the reject type"),
    ("quote", 'allow tcp 22 comment "it\'s"', "ufw cannot express a comment that contains"),
    ("comment-word", 'allow tcp 22 comment "log"', "ufw cannot express the comment 'log'"),
    ("option", 'allow tcp 22 comment "--rootdir=/tmp"', "ufw cannot express a comment that starts"),
    (
        "route-word",
        'allow tcp 22 fwd comment "in here"',
        "ufw cannot express this comment on a fwd rule",
    ),
    ("alias", "allow on eth0:1", "ufw cannot express the interface name 'eth0:1'"),
    ("iface-word", "allow on comment", "ufw cannot express the interface name 'comment'"),
]


@pytest.mark.parametrize("rule, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_cli_error_for_unsupported(rule, message, capsys, tmp_path):
    path = write_policy(tmp_path, f"policy p\n\n   {rule}\ndefault drop\n")
    out = tmp_path / "out"
    status = main(["compile", str(path), "-t", "ufw", "-o", str(out)])
    errors = capsys.readouterr().err
    assert status == 1
    assert f"{path}:3:4: error: {message}" in errors
    assert not out.exists()


def test_cli_error_for_late_established(capsys, tmp_path):
    path = write_policy(tmp_path, "drop from 10.0.0.0/8\nallow established\n")
    status = main(["compile", str(path), "-t", "ufw"])
    errors = capsys.readouterr().err
    assert status == 1
    assert f"{path}:2:1: error: ufw cannot express 'allow established' after a rule" in errors
    assert "hint: move this rule above line 1" in errors


def test_cli_error_for_target_setting(capsys, tmp_path):
    path = write_policy(tmp_path, "target ufw {\n  zone = public\n}\nallow tcp 22\n")
    status = main(["compile", str(path), "-t", "ufw"])
    errors = capsys.readouterr().err
    assert status == 1
    assert f"{path}:2:3: error: unknown setting 'zone' for target ufw" in errors


def test_leading_established_left_out(tmp_path):
    _, script = compile_text(tmp_path, "allow established in,out\nallow tcp 22\n")
    assert script.count("# Left out: ufw's stock before.rules and before6.rules accept") == 2
    assert "established" not in "".join(
        line for line in script.splitlines() if line.startswith("ufw ")
    )


# Warnings about ufw's stock rules


def test_warning_names_icmp_echo(tmp_path):
    graph, script = compile_text(tmp_path, "allow tcp 22\ndefault drop\n")
    warnings = EXPORTER.warnings(graph)
    assert all(w.severity == "warning" for w in warnings)
    icmp = [
        w
        for w in warnings
        if "before.rules accepts ICMP types" in w.message and "incoming" in w.message
    ]
    assert len(icmp) == 1
    assert "echo-request" in icmp[0].message
    assert icmp[0].source.line == 2
    for warning in warnings:
        assert f"# policy.wall:{warning.source.line}: {warning.message}" in unwrapped(script)


def test_warning_points_at_dropping_rule(tmp_path):
    graph, _ = compile_text(tmp_path, "allow tcp 22\ndrop from 10.0.0.0/8\ndefault allow in\n")
    messages = {w.message: w.source.line for w in EXPORTER.warnings(graph)}
    icmp = [
        line
        for m, line in messages.items()
        if "before.rules accepts ICMP types" in m and "incoming" in m
    ]
    established = [line for m, line in messages.items() if "before.rules accepts established" in m]
    assert icmp == [2]
    assert established == [2]
    assert not any("before6.rules" in m for m in messages)


def test_no_warning_for_accepted_allowance(tmp_path):
    graph, _ = compile_text(
        tmp_path,
        "allow established in,fwd\nallow on lo\nallow udp 5353 to 224.0.0.251\ndefault drop\n",
    )
    messages = [w.message for w in EXPORTER.warnings(graph)]
    assert not any("mDNS (UDP port 5353 to 224.0.0.251)" in m for m in messages)
    assert any("mDNS (UDP port 5353 to ff02::fb)" in m for m in messages)
    assert not any("established" in m or "loopback" in m for m in messages)


def test_no_warning_with_default_accept(tmp_path):
    graph, script = compile_text(tmp_path, "allow tcp 22\n")
    assert EXPORTER.warnings(graph) == []
    assert "# Warnings:" not in script


def test_log_warning(tmp_path):
    graph, script = compile_text(tmp_path, "drop tcp 23 log\n")
    warnings = [w for w in EXPORTER.warnings(graph) if "ufw logs at most" in w.message]
    assert len(warnings) == 1
    assert "[UFW BLOCK] " in warnings[0].message
    assert "ufw logging low" in script


def _option(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


def _stock_accept_lines(path: Path) -> set[tuple]:
    """Read the ACCEPT rules of a stock before*.rules file as comparable tuples."""
    codes = {
        "icmp": {t.iptables: t.code for t in ICMP_TYPES.values()},
        # before6.rules spells these the American way, the catalog the British way.
        "icmpv6": {t.iptables: t.code for t in ICMPV6_TYPES.values()}
        | {"neighbor-solicitation": 135, "neighbor-advertisement": 136},
    }
    found = set()
    for line in path.read_text().splitlines():
        if not line.startswith("-A ") or not line.endswith("-j ACCEPT"):
            continue
        words = line.split()
        chain = re.sub(r"^ufw6?-before-", "", words[1])
        icmp = _option(words, "--icmp-type") or _option(words, "--icmpv6-type")
        code = None
        if icmp is not None:
            code = int(icmp) if icmp.isdigit() else codes[_option(words, "-p")][icmp]
        states = _option(words, "--ctstate")
        found.add(
            (
                chain,
                _option(words, "-p"),
                code,
                _option(words, "--sport"),
                _option(words, "--dport"),
                _option(words, "-s"),
                _option(words, "-d"),
                _option(words, "-i") or _option(words, "-o"),
                None if states is None else frozenset(states.lower().split(",")),
            )
        )
    return found


def _rules_address(network) -> str | None:
    """Write a network as before.rules does: a host without its prefix length."""
    if network is None:
        return None
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def test_stock_table_matches_installed_files():
    for name, family in (("before.rules", "ipv4"), ("before6.rules", "ipv6")):
        path = STOCK_RULES / name
        require(path.is_file(), f"needs ufw's stock {path}")
        table = set()
        for item in STOCK_ALLOWANCES:
            if item.family != family:
                continue
            table.add(
                (
                    item.chain,
                    item.protocol,
                    item.icmp_type,
                    None if item.sport is None else str(item.sport),
                    None if item.dport is None else str(item.dport),
                    _rules_address(item.saddr),
                    _rules_address(item.daddr),
                    item.interface,
                    item.states,
                )
            )
        assert table == _stock_accept_lines(path), name


# Determinism


def test_output_deterministic(tmp_path):
    path = write_policy(tmp_path, FEATURES + "allow udp 5353 to 224.0.0.251\n")
    first = EXPORTER.render(load_policy(str(path)))
    second = EXPORTER.render(load_policy(str(path)))
    assert first == second
    code = (
        "import sys; from compiler.api import load_policy; from exporters.ufw import UfwExporter; "
        "sys.stdout.write(UfwExporter().render(load_policy(sys.argv[1]))['ufw.sh'])"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        assert run.stdout == first["ufw.sh"]
