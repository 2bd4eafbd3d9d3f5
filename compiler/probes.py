"""Probe packets for ``polywall verify``, derived from the rule graph alone (no root needed).

For each rule of the input, output and forward chains, ``derive_probes``
builds a packet inside the rule's match and packets just outside each edge of it. The
edges are the port below and above each port range, the address just below
and above each network, the other transport protocol, the other family and
another interface. Every probe carries the expected outcome from the evaluator, so the
lab only has to send it and compare.

The probes use the addresses of a lab plan (``plan_lab``): the firewall gets
one veth link per interface name that the rules of any chain use, named after
it, plus two default links whose names match no rule. Every direction shares
these links, so one lab serves all of them. A probe without a policy address
uses the addresses of its link, such as 10.200.0.2 and fd00:200::2. Probes of
``out`` leave the firewall itself, from its address on the link.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from compiler.catalog import TCP_RESET
from compiler.errors import PolywallError, Source
from compiler.evaluate import Decision, evaluate, interface_matches
from compiler.graph import DIRECTION_CHAINS, Network, PortRange, Rule, RuleGraph
from compiler.packet import IpAddress, Packet

# The observed outcome that each verdict must produce in a real kernel.
OUTCOMES = {"accept": "open", "drop": "dropped", "reject": "rejected"}
# Directions that verify sends packets for, in report order.
PROBED_DIRECTIONS = ("in", "out", "fwd")
ECHO_REQUEST = {"icmp": 8, "icmpv6": 128}
ECHO_REPLY = {"icmp": 0, "icmpv6": 129}
# The ICMP type of every reject error except a TCP reset.
DESTINATION_UNREACHABLE = {"icmp": 3, "icmpv6": 1}
ICMP_PROTOCOL = {"ipv4": "icmp", "ipv6": "icmpv6"}
OTHER_FAMILY = {"ipv4": "ipv6", "ipv6": "ipv4"}
OTHER_PROTOCOL = {"tcp": "udp", "udp": "tcp", "icmp": "tcp", "icmpv6": "tcp"}
DEFAULT_REASON = "the chain's default verdict"
# Destination port of probes whose rule names no port (the discard service).
DEFAULT_PORT = 9
# Source ports that the lab binds for probes whose rule names no source port
# are counted up from here, skipping every port that a rule or probe names.
# Each direction has its own range of 10000 ports, so that probes of different
# directions sent through one lab share no conntrack entry while each direction
# needs fewer ports than that.
FIRST_SOURCE_PORT = 30000
FIRST_SOURCE_PORTS = {"in": 30000, "out": 40000, "fwd": 50000}
MAX_PORT = 65535
# Link subnets, tried in order: each link gets the next IPv4 /24 and the next
# IPv6 /64 that overlap no network of the policy. The pools are private
# (RFC 1918, RFC 6598) and unique local (RFC 4193) ranges, never routed outside.
LINK_POOLS = {
    4: ("10.{n}.0.0/24", "172.31.{n}.0/24", "100.64.{n}.0/24"),
    6: ("fd00:{n}::/64", "fc00:{n}::/64"),
}
LINK_POOL_NUMBERS = range(200, 255)
# Linux interface names: at most 15 bytes, no '/', ':' or white space
# (dev_valid_name in the kernel's net/core/dev.c).
LINUX_INTERFACE_NAME = re.compile(r"[^/:\s]{1,15}$")


class ProbeError(PolywallError):
    """The lab has no room for the probes: no free link subnet or source port is left."""


@dataclass(frozen=True)
class LabPlan:
    """The links of the lab and the default links of one direction.

    ``subnets`` maps each firewall interface name to the IPv4 and IPv6 subnets
    of its link. The firewall end of the link has host 1 of each subnet, and
    the far end, in its own namespace, has host 2. The links are the same for
    every direction of one graph. ``default_in`` is the link of probes whose
    rule names no interface (for ``out``, the link they leave on), and
    ``default_out`` the output link of such ``fwd`` probes.
    """

    direction: str
    subnets: dict[str, tuple[Network, Network]]
    default_in: str
    default_out: str | None = None
    # Interface names of the policy that the lab cannot create, with the reason.
    unusable: dict[str, str] = field(default_factory=dict)

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(self.subnets)

    def firewall_address(self, interface: str, family: str) -> IpAddress:
        return self._subnet(interface, family)[1]

    def side_address(self, interface: str, family: str) -> IpAddress:
        return self._subnet(interface, family)[2]

    def prefix_length(self, family: str) -> int:
        return 24 if family == "ipv4" else 64

    def link_networks(self) -> list[Network]:
        return [network for pair in self.subnets.values() for network in pair]

    def _subnet(self, interface: str, family: str) -> Network:
        return self.subnets[interface][0 if family == "ipv4" else 1]


@dataclass(frozen=True)
class ProbeCase:
    """One probe packet, why it was chosen and the outcome the evaluator expects.

    ``expected`` is "open", "dropped" or "rejected". ``decision`` is the
    evaluator's decision for the packet itself. ``reply_decision`` is set
    when the packet is accepted or rejected: the decision for its reply, or
    for the firewall's reject error, that stops the response if one does, and
    else the last of them.
    """

    packet: Packet
    reason: str
    rule: Source | None
    expected: str
    decision: Decision
    reply_decision: Decision | None = None

    # True when the lab picked the source port, so the rule does not care about it.
    source_port_assigned: bool = False

    @property
    def label(self) -> str:
        """The packet as a short text, without a source port that the lab picked."""
        return _packet_label(self.packet, show_source_port=not self.source_port_assigned)


@dataclass(frozen=True)
class SkippedProbe:
    """A probe that verify cannot send, with the reason."""

    direction: str
    rule: Source | None
    description: str
    reason: str


@dataclass
class ProbeSet:
    """The probes of one direction and the probes that had to be skipped."""

    direction: str
    plan: LabPlan
    cases: list[ProbeCase]
    skipped: list[SkippedProbe]


@dataclass(frozen=True)
class _Draft:
    """A probe before its defaults are filled in: None means the link's own address or port."""

    reason: str
    protocol: str
    family: str
    in_interface: str
    out_interface: str | None
    source: IpAddress | None = None
    destination: IpAddress | None = None
    source_port: int | None = None
    destination_port: int | None = None


def plan_lab(graph: RuleGraph, direction: str) -> LabPlan:
    """Choose the firewall's interface names and link subnets, and the defaults of one direction.

    The names and subnets come from the rules of every chain, so the plans of
    all directions of one graph describe the same links.
    """
    rules = [rule for chain in DIRECTION_CHAINS.values() for rule in graph.chains[chain].rules]
    patterns: list[str] = []
    for rule in rules:
        for pattern in (rule.in_interface, rule.out_interface):
            if pattern and pattern not in patterns:
                patterns.append(pattern)

    names: list[str] = []
    unusable: dict[str, str] = {}
    for pattern in patterns:
        name = concrete_interface(pattern)
        if name == "lo":
            continue
        if not LINUX_INTERFACE_NAME.match(name):
            unusable[pattern] = f"'{name}' is not a valid Linux interface name"
            continue
        if name not in names:
            names.append(name)

    defaults = _default_names(patterns, 2)
    # The second default comes last, so the policy's own links keep the subnets
    # they had when only one default link was planned.
    ordered = [defaults[0], *sorted(names), defaults[1]]
    policy_networks = [n for rule in graph.rules() for n in _rule_networks(rule)]
    subnets: dict[str, tuple[Network, Network]] = {}
    candidates = _free_subnets(policy_networks)
    for name in ordered:
        pair = next(candidates, None)
        if pair is None:
            raise ProbeError("no free lab link subnet: the policy's networks cover every pool")
        subnets[name] = pair
    return LabPlan(
        direction=direction,
        subnets=subnets,
        default_in=defaults[0],
        default_out=defaults[1] if direction == "fwd" else None,
        unusable=unusable,
    )


def concrete_interface(pattern: str) -> str:
    """Return an interface name that the pattern matches: 'eth+' gives 'eth0'."""
    if pattern.endswith("+"):
        return (pattern[:-1] + "0")[:15]
    return pattern


def _default_names(patterns: list[str], count: int) -> list[str]:
    names: list[str] = []
    index = 0
    while len(names) < count:
        for prefix in ("lab", "veth", "pwv"):
            name = f"{prefix}{index}"
            if not any(interface_matches(p, name) for p in patterns):
                names.append(name)
                break
        index += 1
    return names


def _rule_networks(rule: Rule) -> list[Network]:
    networks: list[Network] = []
    for match in (rule.saddr, rule.daddr):
        if match is not None:
            networks.extend(match.networks)
    return networks


def _free_subnets(taken: list[Network]) -> Iterator[tuple[Network, Network]]:
    """Yield pairs of an IPv4 and an IPv6 link subnet that overlap no network of the policy."""
    def free(version: int) -> Iterator[Network]:
        for pattern in LINK_POOLS[version]:
            for n in LINK_POOL_NUMBERS:
                network = ipaddress.ip_network(pattern.format(n=n))
                if not any(t.version == version and t.overlaps(network) for t in taken):
                    yield network

    return zip(free(4), free(6))


def derive_probes(graph: RuleGraph, direction: str, plan: LabPlan | None = None) -> ProbeSet:
    """Derive the probes of one direction, each with the evaluator's expected outcome."""
    plan = plan or plan_lab(graph, direction)
    chain = graph.chains[DIRECTION_CHAINS[direction]]
    drafts: list[tuple[_Draft, Source | None]] = []
    skipped: list[SkippedProbe] = []
    for rule in chain.rules:
        for family in rule.families:
            found, reasons = _rule_drafts(rule, family, plan)
            drafts.extend((draft, rule.source) for draft in found)
            skipped.extend(
                SkippedProbe(direction, rule.source, description, reason)
                for description, reason in reasons
            )
    for family in ("ipv4", "ipv6"):
        for protocol in ("tcp", "udp", ICMP_PROTOCOL[family]):
            draft = _Draft(DEFAULT_REASON, protocol, family,
                           plan.default_in, plan.default_out)
            drafts.append((draft, chain.policy_source))

    packets: dict[Packet, tuple[str, Source | None]] = {}
    for draft, source in drafts:
        packet, problem = _resolve(draft, plan, direction)
        if packet is None:
            skipped.append(SkippedProbe(direction, source, draft.reason, problem or ""))
            continue
        if source is not None and draft.reason != DEFAULT_REASON:
            reason = f"{source.file}:{source.line} {draft.reason}"
        else:
            reason = draft.reason
        packets.setdefault(packet, (reason, source))

    cases = []
    first_port = FIRST_SOURCE_PORTS[direction]
    for packet, (reason, source, assigned) in _assign_source_ports(graph, packets,
                                                                   first_port).items():
        case = _case(graph, packet, reason, source)
        cases.append(replace(case, source_port_assigned=assigned))
    return ProbeSet(direction, plan, cases, skipped)


def _case(graph: RuleGraph, packet: Packet, reason: str, source: Source | None) -> ProbeCase:
    decision = evaluate(graph, packet)
    reply_decision = None
    for response in response_packets(packet, decision.verdict, decision.reject_with):
        reply_decision = evaluate(graph, response)
        if reply_decision.verdict != "accept":
            break
    expected = sender_outcome(packet, lambda p: _verdict(evaluate(graph, p)))
    return ProbeCase(packet, reason, source, expected, decision, reply_decision)


def _verdict(decision: Decision) -> tuple[str, str | None]:
    return decision.verdict, decision.reject_with


# Returns the verdict and the reject type for a packet.
Decide = Callable[[Packet], tuple[str, "str | None"]]


def sender_outcome(packet: Packet, decide: Decide) -> str:
    """Return what the sender of a probe observes: "open", "dropped" or "rejected".

    The sender observes the verdict only when the response comes back: the reply
    of an accepted packet, or the reject error of a rejected one. A TCP
    connect also sends an ACK in the state established after the reply. When
    the firewall rejects that ACK, the reject error reaches the connecting
    socket and the connect fails (seen on Linux 6.18); a dropped ACK goes
    unnoticed by the connect.
    """
    verdict, reject_with = decide(packet)
    for response in response_packets(packet, verdict, reject_with):
        if decide(response)[0] != "accept":
            # The firewall stops the reply or its own reject error, so the sender gets nothing.
            return "dropped"
    if verdict == "accept" and packet.protocol == "tcp":
        ack = replace(packet, state="established")
        ack_verdict, ack_reject_with = decide(ack)
        errors = response_packets(ack, ack_verdict, ack_reject_with)
        if ack_verdict == "reject" and all(decide(error)[0] == "accept" for error in errors):
            return "rejected"
    return OUTCOMES[verdict]


def response_packets(packet: Packet, verdict: str, reject_with: str | None) -> list[Packet]:
    """Return the packets that carry the response to a probe back through the firewall's chains.

    An accepted probe's response is its reply. A rejected probe's response is the
    firewall's own ICMP error or TCP reset, which the kernel sends through
    the output chain in the conntrack state related (seen on Linux 6.18 with
    iptables-nft and nftables). For ``out`` it then comes back to the
    firewall over lo, through the input chain.
    """
    if verdict == "accept":
        return [reply_packet(packet)]
    if verdict != "reject":
        return []
    if reject_with == TCP_RESET:
        protocol, icmp_type = "tcp", None
        source_port, destination_port = packet.destination_port, packet.source_port
    else:
        protocol = ICMP_PROTOCOL[packet.family]
        icmp_type, source_port, destination_port = DESTINATION_UNREACHABLE[protocol], None, None
    # NOTE: the error's source address is taken to be the probe's destination,
    # as in a TCP reset. An ICMP error of a forwarding firewall comes from the
    # firewall's own address, so a rule on that address can decide otherwise.
    error = Packet(protocol=protocol, source=packet.destination, destination=packet.source,
                   source_port=source_port, destination_port=destination_port,
                   icmp_type=icmp_type, state="related", direction="out")
    if packet.direction != "out":
        return [replace(error, out_interface=packet.in_interface)]
    return [replace(error, out_interface="lo"),
            replace(error, direction="in", in_interface="lo")]


def probe_case(graph: RuleGraph, packet: Packet, reason: str) -> ProbeCase:
    """Return a probe of a packet that no rule was chosen for, with the evaluator's expectation."""
    return _case(graph, packet, reason, None)


def expected_outcome(graph: RuleGraph, packet: Packet) -> str:
    """Return the outcome for the sender of the packet: "open", "dropped" or "rejected".

    An accepted packet is "open" only when the reply, in the established
    state, is accepted too: by the output chain for ``in``, by the input
    chain for ``out``, and by the forward chain in the other direction for
    ``fwd``. A rejected packet is "rejected" only when the chains that see
    the firewall's reject error accept it (``response_packets``).
    """
    return _case(graph, packet, "", None).expected


def reply_packet(packet: Packet) -> Packet:
    """Return the reply to a packet: addresses, ports and interfaces swapped, established."""
    icmp_type = ECHO_REPLY[packet.protocol] if packet.icmp_type is not None else None
    if packet.direction == "in":
        direction, in_interface, out_interface = "out", None, packet.in_interface
    elif packet.direction == "out":
        direction, in_interface, out_interface = "in", packet.out_interface, None
    else:
        direction, in_interface, out_interface = (
            packet.direction, packet.out_interface, packet.in_interface)
    return Packet(
        protocol=packet.protocol,
        source=packet.destination,
        destination=packet.source,
        source_port=packet.destination_port,
        destination_port=packet.source_port,
        icmp_type=icmp_type,
        state="established",
        direction=direction,
        in_interface=in_interface,
        out_interface=out_interface,
    )


def _rule_drafts(rule: Rule, family: str, plan: LabPlan) -> tuple[list[_Draft], list[tuple[str, str]]]:
    """Return the drafts of one rule for one family, and the probes skipped with reasons."""
    if rule.ct_states and "new" not in rule.ct_states:
        states = ", ".join(rule.ct_states)
        reason = "verify opens new connections only; their replies go through the established rules"
        return [], [(f"{family} packets in state {states}", reason)]
    try:
        in_interface, out_interface = _rule_interfaces(rule, family, plan)
    except _CannotProbe as problem:
        return [], [(problem.description, problem.reason)]

    skipped: list[tuple[str, str]] = []
    protocols = [rule.protocol] if rule.protocol else ["tcp", "udp", ICMP_PROTOCOL[family]]
    base = _Draft(
        reason="inside",
        protocol=protocols[0],
        family=family,
        in_interface=in_interface,
        out_interface=out_interface,
        source=_first_inside(rule.saddr, family),
        destination=_first_inside(rule.daddr, family),
        source_port=rule.sports[0].low if rule.sports else None,
        destination_port=rule.dports[0].low if rule.dports else None,
    )
    if rule.icmp_types and "echo-request" not in rule.icmp_types:
        skipped.append((f"{rule.protocol} {', '.join(rule.icmp_types)}",
                        "verify sends echo requests only, which this rule does not match"))
        base = replace(base, reason="echo request, outside the rule's ICMP types")
    drafts = [replace(base, protocol=p) for p in protocols]
    drafts += _port_drafts(base, rule.dports, "destination_port", "port")
    drafts += _port_drafts(base, rule.sports, "source_port", "source port")
    drafts += _address_drafts(base, rule, "saddr", "source")
    drafts += _address_drafts(base, rule, "daddr", "destination")
    drafts += _neighbour_drafts(base, rule, plan)
    return drafts, skipped


class _CannotProbe(Exception):
    """The lab cannot send the packets that a rule matches."""

    def __init__(self, description: str, reason: str):
        super().__init__(f"{description}: {reason}")
        self.description = description
        self.reason = reason


def _rule_interfaces(rule: Rule, family: str, plan: LabPlan) -> tuple[str, str | None]:
    """Return the lab's input and output interface for a rule's inside probes.

    Raises _CannotProbe when the lab cannot send packets through the
    interfaces the rule names.
    """
    if plan.direction == "out":
        return _output_interfaces(rule, family, plan)
    in_interface = plan.default_in
    if rule.in_interface == "lo":
        raise _CannotProbe(f"{family} packets on lo", "loopback traffic never crosses a lab link")
    if rule.in_interface in plan.unusable:
        raise _CannotProbe(f"{family} packets on {rule.in_interface}",
                           plan.unusable[rule.in_interface])
    if rule.in_interface:
        in_interface = concrete_interface(rule.in_interface)
    if plan.direction != "fwd":
        return in_interface, None

    out_interface = plan.default_out
    if rule.out_interface == "lo":
        raise _CannotProbe(f"{family} packets out on lo", "loopback traffic is not forwarded")
    if rule.out_interface in plan.unusable:
        raise _CannotProbe(f"{family} packets out on {rule.out_interface}",
                           plan.unusable[rule.out_interface])
    if rule.out_interface:
        out_interface = concrete_interface(rule.out_interface)
        if out_interface == in_interface:
            raise _CannotProbe(f"{family} packets on {in_interface} out-on {out_interface}",
                               "the lab forwards between two different interfaces only")
    elif out_interface == in_interface:
        out_interface = next(n for n in plan.interfaces if n != in_interface)
    return in_interface, out_interface


def _output_interfaces(rule: Rule, family: str, plan: LabPlan) -> tuple[str, str]:
    """Return the link that an ``out`` rule's inside probes leave on, as input and output.

    Raises _CannotProbe when the lab cannot send packets out of the interface
    the rule names.
    """
    if rule.out_interface == "lo":
        raise _CannotProbe(f"{family} packets out on lo",
                           "loopback traffic never crosses a lab link")
    if rule.out_interface in plan.unusable:
        raise _CannotProbe(f"{family} packets out on {rule.out_interface}",
                           plan.unusable[rule.out_interface])
    link = concrete_interface(rule.out_interface) if rule.out_interface else plan.default_in
    return link, link


def _neighbour_drafts(base: _Draft, rule: Rule, plan: LabPlan) -> list[_Draft]:
    """Return the drafts just outside the rule's protocol, family and interfaces."""
    drafts = []
    family = base.family
    if rule.protocol:
        other = OTHER_PROTOCOL[rule.protocol]
        drafts.append(replace(base, reason=f"{other} instead of {rule.protocol}", protocol=other,
                              source_port=None))
    if len(rule.families) == 1:
        other_family = OTHER_FAMILY[family]
        protocol = rule.protocol or "tcp"
        if protocol in ECHO_REQUEST:
            protocol = ICMP_PROTOCOL[other_family]
        # Addresses do not carry over to the other family, so the link's own are used.
        drafts.append(replace(base, reason=f"{other_family} instead of {family}",
                              protocol=protocol, family=other_family, source=None,
                              destination=None))
    if rule.in_interface:
        other_in = next(n for n in (plan.default_in, plan.default_out)
                        if n != base.out_interface)
        drafts.append(replace(base, reason=f"arrives on {other_in}, not {rule.in_interface}",
                              in_interface=other_in))
    if plan.direction == "out" and rule.out_interface:
        # Default link names match no rule's interface.
        drafts.append(replace(base, reason=f"leaves on {plan.default_in}, not {rule.out_interface}",
                              in_interface=plan.default_in, out_interface=plan.default_in))
    if plan.direction == "fwd" and rule.out_interface:
        other_out = next(n for n in (plan.default_out, plan.default_in)
                         if n != base.in_interface)
        drafts.append(replace(base, reason=f"leaves on {other_out}, not {rule.out_interface}",
                              out_interface=other_out))
    return drafts


def _port_drafts(base: _Draft, ranges: tuple[PortRange, ...], attribute: str,
                 word: str) -> list[_Draft]:
    drafts = []
    for item in ranges:
        candidates = [
            (item.low - 1, f"{word} {item.low - 1}, just below {item}"),
            (item.low, (f"{word} {item.low}, low end of {item}" if item.size > 1
                        else f"{word} {item.low}")),
            (item.high, f"{word} {item.high}, high end of {item}"),
            (item.high + 1, f"{word} {item.high + 1}, just above {item}"),
        ]
        if item.size == 1:
            del candidates[2]
        for port, reason in candidates:
            if 1 <= port <= MAX_PORT:
                drafts.append(replace(base, reason=reason, **{attribute: port}))
    return drafts


def _address_drafts(base: _Draft, rule: Rule, side: str, word: str) -> list[_Draft]:
    match = getattr(rule, side)
    if match is None:
        return []
    attribute = "source" if side == "saddr" else "destination"
    drafts = []
    for network in match.networks:
        if network.version != (4 if base.family == "ipv4" else 6):
            continue
        for address, reason in _network_edges(network):
            drafts.append(replace(base, reason=f"{word} {address}, {reason}", **{attribute: address}))
    return drafts


def _network_edges(network: Network) -> list[tuple[IpAddress, str]]:
    """Return the first and last host of a network and the addresses just outside it."""
    edges: list[tuple[IpAddress, str]] = []
    first, last = _hosts(network)
    edges.append((first, f"inside {network}"))
    if last != first:
        edges.append((last, f"inside {network}"))
    low = int(network.network_address) - 1
    high = int(network.broadcast_address) + 1
    if low >= 0:
        edges.append((ipaddress.ip_address(low) if network.version == 4
                      else ipaddress.IPv6Address(low), f"just below {network}"))
    if high < 2 ** network.max_prefixlen:
        edges.append((ipaddress.ip_address(high) if network.version == 4
                      else ipaddress.IPv6Address(high), f"just above {network}"))
    return edges


def _hosts(network: Network) -> tuple[IpAddress, IpAddress]:
    """Return the first and last address of a network that a host can use."""
    if network.num_addresses <= 2:
        return network.network_address, network.broadcast_address
    return network.network_address + 1, network.broadcast_address - 1


def _first_inside(match, family: str) -> IpAddress | None:
    """Return a host address that satisfies the match, or None to use the link's own."""
    if match is None or not match.networks or match.negated:
        return None
    version = 4 if family == "ipv4" else 6
    for network in match.networks:
        if network.version == version:
            return _hosts(network)[0]
    return None


def _resolve(draft: _Draft, plan: LabPlan, direction: str) -> tuple[Packet | None, str | None]:
    """Fill in the link's addresses and return the packet, or None and the reason it cannot go."""
    family = draft.family
    if direction == "out":
        return _resolve_output(draft, plan)
    source = draft.source or plan.side_address(draft.in_interface, family)
    if draft.destination is not None:
        destination = draft.destination
    elif direction == "in":
        destination = plan.firewall_address(draft.in_interface, family)
    else:
        destination = plan.side_address(draft.out_interface or plan.default_out or "", family)
    out_interface = draft.out_interface if direction == "fwd" else None
    return _draft_packet(draft, plan, source, destination, direction, draft.in_interface, out_interface)


def _resolve_output(draft: _Draft, plan: LabPlan) -> tuple[Packet | None, str | None]:
    """Resolve an ``out`` draft: from the firewall to the namespace behind the link it leaves on."""
    link = draft.out_interface or draft.in_interface
    source = draft.source or plan.firewall_address(link, draft.family)
    destination = draft.destination or plan.side_address(link, draft.family)
    return _draft_packet(draft, plan, source, destination, "out", None, link)


def _draft_packet(draft: _Draft, plan: LabPlan, source, destination, direction: str,
                  in_interface: str | None, out_interface: str | None
                  ) -> tuple[Packet | None, str | None]:
    """Build a draft's packet once its addresses are chosen, or return why the lab cannot send it."""
    for role, address in (("source", source), ("destination", destination)):
        problem = _unusable_address(address, plan)
        if problem:
            return None, f"the {role} {address} {problem}"
    is_icmp = draft.protocol in ECHO_REQUEST
    packet = Packet(
        protocol=draft.protocol,
        source=source,
        destination=destination,
        source_port=None if is_icmp else draft.source_port,
        destination_port=None if is_icmp else draft.destination_port or DEFAULT_PORT,
        icmp_type=ECHO_REQUEST[draft.protocol] if is_icmp else None,
        direction=direction,
        in_interface=in_interface,
        out_interface=out_interface,
    )
    return packet, None


def _unusable_address(address: IpAddress, plan: LabPlan) -> str | None:
    """Return why a lab host cannot own the address, or None when it can."""
    if address.is_multicast:
        return "is a multicast address"
    if address.is_loopback or address.is_unspecified or address.is_link_local:
        return "is a loopback, unspecified or link-local address"
    if address.version == 4 and (address.is_reserved or address == ipaddress.IPv4Address(
            "255.255.255.255")):
        return "is a reserved address"
    if address.version == 6 and address.ipv4_mapped is not None:
        return "is an IPv4-mapped address"
    lab_hosts = {plan.firewall_address(n, f) for n in plan.interfaces for f in ("ipv4", "ipv6")}
    lab_hosts |= {plan.side_address(n, f) for n in plan.interfaces for f in ("ipv4", "ipv6")}
    if address not in lab_hosts and any(
            address.version == n.version and address in n for n in plan.link_networks()):
        return "is inside a lab link subnet"
    return None


def _assign_source_ports(graph: RuleGraph,
                         packets: dict[Packet, tuple[str, Source | None]],
                         first_port: int = FIRST_SOURCE_PORT,
                         ) -> dict[Packet, tuple[str, Source | None, bool]]:
    """Give every TCP and UDP probe without a source port a port of its own.

    Distinct source ports keep each probe a connection of its own in
    conntrack, so an earlier probe's connection never decides a later one.
    NOTE: probes whose source port comes from the rule keep it, so two of
    them that differ only in their interfaces share one conntrack entry.
    """
    named: set[int] = set()
    for rule in graph.rules():
        for item in (*rule.dports, *rule.sports):
            if item.size <= 4:
                named.update(range(item.low - 1, item.high + 2))
            else:
                named.update((item.low - 1, item.low, item.high, item.high + 1))
    for packet in packets:
        named.update(p for p in (packet.source_port, packet.destination_port) if p is not None)
    port = first_port
    assigned: dict[Packet, tuple[str, Source | None, bool]] = {}
    for packet, (reason, source) in packets.items():
        picked = packet.protocol in ("tcp", "udp") and packet.source_port is None
        if picked:
            while port in named:
                port += 1
            if port > MAX_PORT:
                raise ProbeError("too many probes: no free source port left")
            packet = replace(packet, source_port=port)
            port += 1
        assigned[packet] = (reason, source, picked)
    return assigned


def _packet_label(packet: Packet, show_source_port: bool) -> str:
    def endpoint(address: IpAddress, port: int | None) -> str:
        text = f"[{address}]" if address.version == 6 and port else str(address)
        return f"{text}:{port}" if port else text

    words = [packet.protocol]
    words.append(endpoint(packet.source, packet.source_port if show_source_port else None))
    words += ["->", endpoint(packet.destination, packet.destination_port)]
    if packet.direction == "out":
        return " ".join([*words, "out on", packet.out_interface or "?"])
    words += ["on", packet.in_interface or "?"]
    if packet.direction == "fwd":
        words += ["out-on", packet.out_interface or "?"]
    return " ".join(words)
