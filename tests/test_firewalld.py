"""firewalld exporter: offline checks, rule order, errors, the script and a real firewalld.

The offline checks run firewall-offline-cmd --system-config DIR. It reads and writes
only inside DIR (checked with strace on firewalld 1.3.3), so they need no private
mount namespace. The daemon tests run dbus-daemon and firewalld inside a
network namespace and a private mount namespace of their own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import pytest

from compiler import capabilities, cli
from compiler.api import load_policy
from compiler.graph import PortRange
from compiler.plugins import exporters
from exporters import firewalld
from tests.conftest import ROOT, need_tool, require, sample_files
from tests.helpers import export, write_policy

TARGET = "firewalld"
ARTICLE = ROOT / "samples" / "safesquid-outlook.wall"
ARTICLE_TCP = {
    22, 25, 53, 110, 389, 465, 587, 636, 953, 993, 995, 1023, 3268, 3269, 5222, 5269, 5280, 8080,
}
ARTICLE_UDP = {53, 953}
# Samples firewalld cannot express, with the error the exporter must give for each.
REFUSED_SAMPLES = {
    "router": "firewalld cannot express an incoming interface match (on eth0)",
    "webserver": "firewalld cannot express a rate limit burst",
    "workstation": "firewalld cannot express source and destination ports in one rule",
}
# A firewalld.conf for test trees: without one, firewall-offline-cmd prints an ERROR.
FIREWALLD_CONF = """\
DefaultZone=public
FirewallBackend=nftables
LogDenied=off
CleanupOnExit=yes
CleanupModulesOnExit=no
IPv6_rpfilter=yes
IndividualCalls=no
FlushAllOnReload=yes
RFC3964_IPv4=yes
Lockdown=no
"""
# Every feature the exporter maps to firewalld, in one policy.
FEATURES_POLICY = """\
policy kitchen
hosts admins = 192.0.2.0/26, 2001:db8:a::/48
hosts bad = 203.0.113.0/24
service web = tcp 80, tcp 443, udp 443
service kibana = tcp 5602

allow established
allow on lo
drop state invalid
drop tcp 22 from 198.51.100.0/24 log "ssh-drop"
allow tcp ssh
allow ldap from admins comment "ldap -- for <admins> & co"
allow web
allow kibana from !admins limit 5/minute
reject tcp 113 with tcp-reset
reject udp 5000-5010 with host-unreachable log
allow icmp echo-request, time-exceeded
allow icmpv6 echo-request, neighbor-solicitation
allow udp from any port 53 to 192.0.2.1
drop from bad log "it's $(id) `x`" limit 3/second
allow tcp 8000-8100
drop to bad out
allow tcp http, https out
allow udp domain out
allow on lo out
allow from admins to !bad fwd
default reject in
default drop out
default drop fwd
"""


def _render(policy: Path) -> dict[str, str]:
    return export(policy, TARGET)


def _write_tree(directory: Path, files: dict[str, str]) -> Path:
    """Write an exported tree and a firewalld.conf into directory."""
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (directory / "firewalld.conf").write_text(FIREWALLD_CONF, encoding="utf-8")
    return directory


def _offline(directory: Path, *args: str) -> subprocess.CompletedProcess:
    tool = need_tool("firewall-offline-cmd")
    return subprocess.run(
        [tool, "--system-config", str(directory), *args],
        check=False, capture_output=True, text=True, timeout=120,
    )


def _complaints(text: str) -> list[str]:
    return [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]


def _check_config(directory: Path) -> None:
    """Run --check-config and fail on any warning or error, since it exits 0 on many."""
    result = _offline(directory, "--check-config")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _complaints(output) == []


# Offline validation


def _problems_of(sample: Path) -> list:
    """Return the capability and check problems of a sample for firewalld."""
    exporter = exporters()[TARGET]
    previous = os.getcwd()
    os.chdir(sample.parent)
    try:
        graph = load_policy(sample.name)
    finally:
        os.chdir(previous)
    problems = capabilities.check(graph, TARGET, frozenset(exporter.capabilities))
    return problems + exporter.check(graph)


@pytest.mark.parametrize("sample", sample_files(), ids=[p.stem for p in sample_files()])
def test_sample_tree_passes_check_config(sample, tmp_path):
    problems = _problems_of(sample)
    if sample.stem in REFUSED_SAMPLES:
        messages = [p.message for p in problems]
        assert any(m.startswith(REFUSED_SAMPLES[sample.stem]) for m in messages), messages
        assert all(p.source is not None for p in problems)
        return
    assert problems == []
    _check_config(_write_tree(tmp_path, _render(sample)))


def test_features_tree_passes_check_config(tmp_path):
    files = _render(write_policy(tmp_path, FEATURES_POLICY))
    _check_config(_write_tree(tmp_path / "tree", files))


def test_features_rich_rules_read_back(tmp_path):
    # firewalld reads the XML rules back as exactly the rich rule text of the script.
    files = _render(write_policy(tmp_path, FEATURES_POLICY))
    tree = _write_tree(tmp_path / "tree", files)
    scripted: dict[str, list[str]] = {}
    for line in files[firewalld.SCRIPT].splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 3 and words[2].startswith("--add-rich-rule="):
            scripted.setdefault(words[1], []).append(words[2].removeprefix("--add-rich-rule="))
    assert set(scripted) == {"--zone=kitchen", "--policy=kitchen-out", "--policy=kitchen-fwd"}
    for selection, expected in scripted.items():
        result = _offline(tree, selection, "--list-rich-rules")
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.splitlines()) == sorted(expected)


def test_article_zone_opens_article_ports(tmp_path):
    tree = _write_tree(tmp_path, _render(ARTICLE))
    listed = {}
    for option in ("--list-services", "--list-ports", "--list-rich-rules", "--list-source-ports"):
        result = _offline(tree, "--zone=safesquid", option)
        assert result.returncode == 0, result.stderr
        listed[option] = result.stdout.split() if option != "--list-rich-rules" else result.stdout
    assert listed["--list-rich-rules"].strip() == ""
    assert listed["--list-source-ports"] == []
    opened: dict[str, set[int]] = {"tcp": set(), "udp": set()}
    for service in listed["--list-services"]:
        result = _offline(tree, f"--service={service}", "--get-ports")
        assert result.returncode == 0, result.stderr
        _add_ports(opened, result.stdout.split())
    _add_ports(opened, listed["--list-ports"])
    assert opened["tcp"] == ARTICLE_TCP
    assert opened["udp"] == ARTICLE_UDP


def _add_ports(opened: dict[str, set[int]], items: list[str]) -> None:
    for item in items:
        ports, protocol = item.split("/")
        low, _, high = ports.partition("-")
        opened[protocol].update(range(int(low), int(high or low) + 1))


def test_article_redundant_rules_left_out_with_notes():
    files = _render(ARTICLE)
    zone = files["zones/safesquid.xml"]
    assert "safesquid-outlook.wall:9: allow established in,fwd" in zone
    assert firewalld.NOTE_ESTABLISHED in zone
    assert firewalld.NOTE_LOOPBACK in zone
    root = ET.fromstring(zone)
    assert root.get("target") == "DROP"
    assert root.findall("rule") == []
    assert [p.get("value") for p in root.findall("protocol")] == ["icmp", "ipv6-icmp"]


def test_article_forward_policy_carries_forward_default():
    files = _render(ARTICLE)
    assert "policies/safesquid-out.xml" not in files
    root = ET.fromstring(files["policies/safesquid-fwd.xml"])
    assert root.get("target") == "DROP"
    assert int(root.get("priority")) < 0
    assert [z.get("name") for z in root.findall("ingress-zone")] == ["safesquid"]
    assert [z.get("name") for z in root.findall("egress-zone")] == ["ANY"]


# Rule order


def _evaluation_order(xml_text: str) -> list[tuple[str, str, str | None]]:
    """Return (action, port, source) in the order firewalld evaluates the XML.

    Rich rules with a negative priority come first, then the port and service
    elements, then rich rules with a positive priority (firewalld.richlanguage(5)).
    """
    root = ET.fromstring(xml_text)
    rich = []
    for rule in root.findall("rule"):
        priority = int(rule.get("priority"))
        assert priority != 0, "a priority of 0 leaves the order to the rule kind"
        port = rule.find("port")
        source = rule.find("source")
        action = next(c.tag for c in rule if c.tag in ("accept", "drop", "reject"))
        rich.append((priority, action, port.get("port") if port is not None else "",
                     source.get("address") if source is not None else None))
    rich.sort(key=lambda item: item[0])
    elements = [("accept", e.get("port"), None) for e in root.findall("port")]
    first = [(a, p, s) for priority, a, p, s in rich if priority < 0]
    last = [(a, p, s) for priority, a, p, s in rich if priority > 0]
    return first + elements + last


def test_order_drop_before_overlapping_allow(tmp_path):
    policy = write_policy(
        tmp_path, "policy order\ndrop tcp 22 from 198.51.100.0/24\nallow tcp 22\ndefault drop\n"
    )
    zone = _render(policy)["zones/order.xml"]
    order = _evaluation_order(zone)
    drop = ("drop", "22", "198.51.100.0/24")
    allow = ("accept", "22", None)
    assert drop in order
    assert allow in order
    assert order.index(drop) < order.index(allow)
    drop_rule = ET.fromstring(zone).find("rule")
    assert int(drop_rule.get("priority")) < 0


def test_order_allow_before_overlapping_drop(tmp_path):
    policy = write_policy(
        tmp_path, "policy order\nallow tcp 22\ndrop tcp 22 from 198.51.100.0/24\ndefault drop\n"
    )
    zone = _render(policy)["zones/order.xml"]
    order = _evaluation_order(zone)
    drop = ("drop", "22", "198.51.100.0/24")
    allow = ("accept", "22", None)
    assert order.index(allow) < order.index(drop)


def test_order_plain_allow_stays_rich_after_drop(tmp_path):
    # The first allow takes the element position, so the last one must stay a
    # rich rule with a priority after the drop.
    policy = write_policy(
        tmp_path,
        "policy order\nallow tcp 80\ndrop tcp 22, 80 from 198.51.100.0/24\nallow tcp 22\n"
        "default drop\n",
    )
    zone = _render(policy)["zones/order.xml"]
    root = ET.fromstring(zone)
    assert [p.get("port") for p in root.findall("port")] == ["80"]
    order = _evaluation_order(zone)
    assert order == [
        ("accept", "80", None),
        ("drop", "22", "198.51.100.0/24"),
        ("drop", "80", "198.51.100.0/24"),
        ("accept", "22", None),
    ]


def test_order_priorities_increase_in_policy_order(tmp_path):
    policy = write_policy(
        tmp_path,
        "policy order\ndrop tcp 22 from 198.51.100.0/24\ndrop tcp 22 from 203.0.113.0/24\n"
        "allow tcp 22\nreject tcp 23 from 192.0.2.0/24\nallow tcp 23\ndefault drop\n",
    )
    root = ET.fromstring(_render(policy)["zones/order.xml"])
    priorities = [int(rule.get("priority")) for rule in root.findall("rule")]
    assert priorities == sorted(priorities)
    assert len(set(priorities)) == len(priorities)


# Errors


# Policy text after "policy p", the expected message start, and its line and column.
UNEXPRESSIBLE = [
    ("burst", "allow tcp 22 limit 5/second burst 10", "a rate limit burst", 2, 1),
    ("interface-wildcard", "allow on eth+", "interface wildcards (IFACE+)", 2, 1),
    ("in-interface", "allow tcp 22 on eth0", "an incoming interface match (on eth0)", 2, 1),
    ("out-interface", "allow tcp 80 on eth0 out", "an outgoing interface match (on eth0)", 2, 1),
    ("drop-loopback", "drop on lo", "an incoming interface match (on lo)", 2, 1),
    ("state-new", "allow tcp 22 state new", "connection tracking states", 2, 1),
    ("reject-invalid", "reject state invalid", "connection tracking states", 2, 1),
    ("source-and-destination-ports", "allow udp 68 from any port 67",
     "source and destination ports in one rule", 2, 1),
    ("mld-type", "allow icmpv6 mld-listener-query", "icmpv6 type mld-listener-query", 2, 1),
    ("one-per-day", "allow tcp 22 limit 1/day", "a rate limit of 1/day", 2, 1),
    ("long-log-prefix", 'allow tcp 22 log "' + "x" * 130 + '"',
     "a log prefix longer than 127 bytes", 2, 1),
    ("log-prefix-equals", 'allow tcp 22 log "a=b"', "a log prefix with '='", 2, 1),
    ("shared-limit", "allow tcp 80, 443 limit 5/second",
     "this rate limit: the rule needs 2 rich rules", 2, 1),
    ("long-group-name", "hosts " + "g" * 32 + " = 192.0.2.0/24",
     "host group '" + "g" * 32 + "'", 2, 7),
]


@pytest.mark.parametrize(
    "text, message, line, column", [c[1:] for c in UNEXPRESSIBLE], ids=[c[0] for c in UNEXPRESSIBLE]
)
def test_cli_rejects_unexpressible(tmp_path, capsys, text, message, line, column):
    policy = write_policy(tmp_path, f"policy p\n{text}\ndefault drop\n")
    out = tmp_path / "out"
    status = cli.main(["compile", str(policy), "-t", TARGET, "-o", str(out)])
    error = capsys.readouterr().err
    assert status == 1
    assert f"{policy}:{line}:{column}: error: firewalld cannot express {message}" in error
    assert not out.exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("abcdefghijklmnopqr", "a policy name longer than 17 characters"),
        ("abcdefghijklmn", "a policy name longer than 13 characters when the policy has out"),
        ("public", "a policy named 'public'"),
        ("ANY", "a policy named 'ANY'"),
    ],
)
def test_cli_rejects_unusable_names(tmp_path, capsys, name, message):
    policy = write_policy(tmp_path, f"policy {name}\nallow tcp 22 in,out\n")
    out = tmp_path / "out"
    status = cli.main(["compile", str(policy), "-t", TARGET, "-o", str(out)])
    error = capsys.readouterr().err
    assert status == 1
    assert f"{policy}:1:1: error: firewalld cannot express {message}" in error
    assert not out.exists()


def test_cli_rejects_unknown_setting(tmp_path, capsys):
    policy = write_policy(tmp_path, "policy p\ntarget firewalld {\n  zone = x\n}\nallow tcp 22\n")
    out = tmp_path / "out"
    status = cli.main(["compile", str(policy), "-t", TARGET, "-o", str(out)])
    error = capsys.readouterr().err
    assert status == 1
    assert f"{policy}:3:3: error: unknown setting 'zone' for target firewalld" in error
    assert not out.exists()


def test_render_rejects_graph_with_problems(tmp_path):
    from compiler.errors import PolicyError

    graph = load_policy(str(write_policy(tmp_path, "policy p\nallow tcp 22 on eth0\n")))
    with pytest.raises(PolicyError, match="firewalld cannot express an incoming interface"):
        exporters()[TARGET].render(graph)


# Text safety


def test_xml_escapes_hostile_text(tmp_path):
    hostile = 'x --> <b>&amp; \\"q\\" -'
    policy = write_policy(
        tmp_path, f'policy p\nallow tcp 22 from 192.0.2.1 log "<&\'>" comment "{hostile}"\n',
        name="we<ird>&.wall",
    )
    files = _render(policy)
    zone = files["zones/p.xml"]
    root = ET.fromstring(zone)
    assert root.find("rule/log").get("prefix") == "<&'> "
    for line in zone.splitlines():
        if "<!--" in line:
            body = line.strip()[4:-3]
            assert "--" not in body
            assert not body.endswith("-")
    _check_config(_write_tree(tmp_path / "tree", files))


def test_script_quotes_hostile_text(tmp_path):
    policy = write_policy(
        tmp_path, 'policy p\nallow tcp 22 from 192.0.2.1 log "it\'s $(touch pwned) `x`;"\n',
        name="$(touch pwned2).wall",
    )
    script = _render(policy)[firewalld.SCRIPT]
    calls = _record_script(tmp_path, script)
    rich = [c for c in calls if len(c) > 1 and c[1].startswith("--add-rich-rule=")]
    expected = (
        '--add-rich-rule=rule priority="1" family="ipv4" source address="192.0.2.1/32" '
        'port port="22" protocol="tcp" log prefix="it\'s $(touch pwned) `x`; " accept'
    )
    assert rich == [["--zone=p", expected]]
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()


RECORDER = r"""
import json, sys
with open(sys.argv[1], "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[2:]) + "\n")
sys.exit(1 if sys.argv[2].startswith("--info-") else 0)
"""


def _record_script(tmp_path: Path, script: str) -> list[list[str]]:
    """Run the script with a command that records its arguments; return the calls."""
    recorder = tmp_path / "record.py"
    recorder.write_text(RECORDER, encoding="utf-8")
    log = tmp_path / "calls.jsonl"
    path = tmp_path / "firewall-cmd.sh"
    path.write_text(script, encoding="utf-8")
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(recorder))} {shlex.quote(str(log))}"
    env = dict(os.environ, POLYWALL_FIREWALL_CMD=command)
    subprocess.run(["sh", str(path)], cwd=tmp_path, env=env, check=True, timeout=60)
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


# The firewall-cmd script


INFO_OPTIONS = {"policies": "--info-policy", "services": "--info-service", "ipsets": "--info-ipset"}


def _listing(directory: Path, files: dict[str, str]) -> dict[str, str]:
    """Return firewall-offline-cmd's view of every object the tree defines."""
    options = []
    for relative in sorted(files):
        folder, _, file_name = relative.partition("/")
        name = file_name.removesuffix(".xml")
        if folder == "zones":
            options.append((f"--zone={name}", "--list-all"))
        elif folder in INFO_OPTIONS:
            options.append((f"{INFO_OPTIONS[folder]}={name}",))
    listing = {}
    for option in options:
        result = _offline(directory, *option)
        assert result.returncode == 0, result.stdout + result.stderr
        listing[" ".join(option)] = result.stdout
    return listing


def test_script_builds_same_configuration(tmp_path):
    need_tool("firewall-offline-cmd")
    files = _render(write_policy(tmp_path, FEATURES_POLICY))
    tree = _write_tree(tmp_path / "tree", files)
    built = tmp_path / "built"
    built.mkdir()
    # As the default zone, the zone is the hardest to replace on the second run.
    conf = FIREWALLD_CONF.replace("DefaultZone=public", "DefaultZone=kitchen")
    (built / "firewalld.conf").write_text(conf, encoding="utf-8")
    script = tmp_path / "firewall-cmd.sh"
    script.write_text(files[firewalld.SCRIPT], encoding="utf-8")
    command = f"firewall-offline-cmd --system-config {shlex.quote(str(built))}"
    env = dict(os.environ, POLYWALL_FIREWALL_CMD=command)
    expected = _listing(tree, files)
    for run in (1, 2):
        result = subprocess.run(
            ["sh", str(script)], env=env, check=False, capture_output=True, text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"run {run}: {result.stdout}{result.stderr}"
        assert _listing(built, files) == expected, f"run {run}"


# Determinism and data


def test_render_twice_same_bytes(tmp_path):
    policy = write_policy(tmp_path, FEATURES_POLICY)
    assert _render(policy) == _render(policy)
    assert _render(ARTICLE) == _render(ARTICLE)


def test_render_same_bytes_under_hash_seeds(tmp_path):
    policy = write_policy(tmp_path, FEATURES_POLICY)
    outputs = []
    for seed in ("1", "977"):
        out = tmp_path / f"out-{seed}"
        subprocess.run(
            [sys.executable, "-m", "compiler.cli", "compile", str(policy), "-t", TARGET,
             "-o", str(out)],
            cwd=ROOT, env=dict(os.environ, PYTHONHASHSEED=seed), check=True, capture_output=True,
        )
        outputs.append({
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
        })
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {f"firewalld/{name}" for name in _render(policy)}


def test_shipped_services_table_matches_installed_firewalld():
    directory = Path("/usr/lib/firewalld/services")
    require(directory.is_dir(), f"needs firewalld's shipped services in {directory}")
    installed: dict[str, tuple | None] = {}
    for path in sorted(directory.glob("*.xml")):
        root = ET.parse(path).getroot()
        ports = root.findall("port")
        extras = {child.tag for child in root} - {"short", "description", "port"}
        simple = all(p.get("protocol") in ("tcp", "udp") and p.get("port") for p in ports)
        if extras or not ports or not simple:
            installed[path.stem] = None
            continue
        table: dict = {}
        for port in ports:
            low, _, high = port.get("port").partition("-")
            table.setdefault(port.get("protocol"), []).append(
                PortRange(int(low), int(high or low))
            )
        installed[path.stem] = firewalld.port_key({k: tuple(v) for k, v in table.items()})
    assert firewalld.shipped_services() == installed


# firewalld with real packets


@contextmanager
def _firewalld_daemon(namespace: str, config: Path, log: Path):
    """Run dbus-daemon and firewalld in a namespace, in a private mount namespace.

    A tmpfs over /run gives them their own /run/dbus and /run/firewalld. A mount
    over /run/firewalld alone would first create that folder on the host. Yield a
    function that runs a command in the same network and mount namespaces. Both
    daemons are killed by PID on exit, also after a failure.
    """
    script = (
        "set -e; mount -t tmpfs polywall-run /run; mkdir /run/dbus /run/firewalld; "
        "echo $$; dbus-daemon --system --fork --print-pid; "
        f"firewalld --nofork --nopid --system-config {shlex.quote(str(config))} "
        f"--log-target console >{shlex.quote(str(log))} 2>&1 & echo $!; wait"
    )
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "unshare", "--mount", "--propagation", "private",
         "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pids: list[int] = []
    try:
        for _ in range(3):
            line = process.stdout.readline() if process.stdout else ""
            if not line.strip().isdigit():
                process.kill()
                error = process.stderr.read() if process.stderr else ""
                raise AssertionError(f"daemons did not start: {line!r} {error}")
            pids.append(int(line))
        shell = pids[0]

        def run(argv: list[str], check: bool = True, timeout: float = 120):
            result = subprocess.run(
                ["nsenter", "-t", str(shell), "-m", "-n", "--", *argv],
                check=False, capture_output=True, text=True, timeout=timeout,
            )
            if check:
                assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
            return result

        deadline = time.monotonic() + 60
        while run(["firewall-cmd", "--state"], check=False).stdout.strip() != "running":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield run
    finally:
        for pid in reversed(pids[1:]):
            _kill(pid)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _kill(pid: int) -> None:
    """Stop one process started by the test: TERM, then KILL after 10 s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _assert_clean_log(log: Path, offset: int = 0) -> None:
    """Fail on a warning or error in firewalld's log after offset bytes.

    firewalld falls back to its stock configuration when it cannot load a file,
    and reports that only in its log.
    """
    text = log.read_bytes()[offset:].decode("utf-8", errors="replace")
    assert _complaints(text) == []


@pytest.mark.slow
@pytest.mark.root
def test_article_packets_with_firewalld(tmp_path, need_namespaces):
    from compiler.netlab import Lab, Probe

    for tool in ("firewalld", "firewall-cmd", "dbus-daemon", "nsenter", "unshare"):
        need_tool(tool)
    config = _write_tree(tmp_path / "config", _render(ARTICLE))
    log = tmp_path / "firewalld.log"
    closed_tcp, closed_udp = [3306, 8443], [161]
    with Lab() as lab:
        fw = lab.namespace("fw")
        client = lab.namespace("client")
        server = lab.namespace("server")
        inside = lab.link(client, fw)
        behind = lab.link(fw, server)
        lab.route(client, inside.b4, inside.b6)
        lab.route(server, behind.a4, behind.a6)
        lab.enable_forwarding(fw)
        ports_tcp = sorted(ARTICLE_TCP) + closed_tcp
        ports_udp = sorted(ARTICLE_UDP) + closed_udp
        lab.serve(fw, tcp=ports_tcp, udp=ports_udp)
        lab.serve(server, tcp=[22, 3306], udp=[53, 161])
        with _firewalld_daemon(fw, config, log) as run:
            for interface in (inside.b_if, behind.a_if):
                run(["firewall-cmd", "--zone=safesquid", f"--change-interface={interface}"])
            probes = {}
            for address in (inside.b4, inside.b6):
                for port in ports_tcp:
                    probes[Probe("tcp", address, port)] = "open" if port in ARTICLE_TCP else "dropped"
                for port in ports_udp:
                    probes[Probe("udp", address, port)] = "open" if port in ARTICLE_UDP else "dropped"
                probes[Probe("icmp", address)] = "open"
            for address in (behind.b4, behind.b6):
                probes[Probe("tcp", address, 22)] = "open"
                probes[Probe("tcp", address, 3306)] = "dropped"
                probes[Probe("udp", address, 53)] = "open"
                probes[Probe("udp", address, 161)] = "dropped"
            outcomes = lab.probe(client, list(probes), timeout=1.0)
        _assert_clean_log(log)
    wrong = {str(p): (outcomes[p], expected) for p, expected in probes.items() if outcomes[p] != expected}
    assert wrong == {}


@pytest.mark.slow
@pytest.mark.root
def test_order_packets_with_firewall_cmd_script(tmp_path, need_namespaces):
    from compiler.netlab import Lab, Probe

    for tool in ("firewalld", "firewall-cmd", "dbus-daemon", "nsenter", "unshare"):
        need_tool(tool)
    log = tmp_path / "firewalld.log"
    with Lab() as lab:
        fw = lab.namespace("fw")
        client = lab.namespace("client")
        link = lab.link(client, fw)
        network4 = ipaddress.ip_interface(f"{link.a4}/24").network
        network6 = ipaddress.ip_interface(f"{link.a6}/64").network
        blocked4 = ipaddress.ip_network(f"{network4.network_address + 128}/25")
        blocked6 = ipaddress.ip_network(f"{network6.network_address + 0x8000}/113")
        inside4 = str(network4.network_address + 130)
        inside6 = str(network6.network_address + 0x8002)
        lab.add_address(client, link.a_if, f"{inside4}/24")
        lab.add_address(client, link.a_if, f"{inside6}/64")
        policy = write_policy(
            tmp_path,
            f"policy order\nhosts blocked = {blocked4}, {blocked6}\n"
            "drop tcp 22 from blocked\nallow tcp 22\n"
            "allow tcp 80\ndrop tcp 80 from blocked\n"
            "default drop\n",
        )
        files = _render(policy)
        script = tmp_path / "firewall-cmd.sh"
        script.write_text(files[firewalld.SCRIPT], encoding="utf-8")
        config = tmp_path / "config"
        config.mkdir()
        (config / "firewalld.conf").write_text(FIREWALLD_CONF, encoding="utf-8")
        lab.serve(fw, tcp=[22, 80, 443])
        with _firewalld_daemon(fw, config, log) as run:
            run(["sh", str(script)], timeout=600)
            # The script's existence checks log an error for each object not yet there.
            offset = log.stat().st_size
            run(["firewall-cmd", "--reload"])
            run(["firewall-cmd", "--zone=order", f"--change-interface={link.b_if}"])
            probes = {}
            # Both sources are given, because with two addresses on one interface
            # the kernel's choice of source address is not obvious.
            for address, outside, inside in ((link.b4, link.a4, inside4),
                                             (link.b6, link.a6, inside6)):
                for source, blocked in ((outside, False), (inside, True)):
                    probes[Probe("tcp", address, 22, source)] = "dropped" if blocked else "open"
                    probes[Probe("tcp", address, 80, source)] = "open"
                    probes[Probe("tcp", address, 443, source)] = "dropped"
            outcomes = lab.probe(client, list(probes), timeout=1.0)
        _assert_clean_log(log, offset)
    wrong = {str(p): (outcomes[p], expected) for p, expected in probes.items() if outcomes[p] != expected}
    assert wrong == {}
