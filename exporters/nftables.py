"""nftables exporter: one ``nft -f`` script with a single ``inet`` table.

The script declares the table, deletes it and defines it again in the same
transaction, so a reload replaces the old rules atomically (nft 1.0.6 has no
``destroy table``). Adjacent rules that differ only in their addresses and
ports become one rule over a set (see exporters.nftables_merge). Syntax
follows nft(8), version 1.0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler import capabilities
from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES, REJECT_TYPES, TCP_RESET
from compiler.graph import AddressMatch, Chain, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters.common import cut_utf8, default_reference, header_lines, plain_text, source_reference
from exporters.nftables_merge import RuleGroup, group_rules

# nftables keeps at most 128 bytes of user data for a comment, NUL included
# (NFTNL_UDATA_COMMENT_MAXLEN in libnftnl).
MAX_COMMENT_BYTES = 127
# nft_log stores the prefix in a 128-byte buffer including the NUL.
MAX_LOG_PREFIX = 127
STATE_ORDER = ("invalid", "new", "established", "related", "untracked")
# A merged rule longer than this many characters on one line uses a named set
# instead, whose elements are listed one per line after the table. Fewer rules
# than MIN_NAMED_SET_RULES stay as they are rather than get a named set: the
# kernel loads a few rules quickly, and a reader finds their values in place.
MAX_INLINE_WIDTH = 100
MIN_NAMED_SET_RULES = 4
FILE = "ruleset.nft"


class NftablesExporter:
    name = "nftables"
    description = "nft -f script with one inet table that replaces itself atomically"
    capabilities = capabilities.ALL

    def check(self, graph: RuleGraph):
        from compiler.errors import Diagnostic
        from exporters.nft_keywords import NFT_KEYWORDS

        problems = []
        if graph.name in NFT_KEYWORDS:
            problems.append(
                Diagnostic(
                    f"nftables cannot use the keyword '{graph.name}' as a table name",
                    graph.name_source,
                    "choose another policy name",
                )
            )
        for rule in graph.rules():
            if rule.log_prefix and len(rule.log_prefix.encode()) > MAX_LOG_PREFIX:
                problems.append(
                    Diagnostic(
                        f"nftables cannot express a log prefix longer than {MAX_LOG_PREFIX} bytes",
                        rule.source,
                    )
                )
            # nft 1.0.6 reads '$' in a quoted string as a variable and has no escape for it.
            for text, what in ((rule.log_prefix, "log prefix"), (rule.comment, "comment")):
                if text and "$" in text:
                    problems.append(
                        Diagnostic(f"nftables cannot express '$' in a {what}", rule.source)
                    )
        return problems

    def warnings(self, graph: RuleGraph):
        from compiler.errors import Diagnostic

        return [
            Diagnostic(
                f"the comment is cut to the {MAX_COMMENT_BYTES} bytes nftables keeps",
                rule.source,
                severity="warning",
            )
            for rule in graph.rules()
            if rule.comment and len(plain_text(rule.comment).encode()) > MAX_COMMENT_BYTES
        ]

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILE: render_ruleset(graph)}


@dataclass
class NamedSet:
    """A set declared in the table for a merged rule too long to write on one line."""

    name: str
    type: str
    elements: list[str]


def render_ruleset(graph: RuleGraph) -> str:
    table = graph.name
    chains: list[str] = []
    named_sets: list[NamedSet] = []
    for name, chain in graph.chains.items():
        chains.append("")
        chains += _chain_lines(graph, name, chain, named_sets)

    lines = ["#!/usr/sbin/nft -f", *header_lines(graph, "nftables"), f"# Load with: nft -f {FILE}", ""]
    lines += [f"table inet {table}", f"delete table inet {table}", "", f"table inet {table} {{"]
    for named in named_sets:
        lines.append(f"\tset {named.name} {{ type {named.type}; flags interval; }}")
    # Drop the blank line before the first chain when no set declaration precedes it.
    lines += chains if named_sets else chains[1:]
    lines.append("}")
    for named in named_sets:
        lines += ["", f"# Elements of set {named.name}, for the rules listed above its rule."]
        lines.append(f"add element inet {table} {named.name} {{")
        lines += [f"\t{element}," for element in named.elements[:-1]]
        lines += [f"\t{named.elements[-1]}", "}"]
    return "\n".join(lines) + "\n"


def _chain_lines(graph: RuleGraph, name: str, chain: Chain, named_sets: list[NamedSet]) -> list[str]:
    policy = "drop" if chain.policy in ("drop", "reject") else "accept"
    lines = [f"\tchain {name} {{", f"\t\ttype filter hook {name} priority filter; policy {policy};"]
    previous = None
    for group in group_rules(chain.rules):
        merged = _merged_statement(group, name, named_sets)
        for rule in group.rules:
            reference = source_reference(graph, rule)
            if reference != previous:
                lines.append(f"\t\t# {reference}")
                previous = reference
            if merged is None:
                lines.append("\t\t" + rule_statement(rule))
        # A merged rule comes after the references of every rule it stands for.
        if merged is not None:
            lines.append("\t\t" + merged)
    if chain.policy == "reject":
        lines.append(f"\t\t# {default_reference(graph, chain)}")
        lines.append("\t\treject with icmpx type port-unreachable")
    lines.append("\t}")
    return lines


def _merged_statement(group: RuleGroup, chain: str, named_sets: list[NamedSet]) -> str | None:
    """Return the one rule over a set that stands for a group, or None to keep its rules.

    The set is written in the rule when the rule fits in MAX_INLINE_WIDTH.
    Otherwise a group of at least MIN_NAMED_SET_RULES rules gets a named set,
    appended to named_sets, and a smaller group keeps its rules.
    """
    first = group.rules[0]
    if not group.fields:
        return None
    selector = " . ".join(_selector(first, name) for name in group.fields)
    texts: dict[int, str] = {}

    def text(value) -> str:
        return _element_text(value, texts)

    elements = [" . ".join(map(text, element)) for element in group.elements]
    before = " ".join(_interface_words(first) + _family_words(first) + [selector])
    after = " ".join(_match_words(first, group.fields) + _action_words(first))
    inline = f"{before} {{ {', '.join(elements)} }} {after}"
    if len(inline) <= MAX_INLINE_WIDTH:
        return inline
    if len(group.rules) < MIN_NAMED_SET_RULES:
        return None
    set_name = f"{chain}_{len(named_sets) + 1}"
    set_type = " . ".join(_element_type(first, name) for name in group.fields)
    named_sets.append(NamedSet(set_name, set_type, elements))
    return f"{before} @{set_name} {after}"


def _selector(rule: Rule, name: str) -> str:
    if name in ("saddr", "daddr"):
        return f"{_address_prefix(rule.family)} {name}"
    return f"{rule.protocol} {name[:-1]}"


def _element_type(rule: Rule, name: str) -> str:
    if name in ("saddr", "daddr"):
        return "ipv4_addr" if rule.family == "ipv4" else "ipv6_addr"
    return "inet_service"


def _element_text(value, texts: dict[int, str]) -> str:
    """Return a set element's value as nft writes it.

    texts caches the text by the value's id: the elements of one rule share
    its value objects, and the graph keeps them alive while it is rendered.
    """
    text = texts.get(id(value))
    if text is None:
        text = str(value) if isinstance(value, PortRange) else _network(value)
        texts[id(value)] = text
    return text


def _set(values: list[str]) -> str:
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


def _ports(ports: tuple[PortRange, ...]) -> str:
    return _set([str(p) for p in ports])


def _address(keyword: str, match: AddressMatch | None, family: str | None) -> list[str]:
    if match is None or not match.networks:
        return []
    operator = ["!="] if match.negated else []
    return [_address_prefix(family), keyword, *operator, _set([_network(n) for n in match.networks])]


def _address_prefix(family: str | None) -> str:
    return "ip" if family == "ipv4" else "ip6"


def _network(network) -> str:
    """Write a host as a bare address, as ``nft list`` prints it."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def rule_statement(rule: Rule) -> str:
    """Return the nft statement for one rule, matches first, verdict last."""
    words = _interface_words(rule) + _family_words(rule) + _match_words(rule) + _action_words(rule)
    return " ".join(words)


def _interface_words(rule: Rule) -> list[str]:
    words: list[str] = []
    if rule.in_interface:
        words += ["iifname", _interface(rule.in_interface)]
    if rule.out_interface:
        words += ["oifname", _interface(rule.out_interface)]
    return words


def _family_words(rule: Rule) -> list[str]:
    """Match the family explicitly when no address or ICMP protocol implies it."""
    has_address = bool((rule.saddr and rule.saddr.networks) or (rule.daddr and rule.daddr.networks))
    implied = rule.protocol in ("icmp", "icmpv6")
    if rule.family and not has_address and not implied:
        return ["meta", "nfproto", rule.family]
    return []


def _match_words(rule: Rule, carried: tuple[str, ...] = ()) -> list[str]:
    """Return the address, port and ICMP matches, leaving out the fields a merged set carries."""
    family = rule.family
    words: list[str] = []
    if "saddr" not in carried:
        words += _address("saddr", rule.saddr, family)
    if "daddr" not in carried:
        words += _address("daddr", rule.daddr, family)

    protocol = rule.protocol
    if protocol in ("tcp", "udp"):
        if rule.sports and "sports" not in carried:
            words += [protocol, "sport", _ports(rule.sports)]
        if rule.dports and "dports" not in carried:
            words += [protocol, "dport", _ports(rule.dports)]
        if not rule.sports and not rule.dports:
            words += ["meta", "l4proto", protocol]
    elif protocol in ("icmp", "icmpv6"):
        if rule.icmp_types:
            table = ICMP_TYPES if protocol == "icmp" else ICMPV6_TYPES
            words += [protocol, "type", _set([table[t].nftables for t in rule.icmp_types])]
        else:
            words += ["meta", "l4proto", "icmp" if protocol == "icmp" else "ipv6-icmp"]
    return words


def _action_words(rule: Rule) -> list[str]:
    """Return the states, limit and log statements, the verdict and the comment."""
    words: list[str] = []
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
    return words


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
