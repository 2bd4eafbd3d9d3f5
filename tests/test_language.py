"""The policy language: grammar, name resolution and the rule graph passes."""

from __future__ import annotations

import ipaddress
import json

from lark import Lark

from compiler.api import load_policy_text
from compiler.cli import main
from compiler.graph import PortRange
from exporters.iptables import IptablesExporter
from exporters.nftables import NftablesExporter, rule_statement
from grammar import grammar_text
from tests.helpers import write_policy


def _rules(text: str, chain: str = "input"):
    return load_policy_text(text).chains[chain].rules


def test_grammar_is_conflict_free_lalr():
    Lark(grammar_text(), parser="lalr", strict=True)


def test_design_one_liner():
    graph = load_policy_text("allow tcp smtp,imaps,ldaps in,fwd; default drop")
    for chain in ("input", "forward"):
        rules = graph.chains[chain].rules
        assert len(rules) == 1
        assert rules[0].protocol == "tcp"
        assert rules[0].dports == (PortRange(25, 25), PortRange(636, 636), PortRange(993, 993))
        assert rules[0].families == ("ipv4", "ipv6")
        assert graph.chains[chain].policy == "drop"
    assert graph.chains["output"].policy == "accept"


def test_service_carries_protocols():
    rules = _rules("allow domain in")
    assert [(r.protocol, r.dports) for r in rules] == [
        ("tcp", (PortRange(53, 53),)),
        ("udp", (PortRange(53, 53),)),
    ]
    only_tcp = _rules("allow tcp domain in")
    assert [r.protocol for r in only_tcp] == ["tcp"]


def test_alias_resolves_to_same_port():
    assert _rules("allow tcp smtps")[0].dports == _rules("allow tcp submissions")[0].dports
    assert _rules("allow dns")[0].dports == (PortRange(53, 53),)


def test_defined_service_and_nesting():
    rules = _rules("service rndc-all = tcp 953, udp 953\nservice mix = rndc-all, tcp 8000-8010\nallow mix")
    assert [(r.protocol, r.dports) for r in rules] == [
        ("tcp", (PortRange(953, 953), PortRange(8000, 8010))),
        ("udp", (PortRange(953, 953),)),
    ]


def test_ports_sorted_and_merged():
    rules = _rules("allow tcp 25, 22, 23, 6000-6010, 6005-6020, 24")
    assert rules[0].dports == (PortRange(22, 25), PortRange(6000, 6020))


def test_networks_merged_and_split_by_family():
    rules = _rules("allow tcp 22 from 192.0.2.0/25, 192.0.2.128/25, 2001:db8::/32")
    assert [r.families for r in rules] == [("ipv4",), ("ipv6",)]
    assert rules[0].saddr.networks == (ipaddress.ip_network("192.0.2.0/24"),)
    assert rules[1].saddr.networks == (ipaddress.ip_network("2001:db8::/32"),)


def test_rule_without_addresses_covers_both_families():
    assert _rules("allow tcp 22")[0].families == ("ipv4", "ipv6")
    assert _rules("allow icmp")[0].families == ("ipv4",)
    assert _rules("allow icmpv6")[0].families == ("ipv6",)


def test_statements_continue_after_comma():
    rules = _rules("allow tcp 22,\n    80,\n\n    443 in\n")
    assert rules[0].dports == (PortRange(22, 22), PortRange(80, 80), PortRange(443, 443))


def test_comment_lines_and_semicolons():
    graph = load_policy_text("# top\nallow tcp 22 # trailing\n; ;allow udp 53;\n")
    assert len(graph.chains["input"].rules) == 2


def test_default_directions():
    graph = load_policy_text("default reject in\ndefault drop out")
    assert graph.chains["input"].policy == "reject"
    assert graph.chains["output"].policy == "drop"
    assert graph.chains["forward"].policy == "accept"


def test_default_reject_renders_final_rule():
    graph = load_policy_text("default reject in")
    v4 = IptablesExporter().render(graph)["rules.v4"]
    assert ":INPUT DROP [0:0]" in v4
    assert v4.rstrip().splitlines()[-2] == "-A INPUT -j REJECT --reject-with icmp-port-unreachable"
    nft = NftablesExporter().render(graph)["ruleset.nft"]
    assert "reject with icmpx type port-unreachable" in nft


def test_interfaces_by_direction():
    rules = load_policy_text("allow on eth0 in,out,fwd\nallow on eth1 out-on eth+ fwd")
    assert rules.chains["input"].rules[0].in_interface == "eth0"
    assert rules.chains["output"].rules[0].out_interface == "eth0"
    assert rules.chains["output"].rules[0].in_interface is None
    forward = rules.chains["forward"].rules
    assert (forward[1].in_interface, forward[1].out_interface) == ("eth1", "eth+")
    assert rule_statement(forward[1]) == 'iifname "eth1" oifname "eth*" accept'


def test_negation_and_source_port():
    rule = _rules("allow udp 68 from !192.0.2.1 port 67")[0]
    assert rule.saddr.negated
    assert rule.sports == (PortRange(67, 67),)
    assert rule_statement(rule) == "ip saddr != 192.0.2.1 udp sport 67 udp dport 68 accept"
    lines = IptablesExporter().render(load_policy_text("allow udp 68 from !192.0.2.1 port 67"))["rules.v4"]
    assert "-A INPUT ! -s 192.0.2.1/32 -p udp -m udp --sport 67 --dport 68 -j ACCEPT" in lines


def test_negated_group_uses_helper_chain():
    text = "hosts nets = 192.0.2.0/24, 198.51.100.0/24\ndrop tcp 22 from !nets"
    v4 = IptablesExporter().render(load_policy_text(text))["rules.v4"]
    assert ":pw-input-2-1 - [0:0]" in v4
    assert "-A INPUT -p tcp -m tcp --dport 22 -j pw-input-2-1" in v4
    assert "-A pw-input-2-1 -s 192.0.2.0/24 -j RETURN" in v4
    assert "-A pw-input-2-1 -s 198.51.100.0/24 -j RETURN" in v4
    assert "-A pw-input-2-1 -j DROP" in v4


def test_states_log_limit_comment():
    rule = _rules('allow tcp 22 state new log "ssh" limit 3/minute burst 5 comment "SSH"')[0]
    assert rule.ct_states == ("new",)
    assert rule.log_prefix == "ssh "
    assert (rule.limit.rate, rule.limit.unit, rule.limit.burst) == (3, "minute", 5)
    assert rule_statement(rule) == (
        'tcp dport 22 ct state new limit rate 3/minute burst 5 packets log prefix "ssh " accept comment "SSH"'
    )


def test_reject_types():
    rule = _rules("reject tcp 113 with tcp-reset")[0]
    assert rule_statement(rule) == "tcp dport 113 reject with tcp reset"
    rule = _rules("reject with admin-prohibited")[0]
    assert rule_statement(rule) == "reject with icmpx type admin-prohibited"
    v6 = IptablesExporter().render(load_policy_text("reject with admin-prohibited"))["rules.v6"]
    assert "-j REJECT --reject-with icmp6-adm-prohibited" in v6


def test_icmp_types_by_name():
    rule = _rules("allow icmpv6 echo-request, neighbor-solicitation")[0]
    assert rule_statement(rule) == "icmpv6 type { echo-request, nd-neighbor-solicit } accept"
    v6 = IptablesExporter().render(load_policy_text("allow icmpv6 neighbor-solicitation"))["rules.v6"]
    assert "-A INPUT -p ipv6-icmp --icmpv6-type neighbour-solicitation -j ACCEPT" in v6


def test_multiport_split_at_fifteen_slots():
    ports = ", ".join(str(p) for p in range(1000, 1040, 2))
    v4 = IptablesExporter().render(load_policy_text(f"allow tcp {ports}, 2000-2005"))["rules.v4"]
    lines = [line for line in v4.splitlines() if line.startswith("-A INPUT")]
    assert len(lines) == 2
    first = ",".join(str(p) for p in range(1000, 1030, 2))
    second = ",".join(str(p) for p in range(1030, 1040, 2)) + ",2000:2005"
    assert lines[0] == f"-A INPUT -p tcp -m multiport --dports {first} -j ACCEPT"
    assert lines[1] == f"-A INPUT -p tcp -m multiport --dports {second} -j ACCEPT"


def test_include_relative_to_including_file(tmp_path, monkeypatch):
    (tmp_path / "parts").mkdir()
    write_policy(tmp_path / "parts", 'include "web.wall"\n', "all.wall")
    write_policy(tmp_path / "parts", "allow tcp http\n", "web.wall")
    write_policy(tmp_path, 'include "parts/all.wall"\nallow tcp ssh\n', "main.wall")
    monkeypatch.chdir(tmp_path)
    from compiler.api import load_policy

    graph = load_policy("main.wall")
    assert [r.source.file for r in graph.chains["input"].rules] == ["parts/web.wall", "main.wall"]


def test_policy_name_names_table():
    graph = load_policy_text("policy edge-01\nallow tcp 22")
    assert "table inet edge-01 {" in NftablesExporter().render(graph)["ruleset.nft"]


def test_json_target_prints_graph(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "policy p\nhosts lan = 192.0.2.0/24\nallow ssh from lan\n")
    assert main(["compile", "policy.wall", "-t", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["policy"] == "p"
    assert data["host_groups"]["lan"]["networks"] == ["192.0.2.0/24"]
    rule = data["chains"]["input"]["rules"][0]
    assert rule["saddr"]["groups"] == ["lan"]
    assert rule["dports"] == ["22"]
    assert rule["source"] == {"file": "policy.wall", "line": 3, "column": 1}
    assert data["services"]["ssh"]["builtin"] is True


def test_output_folder_replaced_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp 22\n")
    stale = tmp_path / "out" / "iptables" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    assert main(["compile", "policy.wall", "-t", "iptables", "-o", "out"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "iptables").iterdir()) == ["rules.v4", "rules.v6"]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []
