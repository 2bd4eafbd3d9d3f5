"""iptables exporter: ``rules.v4`` and ``rules.v6`` for iptables-restore.

The file names are those of Debian's iptables-persistent. Facts about options
and limits come from iptables(8) and iptables-extensions(8), version 1.8.9.
"""

from __future__ import annotations

from compiler import capabilities
from compiler.catalog import ICMP_TYPES, ICMPV6_TYPES, REJECT_TYPES, TCP_RESET
from compiler.errors import Diagnostic
from compiler.graph import AddressMatch, PortRange, Rule, RuleGraph
from compiler.hookspecs import hookimpl
from exporters.common import chunk_ports, cut_utf8, default_reference, header_lines, plain_text, source_reference

# multiport takes at most 15 ports, a range counting as two (iptables-extensions(8)).
MULTIPORT_SLOTS = 15
# The LOG target accepts a prefix of at most 29 bytes.
MAX_LOG_PREFIX = 29
# xt_comment stores 256 bytes including the terminating NUL.
MAX_COMMENT_BYTES = 255
# The limit match scales rates by XT_LIMIT_SCALE = 10000, so at most 10000
# packets per second; per minute and so on the bound scales up.
# The limit match takes a burst of at most 10000 (iptables-extensions(8), limit).
MAX_LIMIT_BURST = 10000
MAX_LIMIT_RATE = {"second": 10000, "minute": 600000, "hour": 36000000, "day": 864000000}
# iptables-save prints conntrack states in this order.
STATE_ORDER = ("invalid", "new", "related", "established", "untracked")
CHAIN_NAMES = {"input": "INPUT", "forward": "FORWARD", "output": "OUTPUT"}
VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT"}
FILES = {"ipv4": "rules.v4", "ipv6": "rules.v6"}


class IptablesExporter:
    name = "iptables"
    description = "iptables-restore files rules.v4 and rules.v6 (iptables-persistent layout)"
    capabilities = capabilities.ALL

    def check(self, graph: RuleGraph) -> list[Diagnostic]:
        problems = []
        for rule in graph.rules():
            if rule.log_prefix and len(rule.log_prefix.encode()) > MAX_LOG_PREFIX:
                problems.append(
                    Diagnostic(
                        f"iptables cannot express a log prefix longer than {MAX_LOG_PREFIX} bytes "
                        f"(this one has {len(rule.log_prefix.encode())}, with the trailing space)",
                        rule.source,
                    )
                )
            if rule.limit and rule.limit.rate > MAX_LIMIT_RATE[rule.limit.unit]:
                problems.append(
                    Diagnostic(
                        f"iptables cannot express a rate above {MAX_LIMIT_RATE[rule.limit.unit]}/{rule.limit.unit}",
                        rule.source,
                    )
                )
            if rule.limit and rule.limit.burst and rule.limit.burst > MAX_LIMIT_BURST:
                problems.append(
                    Diagnostic(f"iptables cannot express a burst above {MAX_LIMIT_BURST}", rule.source)
                )
        return problems

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {FILES[family]: _render_family(graph, family) for family in ("ipv4", "ipv6")}


def _render_family(graph: RuleGraph, family: str) -> str:
    tool = "iptables-restore" if family == "ipv4" else "ip6tables-restore"
    lines = header_lines(graph, "iptables")
    lines.append(f"# Load with: {tool} < {FILES[family]}")
    lines.append("*filter")
    for name, chain in graph.chains.items():
        policy = "DROP" if chain.policy in ("drop", "reject") else "ACCEPT"
        lines.append(f":{CHAIN_NAMES[name]} {policy} [0:0]")
    body: list[str] = []
    helper_chains: list[str] = []
    for name, chain in graph.chains.items():
        previous = None
        for rule in chain.rules:
            if family not in rule.families:
                continue
            reference = source_reference(graph, rule)
            if reference != previous:
                body.append(f"# {reference}")
                previous = reference
            body.extend(_rule_lines(rule, family, helper_chains))
        if chain.policy == "reject":
            body.append(f"# {default_reference(graph, chain)}")
            body.append(f"-A {CHAIN_NAMES[name]} -j REJECT --reject-with {_reject_type(None, family)}")
    for helper in helper_chains:
        lines.append(f":{helper} - [0:0]")
    lines.extend(body)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _reject_type(rule: Rule | None, family: str) -> str:
    kind = rule.reject_with if rule is not None else None
    if kind == TCP_RESET:
        return "tcp-reset"
    v4, v6, _ = REJECT_TYPES[kind or "port-unreachable"]
    return v4 if family == "ipv4" else v6


def _port_value(item: PortRange) -> str:
    return str(item.low) if item.low == item.high else f"{item.low}:{item.high}"


def _port_matches(protocol: str, sports: tuple[PortRange, ...], dports: tuple[PortRange, ...]) -> list[str]:
    """Return the port options: single ports through the protocol's own match, lists through multiport.

    Each list gets its own multiport instance, because one instance cannot
    take source and destination ports together.
    """
    single: list[str] = []
    lists: list[str] = []
    for option, ports in (("sport", sports), ("dport", dports)):
        if len(ports) == 1:
            single += [f"--{option}", _port_value(ports[0])]
        elif ports:
            lists += ["-m", "multiport", f"--{option}s", ",".join(_port_value(p) for p in ports)]
    return (["-m", protocol, *single] if single else []) + lists


# iptables-restore rejects a parameter of 1024 characters or more ("Parameter
# too long!"), so long address lists are split over several rules.
MAX_PARAMETER_CHARS = 1000


def _address_chunks(match: AddressMatch | None, one_each: bool = False) -> list[tuple[str, ...]]:
    """Split a positive address list into comma lists that fit one parameter.

    With one_each, every network gets its own rule: iptables rejects "!" on
    one side of a rule whose other side lists several addresses.
    """
    if match is None or not match.networks or match.negated:
        return [()]
    if one_each:
        return [(str(network),) for network in match.networks]
    chunks: list[tuple[str, ...]] = []
    current: list[str] = []
    length = 0
    for network in match.networks:
        text = str(network)
        if current and length + 1 + len(text) > MAX_PARAMETER_CHARS:
            chunks.append(tuple(current))
            current, length = [], 0
        current.append(text)
        length += len(text) + (1 if length else 0)
    chunks.append(tuple(current))
    return chunks


def _rule_lines(rule: Rule, family: str, helper_chains: list[str]) -> list[str]:
    chain = CHAIN_NAMES[rule.chain]
    head: list[str] = []
    if rule.in_interface:
        head += ["-i", rule.in_interface]
    if rule.out_interface:
        head += ["-o", rule.out_interface]

    # iptables allows "!" only with a single address, so a negated list
    # becomes a helper chain that returns for each listed network.
    negated = [
        (flag, match)
        for flag, match in (("-s", rule.saddr), ("-d", rule.daddr))
        if match is not None and match.negated and len(match.networks) > 1
    ]
    address_variants: list[list[str]] = [[]]
    any_negated = any(m is not None and m.negated for m in (rule.saddr, rule.daddr))
    for flag, match in (("-s", rule.saddr), ("-d", rule.daddr)):
        if match is None or not match.networks or any(m is match for _, m in negated):
            continue
        if match.negated:
            options = [["!", flag, str(match.networks[0])]]
        else:
            options = [[flag, ",".join(chunk)] for chunk in _address_chunks(match, any_negated)]
        address_variants = [done + option for done in address_variants for option in options]

    protocol = rule.protocol
    protocol_match: list[str] = []
    if protocol == "icmpv6":
        protocol_match = ["-p", "ipv6-icmp"]
    elif protocol:
        protocol_match = ["-p", protocol]

    tail: list[str] = []
    if rule.ct_states:
        states = [s.upper() for s in STATE_ORDER if s in rule.ct_states]
        tail += ["-m", "conntrack", "--ctstate", ",".join(states)]
    if rule.limit:
        tail += ["-m", "limit", "--limit", f"{rule.limit.rate}/{rule.limit.unit}"]
        if rule.limit.burst is not None:
            tail += ["--limit-burst", str(rule.limit.burst)]
    if rule.comment:
        text = cut_utf8(plain_text(rule.comment), MAX_COMMENT_BYTES)
        tail += ["-m", "comment", "--comment", f'"{text}"']

    verdict = ["-j", VERDICTS[rule.action]]
    if rule.action == "reject":
        verdict += ["--reject-with", _reject_type(rule, family)]
    log = ["-j", "LOG"]
    if rule.log_prefix:
        log += ["--log-prefix", f'"{plain_text(rule.log_prefix)}"']

    variants = [[]]
    if rule.icmp_types:
        table = ICMP_TYPES if protocol == "icmp" else ICMPV6_TYPES
        option = "--icmp-type" if protocol == "icmp" else "--icmpv6-type"
        variants = [[option, table[t].iptables] for t in rule.icmp_types]
    else:
        port_variants = []
        for dchunk in chunk_ports(rule.dports, MULTIPORT_SLOTS):
            for schunk in chunk_ports(rule.sports, MULTIPORT_SLOTS):
                port_variants.append(_port_matches(protocol or "", schunk, dchunk))
        variants = port_variants

    lines = []
    combined = [addresses + protocol_match + variant for addresses in address_variants for variant in variants]
    for variant in combined:
        matches = head + variant
        if negated:
            helper = f"pw-{rule.chain}-{rule.source.line}-{len(helper_chains) + 1}"
            helper_chains.append(helper)
            lines.append(_join(["-A", chain, *matches, "-j", helper]))
            for flag, match in negated:
                for network in match.networks:
                    lines.append(_join(["-A", helper, flag, str(network), "-j", "RETURN"]))
            if rule.log:
                lines.append(_join(["-A", helper, *tail, *log]))
            lines.append(_join(["-A", helper, *tail, *verdict]))
            continue
        if rule.log:
            lines.append(_join(["-A", chain, *matches, *tail, *log]))
        lines.append(_join(["-A", chain, *matches, *tail, *verdict]))
    return lines


def _join(words: list[str]) -> str:
    return " ".join(words)


@hookimpl
def polywall_exporters():
    return [IptablesExporter()]
