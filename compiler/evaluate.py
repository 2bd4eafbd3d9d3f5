"""The reference semantics of the rule graph: which rule decides a packet.

``evaluate`` walks the base chain of the packet's direction from the first
rule to the last and stops at the first rule whose matches all hold, as the
kernel does with the iptables and nftables output of the exporters:

- family: the packet's family is in ``rule.families``;
- protocol: None matches every protocol, and a rule with ports or ICMP types
  always has a protocol;
- ports, ICMP types and conntrack states: the packet's value is in the rule's list;
- addresses: the packet address is in one of the networks, or in none of them
  when the match is negated;
- interfaces: a name ending in ``+`` matches every interface that starts with
  the rest, as in iptables;
- rate limits: treated as matching, and the decision records what happens
  above the rate.

A rule with ``log`` logs the packet and then applies its own verdict, so the
deciding rule is the only rule that can log it.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import Source
from compiler.graph import AddressMatch, Chain, PortRange, Rule, RuleGraph
from compiler.packet import IpAddress, Packet, icmp_table

# The reject type of a reject rule without ``with``, and of a reject default;
# both exporters write port-unreachable for them.
DEFAULT_REJECT_TYPE = "port-unreachable"

# Names of the rule fields that ``mismatches`` reports.
FIELDS = (
    "family",
    "protocol",
    "dports",
    "sports",
    "icmp_types",
    "saddr",
    "daddr",
    "in_interface",
    "out_interface",
    "ct_states",
)


@dataclass(frozen=True)
class Decision:
    """The verdict for one packet and the rule or default that gives it.

    ``rule`` is None when no rule matches and the chain's default decides.
    ``policy_source`` is then the position of the ``default`` line, or None
    for the built-in default. ``over_limit`` is the decision for the same
    packet when the deciding rule has a rate limit and the rate is exceeded.
    """

    chain: str
    verdict: str
    rule: Rule | None = None
    policy_source: Source | None = None
    reject_with: str | None = None
    logged: bool = False
    log_prefix: str | None = None
    notes: tuple[str, ...] = ()
    over_limit: Decision | None = None

    @property
    def default(self) -> bool:
        """True when the chain's default verdict decides, not a rule."""
        return self.rule is None


def evaluate(graph: RuleGraph, packet: Packet) -> Decision:
    """Return the decision of the packet's base chain for the packet."""
    chain = graph.chains[packet.chain]
    return _decide(chain, packet, 0)


def rule_matches(rule: Rule, packet: Packet) -> bool:
    """Return True when every match of the rule holds for the packet."""
    return not mismatches(rule, packet)


def mismatches(rule: Rule, packet: Packet) -> list[str]:
    """List the fields (names from FIELDS) whose match fails for the packet; empty on a match."""
    failed = []
    if packet.family not in rule.families:
        failed.append("family")
    if rule.protocol is not None and rule.protocol != packet.protocol:
        failed.append("protocol")
    if rule.dports and not _port_in(packet.destination_port, rule.dports):
        failed.append("dports")
    if rule.sports and not _port_in(packet.source_port, rule.sports):
        failed.append("sports")
    if rule.icmp_types and not _icmp_type_in(packet, rule):
        failed.append("icmp_types")
    if not address_matches(rule.saddr, packet.source):
        failed.append("saddr")
    if not address_matches(rule.daddr, packet.destination):
        failed.append("daddr")
    if rule.in_interface and not interface_matches(rule.in_interface, packet.in_interface):
        failed.append("in_interface")
    if rule.out_interface and not interface_matches(rule.out_interface, packet.out_interface):
        failed.append("out_interface")
    if rule.ct_states and packet.state not in rule.ct_states:
        failed.append("ct_states")
    return failed


def address_matches(match: AddressMatch | None, address: IpAddress) -> bool:
    """Return True when the address satisfies the match; no match or no networks match any."""
    if match is None or not match.networks:
        return True
    # ``in`` is False across versions (Python 3.11 ipaddress), so ::/0 contains no IPv4 address.
    inside = any(address in network for network in match.networks)
    return not inside if match.negated else inside


def interface_matches(pattern: str, name: str | None) -> bool:
    """Return True when an interface name matches a rule's, where a trailing '+' is a wildcard."""
    if name is None:
        return False
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _port_in(port: int | None, ranges: tuple[PortRange, ...]) -> bool:
    return port is not None and any(r.low <= port <= r.high for r in ranges)


def _icmp_type_in(packet: Packet, rule: Rule) -> bool:
    if packet.icmp_type is None or rule.protocol is None:
        return False
    table = icmp_table(rule.protocol)
    return any(table[name].code == packet.icmp_type for name in rule.icmp_types)


def _decide(chain: Chain, packet: Packet, start: int) -> Decision:
    """Walk the chain from rule ``start`` and return the first match or the default."""
    # Rules skipped only because the packet names no interface, with their verdicts.
    skipped: list[tuple[str, str]] = []
    for index in range(start, len(chain.rules)):
        rule = chain.rules[index]
        failed = mismatches(rule, packet)
        if not failed:
            return _rule_decision(chain, packet, index, _interface_notes(skipped, rule.action))
        note = _missing_interface_note(rule, packet, failed)
        if note is not None:
            skipped.append((rule.action, note))

    reject_with = DEFAULT_REJECT_TYPE if chain.policy == "reject" else None
    return Decision(
        chain=chain.name,
        verdict=chain.policy,
        policy_source=chain.policy_source,
        reject_with=reject_with,
        notes=tuple(_interface_notes(skipped, chain.policy)),
    )


def _interface_notes(skipped: list[tuple[str, str]], verdict: str) -> list[str]:
    """Keep the notes of skipped rules whose verdict differs from the one that decides."""
    notes: list[str] = []
    for action, note in skipped:
        if action != verdict and note not in notes:
            notes.append(note)
    return notes


def _rule_decision(chain: Chain, packet: Packet, index: int, notes: list[str]) -> Decision:
    rule = chain.rules[index]
    over_limit = None
    if rule.limit is not None:
        rate = f"{rule.limit.rate}/{rule.limit.unit}"
        if rule.limit.burst is not None:
            rate += f", burst {rule.limit.burst}"
        notes.append(
            f"rate-limited: matches while under the rate ({rate}); above it, the packet "
            "goes on to the rules after it"
        )
        over_limit = _decide(chain, packet, index + 1)

    reject_with = None
    if rule.action == "reject":
        reject_with = rule.reject_with or DEFAULT_REJECT_TYPE
    return Decision(
        chain=chain.name,
        verdict=rule.action,
        rule=rule,
        reject_with=reject_with,
        logged=rule.log,
        log_prefix=rule.log_prefix,
        notes=tuple(notes),
        over_limit=over_limit,
    )


def _missing_interface_note(rule: Rule, packet: Packet, failed: list[str]) -> str | None:
    """Return a note for a rule that fails only because the packet names no interface."""
    unnamed = {
        "in_interface": packet.in_interface is None,
        "out_interface": packet.out_interface is None,
    }
    if not all(unnamed.get(name, False) for name in failed):
        return None
    needs, clauses = [], []
    if "in_interface" in failed:
        needs.append(f"input interface {rule.in_interface}")
        clauses.append("'on IFACE'")
    if "out_interface" in failed:
        needs.append(f"output interface {rule.out_interface}")
        clauses.append("'out-on IFACE'" if packet.direction == "fwd" else "'on IFACE'")
    place = f"{rule.source.file}:{rule.source.line}"
    return (
        f"{place} applies only to {' and '.join(needs)}, but the packet names no interface; "
        f"add {' and '.join(clauses)} to test it"
    )
