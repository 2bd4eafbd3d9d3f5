"""Built-in names: the service catalog, ICMP types, reject types and states."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class CatalogService:
    """A service from the shipped catalog."""

    name: str
    low: int
    high: int
    protocols: tuple[str, ...]


@cache
def services() -> dict[str, CatalogService]:
    """Return the shipped service catalog by name, aliases included."""
    text = resources.files(__package__).joinpath("services.txt").read_text("utf-8")
    table: dict[str, CatalogService] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, ports, protocols, *aliases = line.split()
        low, _, high = ports.partition("-")
        entry = CatalogService(name, int(low), int(high or low), tuple(protocols.split(",")))
        for key in (name, *aliases):
            table[key] = entry
    return table


@dataclass(frozen=True)
class IcmpType:
    """An ICMP or ICMPv6 message type and the names each tool knows it by."""

    name: str
    code: int
    iptables: str
    nftables: str


# Type numbers from RFC 792 (ICMP) and RFC 4443 / RFC 4861 (ICMPv6). The
# iptables names are those of `iptables -p icmp -h` and `ip6tables -p
# ipv6-icmp -h` (iptables 1.8.9); the nftables names those of nft(8) 1.0.6.
ICMP_TYPES: dict[str, IcmpType] = {
    t.name: t
    for t in [
        IcmpType("echo-reply", 0, "echo-reply", "echo-reply"),
        IcmpType("destination-unreachable", 3, "destination-unreachable", "destination-unreachable"),
        IcmpType("source-quench", 4, "source-quench", "source-quench"),
        IcmpType("redirect", 5, "redirect", "redirect"),
        IcmpType("echo-request", 8, "echo-request", "echo-request"),
        IcmpType("router-advertisement", 9, "router-advertisement", "router-advertisement"),
        IcmpType("router-solicitation", 10, "router-solicitation", "router-solicitation"),
        IcmpType("time-exceeded", 11, "time-exceeded", "time-exceeded"),
        IcmpType("parameter-problem", 12, "parameter-problem", "parameter-problem"),
        IcmpType("timestamp-request", 13, "timestamp-request", "timestamp-request"),
        IcmpType("timestamp-reply", 14, "timestamp-reply", "timestamp-reply"),
    ]
}

ICMPV6_TYPES: dict[str, IcmpType] = {
    t.name: t
    for t in [
        IcmpType("destination-unreachable", 1, "destination-unreachable", "destination-unreachable"),
        IcmpType("packet-too-big", 2, "packet-too-big", "packet-too-big"),
        IcmpType("time-exceeded", 3, "time-exceeded", "time-exceeded"),
        IcmpType("parameter-problem", 4, "parameter-problem", "parameter-problem"),
        IcmpType("echo-request", 128, "echo-request", "echo-request"),
        IcmpType("echo-reply", 129, "echo-reply", "echo-reply"),
        IcmpType("mld-listener-query", 130, "130", "mld-listener-query"),
        IcmpType("mld-listener-report", 131, "131", "mld-listener-report"),
        IcmpType("mld-listener-done", 132, "132", "mld-listener-done"),
        IcmpType("router-solicitation", 133, "router-solicitation", "nd-router-solicit"),
        IcmpType("router-advertisement", 134, "router-advertisement", "nd-router-advert"),
        IcmpType("neighbor-solicitation", 135, "neighbour-solicitation", "nd-neighbor-solicit"),
        IcmpType("neighbor-advertisement", 136, "neighbour-advertisement", "nd-neighbor-advert"),
        IcmpType("redirect", 137, "redirect", "nd-redirect"),
        IcmpType("mld2-listener-report", 143, "143", "mld2-listener-report"),
    ]
}

# Reject replies. Each maps to the iptables REJECT --reject-with value per
# family (iptables-extensions(8), REJECT) and to the nftables icmpx type,
# which nft translates per family (nft(8), REJECT STATEMENT).
REJECT_TYPES: dict[str, tuple[str, str, str]] = {
    "port-unreachable": ("icmp-port-unreachable", "icmp6-port-unreachable", "port-unreachable"),
    "host-unreachable": ("icmp-host-unreachable", "icmp6-addr-unreachable", "host-unreachable"),
    "net-unreachable": ("icmp-net-unreachable", "icmp6-no-route", "no-route"),
    "admin-prohibited": ("icmp-admin-prohibited", "icmp6-adm-prohibited", "admin-prohibited"),
}
REJECT_ALIASES = {"no-route": "net-unreachable", "prohibited": "admin-prohibited"}
TCP_RESET = "tcp-reset"

CT_STATES = ("new", "established", "related", "invalid", "untracked")
