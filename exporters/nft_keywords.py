"""Words that nft reads as keywords where it expects a table name.

These are the keywords that nftables' scanner (src/scanner.l) recognizes in
its initial state, so ``table inet WORD`` fails to parse when WORD is one of
them. nft 1.0.6 rejects 153 of them; the rest are keywords of later releases,
kept so that an export stays loadable after an upgrade.
"""

NFT_KEYWORDS = frozenset({
    "accept", "add", "ah", "all", "and", "arp", "auto-merge", "bridge", "cgroup", "chain",
    "comment", "comp", "constant", "continue", "counter", "cpu", "create", "ct", "day", "dccp",
    "define", "delete", "describe", "destroy", "device", "devices", "dnat", "drop", "dst",
    "dup", "dynamic", "ecn", "element", "elements", "eq", "esp", "ether", "exists", "expires",
    "export", "exthdr", "fib", "flags", "flow", "flowtable", "flush", "frag", "fwd",
    "gc-interval", "ge", "geneve", "get", "goto", "gre", "gretap", "gt", "handle", "hbh",
    "hook", "hour", "ibriport", "ibrname", "icmp", "icmpv6", "igmp", "iif", "iifgroup",
    "iifname", "iiftype", "import", "include", "index", "inet", "insert", "interval", "ip",
    "ip6", "ipsec", "jhash", "jump", "last", "le", "limit", "list", "log", "lshift", "lt",
    "map", "mark", "masquerade", "meta", "meter", "mh", "missing", "monitor", "ne", "netdev",
    "nftrace", "not", "notrack", "numgen", "obriport", "obrname", "offload", "oif", "oifgroup",
    "oifname", "oiftype", "or", "osf", "pkttype", "policy", "position", "priority", "queue",
    "quota", "random", "redefine", "redirect", "reject", "rename", "replace", "reset", "return",
    "rshift", "rt", "rt0", "rt2", "rtclassid", "rule", "ruleset", "sctp", "secmark", "set",
    "size", "skgid", "skuid", "snat", "socket", "srh", "symhash", "synproxy", "table", "tcp",
    "th", "time", "timeout", "tproxy", "tunnel", "type", "typeof", "udp", "udplite", "undefine",
    "update", "vlan", "vmap", "vni", "vxlan", "xor", "xt",
})
