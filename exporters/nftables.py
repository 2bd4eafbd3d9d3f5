"""nftables exporter: one ``nft -f`` script with a single ``inet`` table.

The script declares the table, deletes it and defines it again in the same
transaction, so a reload replaces the old rules atomically (nft 1.0.6 has no
``destroy table``). Syntax follows nft(8), version 1.0.6.
"""

from __future__ import annotations

from compiler import capabilities
from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES, REJECT_TYPES, TCP_RESET
from compiler.graph import AddressMatch, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters.common import cut_utf8, default_reference, header_lines, plain_text, source_reference

# nftables keeps at most 128 bytes of user data for a comment, NUL included
# (NFTNL_UDATA_COMMENT_MAXLEN in libnftnl).
MAX_COMMENT_BYTES = 127
# nft_log stores the prefix in a 128-byte buffer including the NUL.
MAX_LOG_PREFIX = 127
STATE_ORDER = ("invalid", "new", "established", "related", "untracked")
FILE = "ruleset.nft"


class NftablesExporter:
    name = "nftables"
    description = "nft -f script with one inet table that replaces itself atomically"
    capabilities = capabilities.ALL

    def check(self, graph: RuleGraph):
        from compiler.errors import Diagnostic

        return [
            Diagnostic(
                f"nftables cannot express a log prefix longer than {MAX_LOG_PREFIX} bytes",
                rule.source,
            )
            for rule in graph.rules()
            if rule.log_prefix and len(rule.log_prefix.encode()) > MAX_LOG_PREFIX
        ]

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_ruleset(graph)}


def render_ruleset(graph: RuleGraph) -> str:
    table = graph.name
    lines = ["#!/usr/sbin/nft -f", *header_lines(graph, "nftables"), f"# Load with: nft -f {FILE}", ""]
    lines += [f"table inet {table}", f"delete table inet {table}", "", f"table inet {table} {{"]
    for index, (name, chain) in enumerate(graph.chains.items()):
        if index:
            lines.append("")
        policy = "drop" if chain.policy in ("drop", "reject") else "accept"
        lines.append(f"\tchain {name} {{")
        lines.append(f"\t\ttype filter hook {name} priority filter; policy {policy};")
        previous = None
        for rule in chain.rules:
            reference = source_reference(graph, rule)
            if reference != previous:
                lines.append(f"\t\t# {reference}")
                previous = reference
            lines.append("\t\t" + rule_statement(rule))
        if chain.policy == "reject":
            lines.append(f"\t\t# {default_reference(graph, chain)}")
            lines.append("\t\treject with icmpx type port-unreachable")
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _set(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _ports(ports: tuple[PortRange, ...]) -> str:
    return _set([str(p) for p in ports])


def _address(keyword: str, match: AddressMatch | None, family: str | None) -> list[str]:
    if match is None or not match.networks:
        return []
    prefix = "ip" if family == "ipv4" else "ip6"
    operator = ["!="] if match.negated else []
    return [prefix, keyword, *operator, _set([_network(n) for n in match.networks])]


def _network(network) -> str:
    """Write a host as a bare address, as ``nft list`` prints it."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def rule_statement(rule: Rule) -> str:
    """Return the nft statement for one rule, matches first, verdict last."""
    words: list[str] = []
    if rule.in_interface:
        words += ["iifname", _interface(rule.in_interface)]
    if rule.out_interface:
        words += ["oifname", _interface(rule.out_interface)]
    family = rule.family
    has_address = bool((rule.saddr and rule.saddr.networks) or (rule.daddr and rule.daddr.networks))
    implied = rule.protocol in ("icmp", "icmpv6")
    if family and not has_address and not implied:
        words += ["meta", "nfproto", family]
    words += _address("saddr", rule.saddr, family)
    words += _address("daddr", rule.daddr, family)

    protocol = rule.protocol
    if protocol in ("tcp", "udp"):
        if rule.sports:
            words += [protocol, "sport", _ports(rule.sports)]
        if rule.dports:
            words += [protocol, "dport", _ports(rule.dports)]
        if not rule.sports and not rule.dports:
            words += ["meta", "l4proto", protocol]
    elif protocol in ("icmp", "icmpv6"):
        if rule.icmp_types:
            table = ICMP_TYPES if protocol == "icmp" else ICMPV6_TYPES
            words += [protocol, "type", _set([table[t].nftables for t in rule.icmp_types])]
        else:
            words += ["meta", "l4proto", "icmp" if protocol == "icmp" else "ipv6-icmp"]

    if rule.ct_states:
        words += ["ct", "state", ",".join(s for s in STATE_ORDER if s in rule.ct_states)]
    if rule.limit:
        words += ["limit", "rate", f"{rule.limit.rate}/{rule.limit.unit}"]
        if rule.limit.burst is not None:
            words += ["burst", str(rule.limit.burst), "packets"]
    if rule.log:
        words += ["log"]
        if rule.log_prefix:
            words += ["prefix", f'"{plain_text(rule.log_prefix)}"']
    words += _verdict(rule)
    if rule.comment:
        words += ["comment", f'"{cut_utf8(plain_text(rule.comment), MAX_COMMENT_BYTES)}"']
    return " ".join(words)


def _interface(name: str) -> str:
    if name.endswith("+"):
        return f'"{name[:-1]}*"'
    return f'"{name}"'


def _verdict(rule: Rule) -> list[str]:
    if rule.action != "reject":
        return [rule.action]
    if rule.reject_with == TCP_RESET:
        return ["reject", "with", "tcp", "reset"]
    kind = REJECT_TYPES[rule.reject_with or "port-unreachable"][2]
    return ["reject", "with", "icmpx", "type", kind]


@hookimpl
def polywall_exporters():
    return [NftablesExporter()]
