"""Syntax of the Cisco ASA, Cisco IOS and Juniper SRX output.

IOS entries are parsed by the cisco-acl package; ASA and SRX output, for
which no offline parser exists, is read back by the strict readers in
test_vendor_readers, which fail on any line they cannot account for.
"""

from __future__ import annotations

import pytest

from compiler import capabilities
from compiler.api import load_policy
from compiler.plugins import exporters
from tests.conftest import sample_files
from tests.helpers import export, write_policy
from tests.test_vendor_readers import IOS_ICMP, read_asa, read_ios, read_srx

cisco_acl = pytest.importorskip("cisco_acl", reason="needs the cisco-acl package (test extra)")

# Every feature the three targets share, on both address families.
FEATURES = """\
policy features
hosts web = 192.0.2.10, 192.0.2.11, 2001:db8::10
hosts admins = 198.51.100.0/24
service app = tcp 8000-8010, tcp 9000
allow established in,fwd
allow on lo in,fwd comment "loopback"
allow tcp ssh from admins to web log comment "SSH from admins"
allow tcp http, https, 8443, app to web, 203.0.113.5
allow udp domain from any port 53, 1024-2048 to web
allow icmp echo-request, destination-unreachable in
allow icmpv6 echo-request, neighbor-solicitation, mld2-listener-report in
drop tcp 23 from 203.0.113.0/25 out
allow out
default drop
"""

TARGETS = ("cisco-asa", "cisco-ios", "juniper-srx")


def _problems(path, target) -> list:
    exporter = exporters()[target]
    graph = load_policy(str(path))
    found = capabilities.check(graph, target, frozenset(exporter.capabilities))
    return found + exporter.check(graph)


def _samples_for(target: str) -> list:
    """Return the samples the target can express; the others are checked for their errors."""
    return [p for p in sample_files() if not _problems(p, target)]


def _policy_params(target: str) -> list:
    return ["features", *(pytest.param(p, id=p.stem) for p in _samples_for(target))]


def _path(param, tmp_path):
    return write_policy(tmp_path, FEATURES) if param == "features" else param


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", sample_files(), ids=[p.stem for p in sample_files()])
def test_refused_sample_errors_name_target(sample, target):
    for problem in _problems(sample, target):
        assert problem.message.startswith(f"{target} cannot express") or target in problem.message
        assert problem.source is not None, problem.message
        assert problem.source.line > 0


def test_article_sample_compiles_everywhere():
    article = [p for p in sample_files() if p.stem == "safesquid-outlook"]
    assert article, "the article sample is missing"
    for target in TARGETS:
        assert _problems(article[0], target) == [], target


@pytest.fixture
def ios_path(request, tmp_path):
    return _path(request.param, tmp_path)


@pytest.fixture
def asa_path(request, tmp_path):
    return _path(request.param, tmp_path)


@pytest.fixture
def srx_path(request, tmp_path):
    return _path(request.param, tmp_path)


def pytest_generate_tests(metafunc):
    for fixture, target in (
        ("ios_path", "cisco-ios"),
        ("asa_path", "cisco-asa"),
        ("srx_path", "juniper-srx"),
    ):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, _policy_params(target), indirect=True)


def test_ios_entries_parse_with_cisco_acl(ios_path):
    config = read_ios(export(ios_path, "cisco-ios")["cisco-ios.cfg"])
    checked = 0
    for name, family in config.families.items():
        if family != "ipv4":
            continue
        for line, atom in zip(config.entries[name], config.acls[name]):
            ace = cisco_acl.Ace(line, platform="ios")
            assert ace.action == atom.action, line
            assert ace.protocol.name == atom.protocol, line
            source = None if ace.srcaddr.line == "any" else ace.srcaddr.prefix
            target = None if ace.dstaddr.line == "any" else ace.dstaddr.prefix
            assert source == atom.source, line
            assert target == atom.destination, line
            words = set(ace.option.line.split())
            expected = {"established"} if atom.established else set()
            expected |= {"log"} if atom.log else set()
            if atom.icmp_type is not None:
                expected |= {word for word, code in IOS_ICMP.items() if code == atom.icmp_type}
            assert words == expected, line
            checked += 1
    assert checked > 0


def test_ios_ports_match_cisco_acl(ios_path):
    config = read_ios(export(ios_path, "cisco-ios")["cisco-ios.cfg"])
    for name, family in config.families.items():
        if family != "ipv4":
            continue
        for line, atom in zip(config.entries[name], config.acls[name]):
            ace = cisco_acl.Ace(line, platform="ios")
            if atom.dport is not None:
                assert ace.dstport.items == sorted(set(atom.dport)), line
            if atom.sport is not None:
                assert ace.srcport.items == sorted(set(atom.sport)), line


def test_ios_binds_both_families(ios_path):
    config = read_ios(export(ios_path, "cisco-ios")["cisco-ios.cfg"])
    assert config.bindings == {
        "GigabitEthernet0/0": {"ipv4": "outside_in", "ipv6": "outside_in6"},
        "GigabitEthernet0/1": {"ipv4": "inside_in", "ipv6": "inside_in6"},
    }


def test_ios_acls_end_with_default(ios_path):
    config = read_ios(export(ios_path, "cisco-ios")["cisco-ios.cfg"])
    for name, atoms in config.acls.items():
        last = atoms[-1]
        assert (last.protocol, last.source, last.destination) == ("ip", None, None), name


def test_asa_output_reads_back(asa_path):
    config = read_asa(export(asa_path, "cisco-asa")["cisco-asa.cfg"])
    assert config.bindings == {"outside_in": "outside", "inside_in": "inside"}
    for name, atoms in config.acls.items():
        assert atoms, name
        assert (atoms[-1].protocol, atoms[-1].source, atoms[-1].destination) == ("ip", None, None)


def test_srx_output_reads_back(srx_path):
    config = read_srx(export(srx_path, "juniper-srx")["juniper-srx.set"])
    assert set(config.zone_pairs) == {("untrust", "trust"), ("trust", "untrust")}
    for pair, names in config.policy_names.items():
        assert len(names) == len(set(names)), pair
        last = config.zone_pairs[pair][-1]
        assert (last.protocol, last.source, last.destination) == ("ip", None, None)


def test_feature_policy_asa_entries(tmp_path):
    config = read_asa(export(write_policy(tmp_path, FEATURES), "cisco-asa")["cisco-asa.cfg"])
    inbound = config.acls["outside_in"]
    ssh = [a for a in inbound if a.dport == (22, 22)]
    assert {a.source for a in ssh} == {"198.51.100.0/24"}
    assert {a.destination for a in ssh} == {"192.0.2.10/31"}
    assert all(a.log for a in ssh)
    assert any(a.protocol == "icmp6" and a.icmp_type == 143 for a in inbound)
    assert {a.sport for a in inbound if a.protocol == "udp"} == {(53, 53), (1024, 2048)}


def test_feature_policy_ios_established(tmp_path):
    config = read_ios(export(write_policy(tmp_path, FEATURES), "cisco-ios")["cisco-ios.cfg"])
    first = config.acls["outside_in"][0]
    assert (first.action, first.protocol, first.established) == ("permit", "tcp", True)


def test_feature_policy_srx_outbound(tmp_path):
    config = read_srx(export(write_policy(tmp_path, FEATURES), "juniper-srx")["juniper-srx.set"])
    outbound = config.zone_pairs[("trust", "untrust")]
    assert outbound[0].action == "deny"
    assert outbound[0].source == "203.0.113.0/25"
    assert outbound[0].dport == (23, 23)
    assert outbound[-1].action == "permit"


def test_settings_rename_acls_and_zones(tmp_path):
    text = FEATURES + (
        "target cisco-ios { inbound-acl = OUT4; inbound-acl6 = OUT6\n"
        '  outside-interface = "GigabitEthernet0/0/1.100" }\n'
        "target cisco-asa { inbound-acl = OUTSIDE_IN; outside-interface = wan }\n"
        "target juniper-srx { outside-zone = internet; inside-zone = lan }\n"
    )
    path = write_policy(tmp_path, text)
    ios = read_ios(export(path, "cisco-ios")["cisco-ios.cfg"])
    assert ios.bindings["GigabitEthernet0/0/1.100"] == {"ipv4": "OUT4", "ipv6": "OUT6"}
    asa = read_asa(export(path, "cisco-asa")["cisco-asa.cfg"])
    assert asa.bindings["OUTSIDE_IN"] == "wan"
    srx = read_srx(export(path, "juniper-srx")["juniper-srx.set"])
    assert set(srx.zone_pairs) == {("internet", "lan"), ("lan", "internet")}


def test_srx_reject_policy(tmp_path):
    path = write_policy(tmp_path, "reject tcp 25 with tcp-reset\nreject udp 69\ndefault reject\n")
    config = read_srx(export(path, "juniper-srx")["juniper-srx.set"])
    actions = [a.action for a in config.zone_pairs[("untrust", "trust")]]
    assert actions == ["reject", "reject", "reject"]


def _without_references(text: str) -> set[str]:
    """Return the output lines other than those that quote a policy line number."""
    return {line for line in text.splitlines() if "a.wall:" not in line}


@pytest.mark.parametrize("target", TARGETS)
def test_names_survive_unrelated_rule(tmp_path, target):
    before = next(iter(export(write_policy(tmp_path, FEATURES, "a.wall"), target).values()))
    changed = FEATURES.replace("allow tcp ssh", "drop udp 5000 from 192.0.2.99\nallow tcp ssh")
    after = next(iter(export(write_policy(tmp_path, changed, "a.wall"), target).values()))
    added = _without_references(after) - _without_references(before)
    removed = _without_references(before) - _without_references(after)
    assert added
    assert removed == set()
