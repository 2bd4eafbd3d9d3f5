"""`polywall verify`: probe derivation from the rule graph, and real packets through real firewalls."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess

import pytest

from compiler.api import load_policy, load_policy_text
from compiler.cli import main
from compiler.errors import SourceCache
from compiler.evaluate import evaluate
from compiler.probes import OUTCOMES, derive_probes, expected_outcome, plan_lab
from compiler.verify import (
    VerifyError,
    expected_on_target,
    firewalld_by_design,
    run_verify,
    ufw_by_design,
    verify_graph,
)
from tests.conftest import SAMPLES, need_tool, sample_files

ARTICLE = SAMPLES / "safesquid-outlook.wall"
RANGE_POLICY = """policy ranges
allow tcp 6000-6010 from 192.0.2.0/24
default drop
"""


def _cases_by_label(graph, direction: str) -> dict[str, object]:
    return {case.label: case for case in derive_probes(graph, direction).cases}


def _port_cases(cases, port: int, source: str) -> list:
    return [
        c for c in cases
        if c.packet.protocol == "tcp" and c.packet.destination_port == port
        and str(c.packet.source) == source
    ]


def test_probes_port_range_edges():
    graph = load_policy_text(RANGE_POLICY)
    cases = derive_probes(graph, "in").cases
    expected = {5999: "dropped", 6000: "open", 6010: "open", 6011: "dropped"}
    for port, outcome in expected.items():
        found = _port_cases(cases, port, "192.0.2.1")
        assert len(found) == 1, f"no single probe for port {port}: {[c.label for c in cases]}"
        assert found[0].expected == outcome
        assert found[0].expected == OUTCOMES[evaluate(graph, found[0].packet).verdict]


def test_probes_address_just_outside():
    graph = load_policy_text(RANGE_POLICY)
    cases = derive_probes(graph, "in").cases
    network = ipaddress.ip_network("192.0.2.0/24")
    outside = [c for c in cases if c.packet.family == "ipv4"
               and c.packet.protocol == "tcp" and c.packet.destination_port == 6000
               and c.packet.source not in network
               and not str(c.packet.source).startswith("10.")]
    sources = sorted(str(c.packet.source) for c in outside)
    assert sources == ["192.0.1.255", "192.0.3.0"]
    for case in outside:
        assert case.expected == "dropped"
        assert evaluate(graph, case.packet).verdict == "drop"
    inside = _port_cases(cases, 6000, "192.0.2.254")
    assert [c.expected for c in inside] == ["open"]


def test_probes_other_protocol_and_family():
    graph = load_policy_text(RANGE_POLICY)
    cases = derive_probes(graph, "in").cases
    udp = [c for c in cases if c.packet.protocol == "udp" and c.packet.destination_port == 6000]
    assert [c.expected for c in udp] == ["dropped"]
    ipv6 = [c for c in cases if c.packet.family == "ipv6" and c.packet.destination_port == 6000]
    assert len(ipv6) == 1
    assert ipv6[0].expected == "dropped"


def test_probes_name_their_rule():
    graph = load_policy_text(RANGE_POLICY)
    cases = derive_probes(graph, "in").cases
    from_rule = [c for c in cases if c.rule is not None and c.rule.line == 2]
    assert from_rule
    assert all(c.reason.startswith("<policy>:2 ") for c in from_rule)


def test_probes_reply_dropped_by_output():
    graph = load_policy_text("policy replies\nallow tcp 22\ndefault drop in\ndefault drop out\n")
    open_case = _port_cases(derive_probes(graph, "in").cases, 22, "10.200.0.2")
    assert [c.expected for c in open_case] == ["dropped"]
    assert open_case[0].decision.verdict == "accept"
    assert open_case[0].reply_decision is not None
    assert open_case[0].reply_decision.verdict == "drop"


def test_probes_reject_expected_rejected():
    graph = load_policy_text("policy rejects\nreject tcp 25\nallow tcp 26\n")
    cases = derive_probes(graph, "in").cases
    assert [c.expected for c in _port_cases(cases, 25, "10.200.0.2")] == ["rejected"]
    assert [c.expected for c in _port_cases(cases, 26, "10.200.0.2")] == ["open"]


def test_probes_skip_established_and_lo():
    graph = load_policy(str(ARTICLE))
    skipped = derive_probes(graph, "in").skipped
    reasons = {(s.rule.line, s.description) for s in skipped}
    assert (9, "ipv4 packets in state established, related") in reasons
    assert (10, "ipv4 packets on lo") in reasons
    assert all(s.reason for s in skipped)


def test_probes_skip_multicast_destination():
    graph = load_policy_text("policy mdns\nallow udp 5353 to 224.0.0.251\ndefault drop\n")
    probes = derive_probes(graph, "in")
    assert any("multicast" in s.reason for s in probes.skipped)
    assert not any(c.packet.destination.is_multicast for c in probes.cases)


def test_plan_names_policy_interfaces():
    graph = load_policy_text(
        "policy ifaces\nallow established fwd\nallow tcp 22 on eth1\nallow tcp 80 on ppp+ out-on eth0 fwd\n"
        "default drop\n")
    plan = plan_lab(graph, "fwd")
    assert {"eth0", "ppp0"} <= set(plan.interfaces)
    assert plan.default_in not in ("eth0", "ppp0")
    assert plan.default_out not in ("eth0", "ppp0", plan.default_in)
    cases = derive_probes(graph, "fwd").cases
    inside = [c for c in cases if c.packet.destination_port == 80 and c.expected == "open"]
    assert inside
    assert all(c.packet.in_interface == "ppp0" for c in inside)
    assert all(c.packet.out_interface == "eth0" for c in inside)
    elsewhere = [c for c in cases if c.packet.destination_port == 80
                 and c.packet.in_interface != "ppp0"]
    assert elsewhere
    assert all(c.expected == "dropped" for c in elsewhere)


def test_probes_source_ports_distinct():
    graph = load_policy(str(ARTICLE))
    cases = derive_probes(graph, "in").cases
    ports = [c.packet.source_port for c in cases if c.packet.protocol in ("tcp", "udp")]
    assert len(ports) == len(set(ports))


def test_expected_outcome_matches_cases():
    graph = load_policy(str(ARTICLE))
    for case in derive_probes(graph, "fwd").cases:
        assert expected_outcome(graph, case.packet) == case.expected


def test_verify_without_root_fails(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    status = main(["verify", str(ARTICLE), "--target", "iptables"])
    assert status == 1
    assert "needs root" in capsys.readouterr().err


def test_verify_rejects_unloadable_target(capsys):
    status = main(["verify", str(ARTICLE), "--target", "json"])
    assert status == 1
    assert "cannot load target 'json'" in capsys.readouterr().err


def _namespaces_of_this_process() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout
    prefix = f"pw{os.getpid()}x"
    return [line.split()[0] for line in listed.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.stem)
def test_verify_sample(sample, need_namespaces, capsys):
    need_tool("iptables-restore")
    need_tool("nft")
    status = main(["verify", str(sample), "--target", "iptables,nftables"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    assert "PROBE" in captured.out
    assert "IPTABLES" in captured.out
    assert "NFTABLES" in captured.out
    assert "MISMATCH" not in captured.out
    assert "behave as the policy says" in captured.out
    assert _namespaces_of_this_process() == []


def _drop_993(target: str, files: dict[str, str]) -> dict[str, str]:
    # "993," is followed by the next port in iptables' multiport list and by a new line in nft's set.
    changed = {name: re.sub(r"\b993,\s*", "", text) for name, text in files.items()}
    assert changed != files, f"the {target} export has no '993,' to remove"
    return changed


def test_verify_detects_missing_port(need_namespaces, capsys):
    need_tool("iptables-restore")
    need_tool("nft")
    status = run_verify(str(ARTICLE), ["iptables,nftables"], SourceCache(), transform=_drop_993)
    output = capsys.readouterr().out
    assert status == 1
    mismatch_lines = [line for line in output.splitlines() if line.endswith("MISMATCH")]
    assert mismatch_lines
    assert all(":993 " in line for line in mismatch_lines)
    assert "iptables in: tcp 10.200.0.2 -> 10.200.0.1:993 on lab0: expected open, observed dropped" \
        in output
    assert "nftables in: tcp 10.200.0.2 -> 10.200.0.1:993 on lab0: expected open, observed dropped" \
        in output


def test_verify_interrupt_removes_lab(need_namespaces):
    need_tool("nft")
    graph = load_policy(str(ARTICLE))

    def interrupt(message: str) -> None:
        if "sending" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        verify_graph(graph, ["nftables"], progress=interrupt)
    assert _namespaces_of_this_process() == []


def test_verify_unexpressible_policy_fails():
    graph = load_policy_text('policy long\nallow tcp 22 log "' + "x" * 40 + '"\n')
    with pytest.raises(VerifyError, match="log prefix"):
        verify_graph(graph, ["iptables"])


EDGES_POLICY = """policy edges
hosts blocked = 198.51.100.0/24
allow established in,fwd
allow tcp 22 to 192.0.2.10 on eth1
allow udp 5000-5001 from 2001:db8:5::/64 port 7000 on eth1
reject tcp 25 with admin-prohibited
reject udp 25
allow tcp 2222 from blocked
allow tcp 8080 on eth1 out-on eth2 fwd
reject icmp echo-request fwd with admin-prohibited
reject icmpv6 fwd
drop out to blocked
default drop in
default drop fwd
"""


def test_verify_lab_addresses_interfaces(need_namespaces, tmp_path, capsys):
    """Policy addresses, named interfaces, source ports, rejects and dropped replies, for real."""
    need_tool("iptables-restore")
    need_tool("nft")
    policy = tmp_path / "edges.wall"
    policy.write_text(EDGES_POLICY, encoding="utf-8")
    graph = load_policy(str(policy))
    cases = {c.label: c for c in derive_probes(graph, "in").cases}
    # The firewall accepts this probe, but its output chain drops the reply.
    blocked = cases["tcp 198.51.100.1 -> 10.200.0.1:2222 on lab0"]
    assert blocked.decision.verdict == "accept"
    assert blocked.expected == "dropped"
    assert cases["tcp 10.201.0.2 -> 192.0.2.10:22 on eth1"].expected == "open"
    assert cases["udp [2001:db8:5::1]:7000 -> [fd00:201::1]:5000 on eth1"].expected == "open"
    assert cases["udp [2001:db8:5::1]:6999 -> [fd00:201::1]:5000 on eth1"].expected == "dropped"
    assert cases["tcp 10.200.0.2 -> 10.200.0.1:25 on lab0"].expected == "rejected"

    status = main(["verify", str(policy), "--target", "iptables,nftables"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    for text in ("192.0.2.10:22 on eth1", "[2001:db8:5::1]:7000", "out-on eth2"):
        assert text in captured.out
    rejected = [line.split() for line in captured.out.splitlines() if line.endswith("rejected")]
    assert {words[0] for words in rejected} == {"tcp", "udp", "icmp", "icmpv6"}


OUT_POLICY = """policy outbound
allow established in
drop out to 10.77.0.0/24
allow tcp 443 out to 10.78.0.5
reject out to 10.79.0.0/24 with admin-prohibited
reject tcp 25 out with tcp-reset
allow icmp out state related
allow icmpv6 out state related
allow out to 10.80.0.0/16
default drop out
"""


def test_probes_out_leave_firewall():
    graph = load_policy_text(OUT_POLICY)
    cases = _cases_by_label(graph, "out")
    inside = cases["tcp 10.200.0.1 -> 10.78.0.5:443 out on lab0"]
    assert inside.packet.direction == "out"
    assert inside.packet.out_interface == "lab0"
    assert inside.packet.in_interface is None
    assert inside.expected == "open"
    # The reply comes back through the input chain, which accepts established packets.
    assert inside.reply_decision is not None
    assert inside.reply_decision.chain == "input"
    assert cases["tcp 10.200.0.1 -> 10.78.0.6:443 out on lab0"].expected == "dropped"
    assert cases["tcp 10.200.0.1 -> 10.77.0.1:9 out on lab0"].expected == "dropped"
    assert cases["tcp 10.200.0.1 -> 10.81.0.0:9 out on lab0"].expected == "dropped"
    assert cases["udp 10.200.0.1 -> 10.80.0.1:9 out on lab0"].expected == "open"


def test_probes_out_reject_error_path():
    graph = load_policy_text(OUT_POLICY)
    cases = _cases_by_label(graph, "out")
    # The output chain accepts the firewall's own ICMP errors (rules 7 and 8),
    # but its default drops the TCP reset of rule 6, so the sender sees nothing.
    prohibited = cases["tcp 10.200.0.1 -> 10.79.0.1:9 out on lab0"]
    assert prohibited.decision.verdict == "reject"
    assert prohibited.expected == "rejected"
    prohibited6 = cases["udp 10.200.0.1 -> 10.79.0.1:9 out on lab0"]
    assert prohibited6.expected == "rejected"
    reset = cases["tcp 10.200.0.1 -> 10.200.0.2:25 out on lab0"]
    assert reset.decision.verdict == "reject"
    assert reset.expected == "dropped"
    assert reset.reply_decision is not None
    assert reset.reply_decision.chain == "output"
    assert reset.reply_decision.default


def test_probes_out_reply_needs_input():
    graph = load_policy_text("policy noreply\nallow tcp 22 out\ndefault drop in\n")
    cases = _cases_by_label(graph, "out")
    case = cases["tcp 10.200.0.1 -> 10.200.0.2:22 out on lab0"]
    assert case.decision.verdict == "accept"
    assert case.reply_decision is not None
    assert case.reply_decision.verdict == "drop"
    assert case.expected == "dropped"


def test_verify_out_rules_real(need_namespaces, tmp_path, capsys):
    need_tool("iptables-restore")
    need_tool("nft")
    policy = tmp_path / "outbound.wall"
    policy.write_text(OUT_POLICY, encoding="utf-8")
    status = main(["verify", str(policy), "--target", "iptables,nftables"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    assert "out (output chain): " in captured.out
    rows = {line.split("  ")[1].strip(): line.split() for line in captured.out.splitlines()
            if " out on " in line}
    allowed = rows["tcp 10.200.0.1 -> 10.78.0.5:443 out on lab0"]
    assert allowed[-2:] == ["open", "open"]
    rejected = rows["tcp 10.200.0.1 -> 10.79.0.1:9 out on lab0"]
    assert rejected[-2:] == ["rejected", "rejected"]
    silenced = rows["tcp 10.200.0.1 -> 10.200.0.2:25 out on lab0"]
    assert silenced[-2:] == ["dropped", "dropped"]
    dropped = rows["tcp 10.200.0.1 -> 10.77.0.1:9 out on lab0"]
    assert dropped[-2:] == ["dropped", "dropped"]


def _drop_443_out(target: str, files: dict[str, str]) -> dict[str, str]:
    changed = {name: text.replace("443", "444") for name, text in files.items()}
    assert changed != files, f"the {target} export has no port 443"
    return changed


def test_verify_out_detects_wrong_port(need_namespaces, capsys, tmp_path):
    need_tool("nft")
    policy = tmp_path / "outbound.wall"
    policy.write_text(OUT_POLICY, encoding="utf-8")
    status = run_verify(str(policy), ["nftables"], SourceCache(), transform=_drop_443_out)
    output = capsys.readouterr().out
    assert status == 1
    assert ("nftables out: tcp 10.200.0.1 -> 10.78.0.5:443 out on lab0: expected open, "
            "observed dropped") in output
    assert ("nftables out: tcp 10.200.0.1 -> 10.78.0.5:444 out on lab0: expected dropped, "
            "observed open") in output


def _article_without_icmp(tmp_path) -> str:
    lines = ARTICLE.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(("allow icmp ", "allow icmpv6 "))]
    assert len(kept) == len(lines) - 2
    path = tmp_path / "safesquid-outlook.wall"
    path.write_text("".join(kept), encoding="utf-8")
    return str(path)


def test_ufw_by_design_echo_request():
    graph = load_policy_text("policy quiet\nallow tcp 22\ndefault drop\n")
    cases = _cases_by_label(graph, "in")
    echo = cases["icmp 10.200.0.2 -> 10.200.0.1 on lab0"]
    assert echo.expected == "dropped"
    outcome, reason = expected_on_target(graph, echo, ufw_by_design)
    assert outcome == "open"
    assert reason == "ufw's stock before.rules accepts echo-request"
    ssh = cases["tcp 10.200.0.2 -> 10.200.0.1:22 on lab0"]
    assert expected_on_target(graph, ssh, ufw_by_design) == ("open", None)


def test_firewalld_by_design_reply():
    graph = load_policy_text("policy noreply\nallow tcp 22\ndefault drop in\ndefault drop out\n")
    case = _cases_by_label(graph, "in")["tcp 10.200.0.2 -> 10.200.0.1:22 on lab0"]
    assert case.expected == "dropped"
    outcome, reason = expected_on_target(graph, case, firewalld_by_design)
    assert outcome == "open"
    assert reason is not None
    assert reason.startswith("it accepts the reply: firewalld accepts established")


def test_verify_ufw_article(need_namespaces, tmp_path, capsys):
    need_tool("ufw")
    policy = _article_without_icmp(tmp_path)
    status = main(["verify", policy, "--target", "ufw"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    assert "MISMATCH" not in captured.out
    designed = [line for line in captured.out.splitlines() if line.startswith("by design of ufw")]
    assert ("by design of ufw: in: icmp 10.200.0.2 -> 10.200.0.1 on lab0: the policy gives "
            "dropped, ufw gives open, because ufw's stock before.rules accepts echo-request"
            ) in designed
    assert any(line.startswith("by design of ufw: fwd: icmpv6 ") for line in designed)
    assert len(designed) == 4
    assert "apart from the 4 outcomes listed above as by design of the target" in captured.out
    assert _namespaces_of_this_process() == []


def test_verify_ufw_detects_missing_port(need_namespaces, tmp_path, capsys):
    need_tool("ufw")
    policy = _article_without_icmp(tmp_path)
    status = run_verify(policy, ["ufw"], SourceCache(), transform=_drop_993)
    output = capsys.readouterr().out
    assert status == 1
    assert "ufw in: tcp 10.200.0.2 -> 10.200.0.1:993 on lab0: expected open, observed dropped" \
        in output


@pytest.mark.slow
def test_verify_firewalld_article(need_namespaces, capsys):
    for tool in ("firewalld", "firewall-cmd", "dbus-daemon", "nsenter"):
        need_tool(tool)
    status = main(["verify", str(ARTICLE), "--target", "firewalld"])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    assert "FIREWALLD" in captured.out
    assert "MISMATCH" not in captured.out
    assert "behave as the policy says on firewalld" in captured.out
    assert "993 on lab0" in captured.out
    assert _namespaces_of_this_process() == []
    leftover = subprocess.run(["pgrep", "-f", "polywall-verify-firewalld"], capture_output=True,
                              text=True, check=False).stdout
    assert leftover == ""


def test_probes_rejected_handshake_ack():
    graph = load_policy_text("policy acks\nreject established in\ndefault allow in\n")
    cases = _cases_by_label(graph, "in")
    # The SYN and the reply pass, but the connecting side's ACK is rejected.
    tcp = cases["tcp 10.200.0.2 -> 10.200.0.1:9 on lab0"]
    assert tcp.decision.verdict == "accept"
    assert tcp.expected == "rejected"
    # A UDP exchange has no third packet.
    assert cases["udp 10.200.0.2 -> 10.200.0.1:9 on lab0"].expected == "open"
    outcome, reason = expected_on_target(graph, tcp, firewalld_by_design)
    assert outcome == "open"
    assert reason is not None
    assert reason.startswith("it accepts the ACK of the TCP handshake: firewalld accepts")
