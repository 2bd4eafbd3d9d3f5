"""Differential property test: the evaluator and the kernel agree on random policies and packets.

Hypothesis writes random policy text from the language's features (allow,
drop and reject with their reject types; tcp, udp, icmp or no protocol; ports
and port ranges; addresses of both families, negated addresses and a negated
group of both families; the directions in and fwd; established rules). The
text goes through the real pipeline (``load_policy_text``), the iptables or
nftables export is loaded into a lab, and random packets are sent through it.
Every outcome must be the evaluator's.

One lab per target serves every example of a test: each example replaces
the rules (iptables-restore replaces the filter tables, and for nftables the
lab flushes the ruleset first), moves the lab to a fresh conntrack zone and
closes every TCP socket left over, so that no connection of an earlier
example decides a later packet.

The CI run is derandomized and bounded. ``python -m bench.differential
--long`` runs many more examples with random seeds; it sets the environment
variables read below.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from compiler import evaluate as evaluate_module
from compiler.api import load_policy_text
from compiler.errors import PolicyError
from compiler.graph import AddressMatch, RuleGraph
from compiler.netlab import Lab
from compiler.packet import IpAddress, Packet
from compiler.probes import ECHO_REQUEST, ICMP_PROTOCOL, plan_lab, probe_case
from compiler.verify import TOOLS, TargetLab, export_targets
from tests.conftest import need_tool, require

TARGETS = ("iptables", "nftables")
# Examples per target in the default run. An example took 0.4 to 1.5 s on the
# machine the test was written on, so both targets together take about 1.5
# minutes (an estimate). The long run raises it.
EXAMPLES = int(os.environ.get("POLYWALL_DIFFERENTIAL_EXAMPLES", "50"))
# The long run sets this to draw a new random seed on every run.
RANDOM_SEED = os.environ.get("POLYWALL_DIFFERENTIAL_RANDOM", "") == "1"
PACKETS_PER_EXAMPLE = 8
PROBE_TIMEOUT = 1.0

# The lab's two links, lab0 and lab1, as verify plans them for a policy
# without networks: 10.200.0.0/24 and fd00:200::/64, 10.201.0.0/24 and fd00:201::/64.
PLAN = plan_lab(load_policy_text("policy lab\n"), "fwd")
LINKS = PLAN.interfaces
# Hosts that policies and packets share, so that networks and packets meet at
# their edges: inside 10.50.0.0/16 and fd00:50::/48, which overlap no link.
HOSTS4 = [f"10.50.{a}.{b}" for a in (0, 1, 2) for b in (0, 1, 2, 127, 128, 254, 255)]
HOSTS6 = [f"fd00:50:0:{a}::{b}" for a in (0, 1, 2) for b in ("0", "1", "2", "ff", "100", "ffff")]
PREFIXES = {4: (16, 22, 23, 24, 25, 31, 32), 6: (48, 56, 63, 64, 120, 127, 128)}
# A host group of both families, for a negated group.
MIXED_GROUP = ("10.50.1.0/24", "fd00:50:0:1::/64")
PORTS = (21, 22, 23, 79, 80, 81, 442, 443, 444, 1023, 1024, 2000)
REJECT_TYPES = ("port-unreachable", "host-unreachable", "admin-prohibited")


@dataclass(frozen=True)
class Example:
    """One generated policy text and the packets to send through its export."""

    text: str
    packets: tuple[Packet, ...]


# Policy text


def _network_text(draw, version: int) -> str:
    host = draw(st.sampled_from(HOSTS4 if version == 4 else HOSTS6))
    prefix = draw(st.sampled_from(PREFIXES[version]))
    return str(ipaddress.ip_network(f"{host}/{prefix}", strict=False))


def _address_list(draw, versions: tuple[int, ...]) -> str:
    """Return an address list of the rule's families: one family, or both in every list."""
    if versions == (4, 6):
        kind = draw(st.sampled_from(["group", "negated group", "pair"]))
        if kind == "pair":
            return f"{_network_text(draw, 4)}, {_network_text(draw, 6)}"
        return "mixed" if kind == "group" else "!mixed"
    version = versions[0]
    if draw(st.integers(0, 2)) == 0:
        return "!" + _network_text(draw, version)
    return ", ".join(_network_text(draw, version) for _ in range(draw(st.integers(1, 2))))


def _port_list(draw) -> str:
    items = []
    for _ in range(draw(st.integers(1, 2))):
        low, high = sorted(draw(st.lists(st.sampled_from(PORTS), min_size=2, max_size=2)))
        items.append(str(low) if low == high or draw(st.booleans()) else f"{low}-{high}")
    return ", ".join(items)


@st.composite
def rule_texts(draw) -> str:
    action = draw(st.sampled_from(["allow", "drop", "reject"]))
    directions = draw(st.sampled_from(["in", "fwd", "in,fwd"]))
    if draw(st.integers(0, 9)) == 0:
        return f"{action} established {directions}"
    protocol = draw(st.sampled_from([None, "tcp", "udp", "icmp"]))
    # icmp rules match IPv4 only, so their addresses are IPv4.
    versions = (4,) if protocol == "icmp" else draw(st.sampled_from([(4,), (6,), (4, 6)]))
    words = [action]
    if protocol is not None:
        words.append(protocol)
    has_ports = protocol in ("tcp", "udp")
    destination_ports = has_ports and draw(st.booleans())
    if destination_ports:
        words.append(_port_list(draw))
    for side in ("from", "to"):
        if draw(st.booleans()):
            words += [side, _address_list(draw, versions)]
            # Destination ports come either after the protocol or after "to", never both.
            allowed = has_ports and not (side == "to" and destination_ports)
            if allowed and draw(st.integers(0, 3)) == 0:
                words += ["port", _port_list(draw)]
    words.append(directions)
    if action == "reject" and draw(st.booleans()):
        choices = REJECT_TYPES + (("tcp-reset",) if protocol == "tcp" else ())
        words += ["with", draw(st.sampled_from(choices))]
    return " ".join(words)


@st.composite
def policy_texts(draw) -> str:
    lines = ["policy differential", f"hosts mixed = {', '.join(MIXED_GROUP)}"]
    lines += draw(st.lists(rule_texts(), min_size=1, max_size=6))
    for direction in ("in", "fwd"):
        lines.append(f"default {draw(st.sampled_from(['allow', 'drop', 'reject']))} {direction}")
    return "\n".join(lines) + "\n"


# Packets


def _host(draw, version: int) -> IpAddress:
    return ipaddress.ip_address(draw(st.sampled_from(HOSTS4 if version == 4 else HOSTS6)))


@st.composite
def packets(draw) -> Packet:
    direction = draw(st.sampled_from(["in", "fwd"]))
    family = draw(st.sampled_from(["ipv4", "ipv6"]))
    version = 4 if family == "ipv4" else 6
    protocol = draw(st.sampled_from(["tcp", "udp", ICMP_PROTOCOL[family]]))
    in_interface = draw(st.sampled_from(LINKS))
    out_interface = next(name for name in LINKS if name != in_interface)
    source = draw(st.sampled_from([PLAN.side_address(in_interface, family), _host(draw, version)]))
    if direction == "in":
        own = PLAN.firewall_address(in_interface, family)
    else:
        own = PLAN.side_address(out_interface, family)
    destination = draw(st.sampled_from([own, _host(draw, version)]))
    is_icmp = protocol in ECHO_REQUEST
    return Packet(
        protocol=protocol,
        source=source,
        destination=destination,
        source_port=None if is_icmp else draw(st.sampled_from((None, *PORTS))),
        destination_port=None if is_icmp else draw(st.sampled_from(PORTS)),
        icmp_type=ECHO_REQUEST[protocol] if is_icmp else None,
        direction=direction,
        in_interface=in_interface,
        out_interface=out_interface if direction == "fwd" else None,
    )


def _connection(packet: Packet) -> tuple:
    return (packet.protocol, packet.source, packet.source_port, packet.destination,
            packet.destination_port)


def unique_connections(found: list[Packet]) -> tuple[Packet, ...]:
    """Give port-less TCP and UDP packets a source port, and keep one packet per connection.

    Two packets of one connection in one example would share a conntrack
    entry, so the second would not be new.
    """
    kept: dict[tuple, Packet] = {}
    for number, packet in enumerate(found):
        if packet.source == packet.destination:
            continue
        if packet.protocol in ("tcp", "udp") and packet.source_port is None:
            packet = replace(packet, source_port=30000 + number)
        kept.setdefault(_connection(packet), packet)
    return tuple(kept.values())


@st.composite
def examples(draw) -> Example:
    text = draw(policy_texts())
    found = draw(st.lists(packets(), min_size=1, max_size=PACKETS_PER_EXAMPLE))
    return Example(text, unique_connections(found))


# The lab


class ZonedLab:
    """A TargetLab whose firewall moves to a fresh conntrack zone on every load."""

    def __init__(self, target_lab: TargetLab):
        self.target_lab = target_lab
        self.target = target_lab.target
        self._zones = itertools.count(1)

    def load(self, graph: RuleGraph) -> None:
        outputs, problems = export_targets(graph, [self.target])
        assert not problems, [f"{p.source.line}: {p.message}" for p in problems]
        self.target_lab.load(outputs[self.target])
        # The zone is set before conntrack looks packets up (priority -200), in
        # a table of its own, added after the export is loaded.
        zone = next(self._zones)
        script = (
            "table inet lab_ct_zone\ndelete table inet lab_ct_zone\n"
            "table inet lab_ct_zone {\n"
            f"  chain prerouting {{ type filter hook prerouting priority -300; ct zone set {zone}; }}\n"
            f"  chain output {{ type filter hook output priority -300; ct zone set {zone}; }}\n"
            "}\n"
        )
        lab = self.target_lab.lab
        topology = self.target_lab.topology
        lab.run(topology.firewall, ["nft", "-f", "-"], input=script)
        # A TCP socket left half-closed by an earlier example, where the policy
        # dropped its last packets, would answer a new SYN of the same connection.
        for namespace in (topology.firewall, *topology.sides.values()):
            lab.run(namespace, ["ss", "-K", "-t", "state", "all"])

    def disagreements(self, text: str, sent: tuple[Packet, ...]) -> list[str]:
        """Load the policy text's export, send the packets and list every outcome that differs."""
        graph = load_policy_text(text)
        self.load(graph)
        cases = [probe_case(graph, packet, "generated") for packet in sent]
        observed = self.target_lab.send(cases, "in and fwd", PROBE_TIMEOUT)
        return [
            f"{self.target}: {case.packet}: evaluator {case.expected}, kernel {outcome}"
            for case, outcome in zip(cases, observed)
            if outcome != case.expected
        ]


@pytest.fixture(scope="module", params=TARGETS)
def zoned_lab(request, namespaces_available):
    require(namespaces_available, "needs root and network namespaces")
    for tool in (*TOOLS[request.param], "nft", "ss"):
        need_tool(tool)
    with Lab() as lab, TargetLab(lab, PLAN, request.param) as target_lab:
        yield ZonedLab(target_lab)


def _compiles(text: str) -> bool:
    try:
        load_policy_text(text)
    except PolicyError:
        return False
    return True


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM_SEED,
    database=None,
    # Shrinking a failure takes minutes at up to 1.5 s an example, so only the
    # long run shrinks.
    phases=list(Phase) if RANDOM_SEED else [Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    print_blob=True,
)
@given(example=examples())
def test_kernel_agrees_with_evaluator(zoned_lab, need_namespaces, example):
    assert _compiles(example.text), example.text
    found = zoned_lab.disagreements(example.text, example.packets)
    assert found == [], example.text


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=policy_texts())
def test_generated_policies_compile(text):
    assert _compiles(text), text


NEGATION_POLICY = """policy negation
allow tcp 22 from !10.50.1.0/24 in
default drop in
default drop fwd
"""


def _negation_packets() -> tuple[Packet, ...]:
    firewall = PLAN.firewall_address("lab0", "ipv4")
    return tuple(
        Packet("tcp", ipaddress.ip_address(source), firewall, 30000 + number, 22,
               direction="in", in_interface="lab0")
        for number, source in enumerate(("10.50.1.5", "10.50.2.5"))
    )


def _ignore_negation(match: AddressMatch | None, address: IpAddress) -> bool:
    if match is None or not match.networks:
        return True
    return any(address in network for network in match.networks)


def test_wrong_evaluator_caught(zoned_lab, need_namespaces, monkeypatch):
    sent = _negation_packets()
    assert zoned_lab.disagreements(NEGATION_POLICY, sent) == []

    monkeypatch.setattr(evaluate_module, "address_matches", _ignore_negation)
    found = zoned_lab.disagreements(NEGATION_POLICY, sent)
    assert len(found) == 2, found
    assert any("10.50.1.5" in line and "evaluator open, kernel dropped" in line for line in found)
    assert any("10.50.2.5" in line and "evaluator dropped, kernel open" in line for line in found)
