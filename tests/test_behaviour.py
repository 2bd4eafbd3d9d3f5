"""The article policy behaves in a real kernel as the article's hand-written rules do.

A firewall namespace runs listeners on every probed port; a client namespace
joined to it by a veth pair connects to each one. For forwarded traffic a
third namespace sits behind the firewall, which routes between the two.
"""

from __future__ import annotations

import pytest

from compiler.netlab import Lab, Probe
from tests.conftest import SAMPLES, need_tool
from tests.helpers import export

ARTICLE = SAMPLES / "safesquid-outlook.wall"
ARTICLE_TCP = [22, 25, 53, 110, 389, 465, 587, 636, 953, 993, 995,
               1023, 3268, 3269, 5222, 5269, 5280, 8080]
ARTICLE_UDP = [53, 953]
CLOSED_TCP = [21, 23, 80, 443, 3306, 8443, 5223, 8081]
CLOSED_UDP = [54, 123, 954]

# The article's commands, as its readers would type them (IPv4 only).
ARTICLE_COMMANDS = [
    "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT",
    '-A INPUT -i lo -m comment --comment "Allow loopback connections" -j ACCEPT',
    '-A INPUT -p icmp -m comment --comment "Allow Ping to work as expected" -j ACCEPT',
    "-A INPUT -p tcp -m multiport --dports 22,25,53,110,389,465,587,636,953,993,995 -j ACCEPT",
    "-A INPUT -p tcp -m multiport --dports 1023,3268,3269,5222,5269,5280,8080 -j ACCEPT",
    "-A INPUT -p udp -m multiport --dports 53,953 -j ACCEPT",
    "-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
    '-A FORWARD -i lo -m comment --comment "Allow loopback connections" -j ACCEPT',
    '-A FORWARD -p icmp -m comment --comment "Allow Ping to work as expected" -j ACCEPT',
    "-A FORWARD -p tcp -m multiport --dports 22,25,53,110,389,465,587,636,953,993,995 -j ACCEPT",
    "-A FORWARD -p tcp -m multiport --dports 1023,3268,3269,5222,5269,5280,8080 -j ACCEPT",
    "-A FORWARD -p udp -m multiport --dports 53,953 -j ACCEPT",
    "-P INPUT DROP",
    "-P FORWARD DROP",
]


def _probes(address: str) -> list[Probe]:
    probes = [Probe("tcp", address, port) for port in ARTICLE_TCP + CLOSED_TCP]
    probes += [Probe("udp", address, port) for port in ARTICLE_UDP + CLOSED_UDP]
    probes.append(Probe("icmp", address))
    return probes


def _expected(probe: Probe) -> str:
    if probe.protocol == "icmp":
        return "open"
    opened = ARTICLE_TCP if probe.protocol == "tcp" else ARTICLE_UDP
    return "open" if probe.port in opened else "dropped"


def _load(lab: Lab, namespace: str, target: str) -> None:
    files = export(ARTICLE, target)
    if target == "iptables":
        lab.run(namespace, ["iptables-restore"], input=files["rules.v4"])
        lab.run(namespace, ["ip6tables-restore"], input=files["rules.v6"])
    else:
        lab.run(namespace, ["nft", "-f", "-"], input=files["ruleset.nft"])


def _load_article(lab: Lab, namespace: str) -> None:
    for command in ARTICLE_COMMANDS:
        lab.run(namespace, ["sh", "-c", f"iptables {command}"])


def _input_outcomes(load) -> dict[Probe, str]:
    with Lab() as lab:
        firewall = lab.namespace("fw")
        client = lab.namespace("client")
        link = lab.link(client, firewall)
        lab.serve(firewall, tcp=ARTICLE_TCP + CLOSED_TCP, udp=ARTICLE_UDP + CLOSED_UDP)
        load(lab, firewall)
        return lab.probe(client, _probes(link.b4) + _probes(link.b6))


def _forward_outcomes(load) -> dict[Probe, str]:
    with Lab() as lab:
        client = lab.namespace("client")
        router = lab.namespace("router")
        server = lab.namespace("server")
        outside = lab.link(client, router)
        inside = lab.link(server, router)
        lab.enable_forwarding(router)
        lab.route(client, outside.b4, outside.b6)
        lab.route(server, inside.b4, inside.b6)
        lab.serve(server, tcp=ARTICLE_TCP + CLOSED_TCP, udp=ARTICLE_UDP + CLOSED_UDP)
        load(lab, router)
        return lab.probe(client, _probes(inside.a4) + _probes(inside.a6))


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_article_input_ports(target, need_namespaces):
    need_tool("iptables-restore" if target == "iptables" else "nft")
    outcomes = _input_outcomes(lambda lab, ns: _load(lab, ns, target))
    wrong = {str(p): (o, _expected(p)) for p, o in outcomes.items() if o != _expected(p)}
    assert wrong == {}


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_article_forward_ports(target, need_namespaces):
    need_tool("iptables-restore" if target == "iptables" else "nft")
    outcomes = _forward_outcomes(lambda lab, ns: _load(lab, ns, target))
    wrong = {str(p): (o, _expected(p)) for p, o in outcomes.items() if o != _expected(p)}
    assert wrong == {}


def test_article_rules_match_polywall(need_namespaces):
    """Over IPv4, the hand-written rules and the compiled policy give the same outcome per probe."""
    need_tool("iptables")
    article = _input_outcomes(_load_article)
    compiled = _input_outcomes(lambda lab, ns: _load(lab, ns, "iptables"))
    by_text = {str(p).replace(p.address, "FW"): o for p, o in compiled.items() if ":" not in p.address}
    article_by_text = {str(p).replace(p.address, "FW"): o for p, o in article.items() if ":" not in p.address}
    assert article_by_text == by_text
    assert "open" in article_by_text.values()
    assert "dropped" in article_by_text.values()
