"""Syntax tree of a policy file, built from Lark's parse tree.

The nodes here mirror the language one to one; names are not resolved yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compiler.errors import Source


@dataclass
class PortItem:
    """A port as written: a number, a range ``low-high``, or a service name."""

    kind: str  # "number", "range" or "name"
    text: str
    source: Source


@dataclass
class AddressItem:
    """An address as written: a host or CIDR, ``any``, or a host group name."""

    kind: str  # "address", "any" or "group"
    text: str
    source: Source
    negated: bool = False


@dataclass
class PolicyStmt:
    name: str
    source: Source


@dataclass
class ServiceDef:
    name: str
    items: list[tuple[str | None, PortItem]]
    source: Source


@dataclass
class HostsDef:
    name: str
    items: list[AddressItem]
    source: Source


@dataclass
class DefaultStmt:
    action: str
    directions: list[tuple[str, Source]]
    source: Source


@dataclass
class Limit:
    rate: int
    unit: str
    burst: int | None
    source: Source


@dataclass
class RuleStmt:
    """A filtering rule as written, clause by clause."""

    action: str
    source: Source
    text: str
    protocol: str | None = None
    protocol_source: Source | None = None
    ports: list[PortItem] = field(default_factory=list)
    directions: list[tuple[str, Source]] = field(default_factory=list)
    from_addresses: list[AddressItem] = field(default_factory=list)
    from_ports: list[PortItem] = field(default_factory=list)
    to_addresses: list[AddressItem] = field(default_factory=list)
    to_ports: list[PortItem] = field(default_factory=list)
    in_interface: tuple[str, Source] | None = None
    out_interface: tuple[str, Source] | None = None
    states: list[tuple[str, Source]] = field(default_factory=list)
    log: bool = False
    log_prefix: str | None = None
    log_source: Source | None = None
    limit: Limit | None = None
    comment: str | None = None
    reject_with: tuple[str, Source] | None = None
    clauses: dict[str, Source] = field(default_factory=dict)


@dataclass
class TargetSetting:
    """One ``KEY = VALUE`` entry of a target block, the value unquoted."""

    key: str
    value: str
    kind: str  # "name", "int" or "string"
    source: Source
    value_source: Source


@dataclass
class TargetSettings:
    """A ``target NAME { ... }`` block: settings for one target, in order."""

    target: str
    entries: list[TargetSetting]
    source: Source


Statement = PolicyStmt | ServiceDef | HostsDef | DefaultStmt | RuleStmt | TargetSettings
