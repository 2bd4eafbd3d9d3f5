"""Syntax of the PAN-OS, FortiOS and pf output, read back by real parsers where they exist.

- PAN-OS: the XML loads with pan-os-python into rule objects whose fields
  match the policy, and the set commands (strict reader) describe the same
  rules;
- FortiOS: the script parses with anyconfig's fortios backend after a strict
  check of every line, and every policy entry is found again in order;
- pf: the strict reader accounts for every line and finds the layout that
  keeps first-match order.
"""

from __future__ import annotations

import pytest

from compiler import capabilities
from compiler.api import load_policy
from compiler.plugins import exporters
from exporters import perimeter
from tests.conftest import sample_files
from tests.helpers import export, write_policy
from tests.test_vendor2_readers import (
    forti_atoms,
    pan_atoms,
    pf_sections,
    read_fortios,
    read_pan_set,
    read_pan_xml,
    read_pf,
)

COMMON = """\
policy features
hosts web = 192.0.2.10, 192.0.2.11, 2001:db8::10
hosts admins = 198.51.100.0/24
service app = tcp 8000-8010, tcp 9000
allow established in,fwd
allow on lo in,fwd comment "loopback"
allow tcp ssh from admins to web log comment "SSH from admins"
allow tcp http, https, 8443, app to web, 203.0.113.5
allow udp domain from any port 53, 1024-2048 to web
drop tcp 23 from 203.0.113.0/25 out
"""
# Each target's feature policy: the common part plus what only that target can express.
PAN_FEATURES = (
    COMMON
    + """\
allow icmp in
allow icmpv6 in
reject tcp 25 with tcp-reset
reject udp 69 to web with admin-prohibited
allow out
default drop
"""
)
FORTI_FEATURES = (
    COMMON
    + """\
allow icmp echo-request, destination-unreachable in
allow icmpv6 echo-request, neighbor-solicitation, mld2-listener-report in
reject tcp 25 with tcp-reset
reject udp 69 to web
allow out log
default drop
"""
)
PF_FEATURES = """\
policy features
hosts web = 192.0.2.10, 192.0.2.11, 2001:db8::10
hosts admins = 198.51.100.0/24
service app = tcp 8000-8010, tcp 9000
allow established in,fwd
allow on lo comment "loopback"
allow tcp ssh from admins to web log comment "SSH from admins"
allow tcp http, https, 8443, app to web, 203.0.113.5
allow udp domain from any port 53, 1024-2048 to web
allow icmp echo-request, destination-unreachable in limit 10/second
allow icmpv6 echo-request, neighbor-solicitation, mld2-listener-report in
drop from !admins on eth0 in
drop tcp 25 to !web in
reject tcp 113 with tcp-reset
reject udp 69 with admin-prohibited
allow tcp 443 on eth1 out-on eth0 fwd
allow udp 53 fwd
drop tcp 23 from 203.0.113.0/25 out
allow out
default drop
"""
FEATURES = {"paloalto": PAN_FEATURES, "fortigate": FORTI_FEATURES, "pf": PF_FEATURES}
TARGETS = tuple(FEATURES)


def _problems(graph, target) -> list:
    exporter = exporters()[target]
    return capabilities.check(graph, target, frozenset(exporter.capabilities)) + exporter.check(
        graph
    )


def _policies(target: str) -> list:
    expressible = [
        pytest.param(p, id=p.stem)
        for p in sample_files()
        if not _problems(load_policy(str(p)), target)
    ]
    return ["features", *expressible]


def _path(param, target, tmp_path):
    return write_policy(tmp_path, FEATURES[target]) if param == "features" else param


def _graph(path):
    return load_policy(str(path))


@pytest.mark.parametrize("target", TARGETS)
def test_feature_policy_compiles(target, tmp_path):
    graph = _graph(write_policy(tmp_path, FEATURES[target]))
    assert _problems(graph, target) == []


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", sample_files(), ids=[p.stem for p in sample_files()])
def test_refused_sample_errors_name_target(sample, target):
    for problem in _problems(_graph(sample), target):
        assert target in problem.message
        assert problem.source is not None, problem.message
        assert problem.source.line > 0


def test_article_sample_compiles_everywhere():
    (article,) = [p for p in sample_files() if p.stem == "safesquid-outlook"]
    for target in TARGETS:
        assert _problems(_graph(article), target) == [], target


# PAN-OS


def _expected_pan_rules(graph) -> list[dict]:
    """Return the expected fields of each PAN-OS rule, in order, from the perimeter filters."""
    expected = []
    for side_filter in perimeter.perimeter_filters(graph, stateful=True):
        zones = ("untrust", "trust") if side_filter.side == "inbound" else ("trust", "untrust")
        for entry in side_filter.entries:
            if entry.skip_reason is not None:
                continue
            rule = entry.rule
            action = {"accept": "allow", "drop": "drop"}.get(rule.action)
            if rule.action == "reject":
                action = "reset-client" if rule.reject_with == "tcp-reset" else "drop"
            expected.append(
                {
                    "zones": zones,
                    "action": action,
                    "unreachable": rule.action == "reject" and rule.reject_with != "tcp-reset",
                    "log_end": rule.log,
                    "description": rule.comment,
                }
            )
        default = {"accept": "allow", "drop": "drop"}[side_filter.default]
        expected.append(
            {
                "zones": zones,
                "action": default,
                "unreachable": False,
                "log_end": False,
                "description": None,
            }
        )
    return expected


@pytest.mark.parametrize("param", _policies("paloalto"))
def test_pan_xml_loads_with_pan_os_python(param, tmp_path):
    path = _path(param, "paloalto", tmp_path)
    files = export(path, "paloalto")
    config = read_pan_xml(files["paloalto.xml"])
    expected = _expected_pan_rules(_graph(path))
    assert len(config.rules) == len(expected)
    for rule, wanted in zip(config.rules, expected):
        assert (rule.from_zone, rule.to_zone) == wanted["zones"], rule.name
        assert rule.action == wanted["action"], rule.name
        assert rule.icmp_unreachable == wanted["unreachable"], rule.name
        assert rule.log_end == wanted["log_end"], rule.name
        assert rule.description == wanted["description"], rule.name


@pytest.mark.parametrize("param", _policies("paloalto"))
def test_pan_set_matches_xml(param, tmp_path):
    files = export(_path(param, "paloalto", tmp_path), "paloalto")
    from_set = read_pan_set(files["paloalto.set"])
    from_xml = read_pan_xml(files["paloalto.xml"])
    assert [r.name for r in from_set.rules] == [r.name for r in from_xml.rules]
    assert pan_atoms(from_set) == pan_atoms(from_xml)
    assert from_set.deleted_rules == [r.name for r in from_set.rules]


def test_pan_feature_entries(tmp_path):
    files = export(write_policy(tmp_path, PAN_FEATURES), "paloalto")
    inbound = pan_atoms(read_pan_xml(files["paloalto.xml"]))[("untrust", "trust")]
    ssh = [a for a in inbound if a.dport == (22, 22)]
    assert {a.source for a in ssh} == {"198.51.100.0/24"}
    assert {a.destination for a in ssh} == {"192.0.2.10/31"}
    assert all(a.log for a in ssh)
    assert {a.sport for a in inbound if a.protocol == "udp" and a.dport == (53, 53)} == {
        (53, 53),
        (1024, 2048),
    }
    assert any(a.protocol == "icmp6" for a in inbound)
    assert [a.action for a in inbound if a.dport == (25, 25)] == ["reject"]


def test_pan_ipv4_only_rule_names_ipv4_any(tmp_path):
    path = write_policy(tmp_path, "allow tcp 22 from 192.0.2.0/24\nallow udp 53 to 2001:db8::1\n")
    config = read_pan_xml(export(path, "paloalto")["paloalto.xml"])
    assert config.rules[0].sources != ["any"]
    assert config.rules[1].destinations != ["any"]


# FortiOS


@pytest.mark.parametrize("param", _policies("fortigate"))
def test_fortios_parses_and_finds_every_policy(param, tmp_path):
    path = _path(param, "fortigate", tmp_path)
    text = export(path, "fortigate")["fortigate.conf"]
    config = read_fortios(text, tmp_path)
    graph = _graph(path)
    written: list = []
    for side_filter in perimeter.perimeter_filters(graph, stateful=True):
        written += [e.rule for e in side_filter.entries if e.skip_reason is None]
        written.append(None)  # the direction's default
    assert len(config.policies) == len(written)
    ids = [int(p["edit"]) for p in config.policies]
    assert ids == sorted(ids)
    names = [p["name"] for p in config.policies]
    assert len(set(names)) == len(names)
    for policy, rule in zip(config.policies, written):
        assert policy["schedule"] == "always"
        if rule is None:
            assert policy["service"] == "ALL"
            assert "default" in policy["comments"]
            continue
        assert policy["logtraffic"] == ("all" if rule.log else "disable")
        assert policy["action"] == ("accept" if rule.action == "accept" else "deny")
        assert ("send-deny-packet" in policy) == (rule.action == "reject")
        assert policy["comments"].startswith(f"{path.name}:{rule.source.line}:")


def test_fortios_families(tmp_path):
    text = export(write_policy(tmp_path, FORTI_FEATURES), "fortigate")["fortigate.conf"]
    config = read_fortios(text, tmp_path)
    http = [p for p in config.policies if ":8: " in p["comments"]]
    assert len(http) == 2
    assert sorted(("srcaddr" in p, "srcaddr6" in p) for p in http) == [(False, True), (True, False)]
    icmp6 = [p for p in config.policies if ":12: " in p["comments"]]
    assert icmp6
    assert "srcaddr" not in icmp6[0]
    assert icmp6[0]["srcaddr6"] == "all"
    default = config.policies[-1]
    assert (default["srcaddr"], default["srcaddr6"], default["service"]) == ("all", "all", "ALL")


def test_fortios_feature_entries(tmp_path):
    text = export(write_policy(tmp_path, FORTI_FEATURES), "fortigate")["fortigate.conf"]
    pairs = forti_atoms(read_fortios(text, tmp_path))
    inbound = pairs[("port1", "port2")]
    assert {a.icmp_type for a in inbound if a.protocol == "icmp6"} == {128, 135, 143}
    assert [a.action for a in inbound if a.dport == (69, 69)] == ["reject"] * 2
    outbound = pairs[("port2", "port1")]
    assert outbound[0].action == "deny"
    assert outbound[0].source == "203.0.113.0/25"
    assert outbound[-2].log
    assert outbound[-2].action == "permit"


def test_fortios_settings(tmp_path):
    text = FORTI_FEATURES + (
        "target fortigate { outside-interface = wan1; inside-interface = lan\n"
        "  first-policy-id = 50 }\n"
    )
    config = read_fortios(
        export(write_policy(tmp_path, text), "fortigate")["fortigate.conf"], tmp_path
    )
    assert config.policies[0]["edit"] == "50"
    assert {(p["srcintf"], p["dstintf"]) for p in config.policies} == {
        ("wan1", "lan"),
        ("lan", "wan1"),
    }


# pf


@pytest.mark.parametrize("param", _policies("pf"))
def test_pf_reads_back_in_layout(param, tmp_path):
    path = _path(param, "pf", tmp_path)
    config = read_pf(export(path, "pf")["pf.conf"])
    sections = pf_sections(config)
    graph = _graph(path)
    for chain, rules in (
        ("input", sections.incoming),
        ("forward", sections.forward),
        ("output", sections.outgoing),
    ):
        kept = [
            r
            for r in graph.chains[chain].rules
            if not (set(r.ct_states) and set(r.ct_states) <= {"established", "related"})
            and not (config.skip and "lo" in (r.in_interface, r.out_interface))
        ]
        assert len(rules) == len(kept), chain
        for pf_rule, rule in zip(rules, kept):
            assert pf_rule.log == rule.log
            assert pf_rule.keep_state == (rule.action == "accept")
    for direction, chain in (("in", "input"), ("out", "output")):
        default = sections.defaults[direction]
        assert default.action.startswith(
            "pass" if graph.chains[chain].policy == "accept" else "block"
        )


def test_pf_feature_rules(tmp_path):
    config = read_pf(export(write_policy(tmp_path, PF_FEATURES), "pf")["pf.conf"])
    sections = pf_sections(config)
    assert config.skip == ["lo"]
    negated = [r for r in sections.incoming if r.source_negated]
    assert [r.interface for r in negated] == ["eth0"]
    to_web = [r for r in sections.incoming if r.destination_negated]
    assert [r.family for r in to_web] == ["inet", "inet6"]
    assert all(" to ! <web> " in r.text for r in to_web)
    limited = [r for r in sections.incoming if r.rate]
    assert [r.rate for r in limited] == ["10/1"]
    forward = sections.forward
    assert [(r.interface, r.received_on) for r in forward] == [("eth0", "eth1"), (None, "any")]
    assert [
        r.action for r in sections.incoming if r.protocol == "udp" and r.dports == [(69, 69)]
    ] == ["block return-icmp(13, 1)"]
    assert any(r.action == "block return-rst" for r in sections.incoming)


def test_pf_without_plain_loopback_filters_lo(tmp_path):
    path = write_policy(tmp_path, "allow tcp 22 on lo\ndefault drop\n")
    config = read_pf(export(path, "pf")["pf.conf"])
    assert config.skip == []
    assert [r.interface for r in pf_sections(config).incoming] == ["lo"]


def test_pf_loopback_not_skipped_when_out_drops(tmp_path):
    path = write_policy(tmp_path, "allow on lo\ndefault drop in\ndefault drop out\n")
    config = read_pf(export(path, "pf")["pf.conf"])
    assert config.skip == []


def test_pf_reject_default(tmp_path):
    path = write_policy(tmp_path, "allow tcp 22\ndefault reject in\n")
    config = read_pf(export(path, "pf")["pf.conf"])
    assert pf_sections(config).defaults["in"].action == "block return"


@pytest.mark.parametrize("target", TARGETS)
def test_names_survive_unrelated_rule(tmp_path, target):
    def lines(text: str) -> set[str]:
        return {
            line
            for line in text.splitlines()
            if "a.wall:" not in line
            and not line.lstrip().startswith(("edit ", "move ", "set comments"))
        }

    before = export(write_policy(tmp_path, FEATURES[target], "a.wall"), target)
    changed = FEATURES[target].replace(
        "allow tcp ssh", "drop udp 5000 from 192.0.2.99\nallow tcp ssh"
    )
    after = export(write_policy(tmp_path, changed, "a.wall"), target)
    for name in before:
        assert lines(before[name]) - lines(after[name]) == set(), name
        assert lines(after[name]) - lines(before[name]), name
