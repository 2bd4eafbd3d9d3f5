"""Group adjacent rules of a chain that nftables can match with one set lookup.

Rules that follow each other, share a verdict and differ only in their
addresses and ports become one rule over a set: ``ip saddr { A, B } accept``
for one varying field, or a concatenated set such as ``ip saddr . tcp dport {
A . 22, B . 80 } accept`` for several. A packet matches the merged rule
exactly when it matches one of the original rules, and since those rules are
adjacent and end in the same verdict, first-match order gives the same
result. Loading one rule over a set is also much faster for the kernel than
loading thousands of rules that each carry an anonymous set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Union

from compiler.graph import Network, PortRange, Rule, normalize_networks, normalize_ports

# The fields a set can carry, in the order the rule matches them.
SET_FIELDS = ("saddr", "daddr", "sports", "dports")
ADDRESS_FIELDS = ("saddr", "daddr")
# A port range of at most this many ports is checked port by port against a set's single
# ports. A wider range is checked the other way: each single port against the range.
_PORT_SCAN_LIMIT = 64

Value = Union[Network, PortRange]
# Marks a value missing from a node, where None marks a value at the last level.
_ABSENT = object()


def set_fields(rule: Rule) -> tuple[str, ...]:
    """Return the fields of SET_FIELDS that the rule matches on."""
    present = []
    if rule.saddr is not None and rule.saddr.networks:
        present.append("saddr")
    if rule.daddr is not None and rule.daddr.networks:
        present.append("daddr")
    if rule.sports:
        present.append("sports")
    if rule.dports:
        present.append("dports")
    return tuple(present)


def merge_key(rule: Rule) -> tuple | None:
    """Return what a rule must share with its neighbours to merge with them, or None.

    A log statement, a rate limit and a comment belong to one rule, so a rule
    with any of them stays alone. A negated address does too, because "not in
    A, or not in B" is no set lookup. Everything else that is not carried by
    the set must be equal, including which fields the set carries.
    """
    if rule.log or rule.limit is not None or rule.comment:
        return None
    if any(match is not None and match.negated for match in (rule.saddr, rule.daddr)):
        return None
    fields = set_fields(rule)
    if not fields:
        return None
    return (
        rule.chain,
        rule.action,
        rule.reject_with,
        rule.families,
        rule.protocol,
        rule.icmp_types,
        rule.in_interface,
        rule.out_interface,
        rule.ct_states,
        fields,
    )


def _networks(rule: Rule, name: str) -> tuple[Network, ...]:
    match = getattr(rule, name)
    return match.networks if match is not None else ()


def field_values(rule: Rule, name: str) -> tuple[Value, ...]:
    """Return the networks or port ranges a rule matches in one field."""
    return _networks(rule, name) if name in ADDRESS_FIELDS else getattr(rule, name)


@dataclass
class RuleGroup:
    """Adjacent rules rendered as one statement.

    ``fields`` is empty for a rule that stays as it is. For a merged group it
    names the fields the set carries, and ``elements`` lists the set's
    elements, one value per field, without duplicates or overlaps.
    """

    rules: list[Rule]
    fields: tuple[str, ...] = ()
    elements: list[tuple[Value, ...]] = field(default_factory=list)


class _NetworkValues:
    """The distinct networks of one field at one node of an ElementIndex.

    Two networks overlap only when one contains the other, so a new network
    overlaps a member when a supernet of it is a member, or when it is a
    supernet of a member. The second test uses, for each prefix length asked
    about, the set of members' supernets at that length, built on first use.
    """

    def __init__(self) -> None:
        self.children: dict[Network, object] = {}
        self.prefix_lengths: set[int] = set()
        self.supernets: dict[int, set[Network]] = {}

    def overlaps_other(self, network: Network) -> bool:
        length = network.prefixlen
        for member_length in self.prefix_lengths:
            if member_length < length:
                if network.supernet(new_prefix=member_length) in self.children:
                    return True
            elif member_length > length and network in self._supernets_at(length):
                return True
        return False

    def _supernets_at(self, length: int) -> set[Network]:
        if length not in self.supernets:
            self.supernets[length] = {
                member.supernet(new_prefix=length)
                for member in self.children
                if member.prefixlen > length
            }
        return self.supernets[length]

    def add(self, network: Network, child: object) -> None:
        self.children[network] = child
        self.prefix_lengths.add(network.prefixlen)
        for length, supernets in self.supernets.items():
            if network.prefixlen > length:
                supernets.add(network.supernet(new_prefix=length))


class _PortValues:
    """The distinct port ranges of one field at one node of an ElementIndex."""

    def __init__(self) -> None:
        self.children: dict[PortRange, object] = {}
        self.ranges: list[PortRange] = []

    def overlaps_other(self, ports: PortRange) -> bool:
        for member in self.ranges:
            if member.low <= ports.high and ports.low <= member.high:
                return True
        if ports.low == ports.high:
            return False
        if ports.size <= _PORT_SCAN_LIMIT:
            return any(PortRange(p, p) in self.children for p in range(ports.low, ports.high + 1))
        return any(ports.low <= member.low <= ports.high for member in self.children)

    def add(self, ports: PortRange, child: object) -> None:
        self.children[ports] = child
        if ports.low != ports.high:
            self.ranges.append(ports)


class ElementIndex:
    """The elements of one concatenated set, kept free of overlaps.

    Linux (nft_set_pipapo, checked on 6.x) rejects an element of a
    concatenated interval set when its first or last point falls inside an
    element already in the set. So a merged set must not contain two elements
    that overlap, which means that they overlap in every field. The index is a tree with one
    level per field. At each level a new value either equals a value already
    there, and the check goes one level down, or it must overlap none of them.
    Two unequal values that overlap count as a conflict even when a later
    field would tell the elements apart: the check may end a group early, but
    it never lets an overlap through.

    A rule's elements are the cross product of its values in the fields. The
    graph keeps each field's networks and ports normalized, so no two
    elements of one rule overlap, and the methods take the values per field.
    """

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        self.root = self._values(0)

    def _values(self, depth: int) -> _NetworkValues | _PortValues:
        return _NetworkValues() if self.fields[depth] in ADDRESS_FIELDS else _PortValues()

    def conflicts(self, values: list[tuple[Value, ...]], depth: int = 0, node=None) -> bool:
        """Tell whether an element of the cross product of values overlaps one in the index.

        values contains one tuple of values per field. An element equal to one
        in the index is no conflict.
        """
        node = self.root if node is None else node
        last = depth == len(values) - 1
        for value in values[depth]:
            child = node.children.get(value, _ABSENT)
            if child is _ABSENT:
                if node.overlaps_other(value):
                    return True
            elif not last and self.conflicts(values, depth + 1, child):
                return True
        return False

    def add(self, values: list[tuple[Value, ...]], depth: int = 0, node=None, prefix=()) -> list:
        """Add the cross product of values, which must not conflict; return the elements that are new."""
        node = self.root if node is None else node
        last = depth == len(values) - 1
        added = []
        for value in values[depth]:
            child = node.children.get(value, _ABSENT)
            if child is _ABSENT:
                child = None if last else self._values(depth + 1)
                node.add(value, child)
                if last:
                    added.append(prefix + (value,))
            if not last:
                added += self.add(values, depth + 1, child, prefix + (value,))
        return added


def _single_field_values(rules: list[Rule], name: str) -> list[tuple[Value, ...]]:
    values: list = []
    for rule in rules:
        values.extend(field_values(rule, name))
    if name in ADDRESS_FIELDS:
        merged: Iterable[Value] = normalize_networks(values)
    else:
        merged = normalize_ports(values)
    return [(value,) for value in merged]


def group_rules(rules: list[Rule]) -> list[RuleGroup]:
    """Split a chain's rules into groups of adjacent rules that merge, in chain order."""
    groups: list[RuleGroup] = []
    index = 0
    while index < len(rules):
        key = merge_key(rules[index])
        if key is None:
            group = RuleGroup([rules[index]])
        elif len(key[-1]) == 1:
            group = _single_field_group(rules, index, key)
        else:
            group = _concatenation_group(rules, index, key)
        groups.append(group)
        index += len(group.rules)
    return groups


def _single_field_group(rules: list[Rule], start: int, key: tuple) -> RuleGroup:
    """Take the rules from start on that share key; one set of values needs no overlap check."""
    end = start + 1
    while end < len(rules) and merge_key(rules[end]) == key:
        end += 1
    members = rules[start:end]
    if len(members) == 1:
        return RuleGroup(members)
    fields = key[-1]
    return RuleGroup(members, fields, _single_field_values(members, fields[0]))


def _concatenation_group(rules: list[Rule], start: int, key: tuple) -> RuleGroup:
    """Take the rules from start on that share key, up to the first whose elements overlap."""
    fields = key[-1]
    index = ElementIndex(fields)
    elements = index.add([field_values(rules[start], name) for name in fields])
    end = start + 1
    while end < len(rules) and merge_key(rules[end]) == key:
        values = [field_values(rules[end], name) for name in fields]
        if index.conflicts(values):
            break
        elements += index.add(values)
        end += 1
    members = rules[start:end]
    if len(members) == 1:
        return RuleGroup(members)
    return _without_constant_fields(RuleGroup(members, fields, elements))


def _without_constant_fields(group: RuleGroup) -> RuleGroup:
    """Leave out of the set the fields whose values are the same in every rule of the group.

    The rule then matches such a field as a single rule would. Leaving a field
    out keeps the elements free of overlaps, because elements that agree in
    that field differed in another.
    """
    first = group.rules[0]
    varying = tuple(
        name
        for name in group.fields
        if any(field_values(rule, name) != field_values(first, name) for rule in group.rules)
    )
    if varying == group.fields:
        return group
    if len(varying) == 1:
        return RuleGroup(group.rules, varying, _single_field_values(group.rules, varying[0]))
    positions = [group.fields.index(name) for name in varying]
    elements = list(dict.fromkeys(tuple(e[i] for i in positions) for e in group.elements))
    return RuleGroup(group.rules, varying, elements)
