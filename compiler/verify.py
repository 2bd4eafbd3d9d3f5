"""``polywall verify``: load each target's export into a lab and send the probes for real.

For each probed direction the lab has a firewall namespace and one namespace
per firewall interface, joined by veth pairs whose firewall ends carry the
interface names the policy uses. The target's own tool loads the exported
configuration into the firewall namespace. Every probe packet of
``compiler.probes`` is then sent from the namespace behind its input
interface, as a TCP connect, a UDP datagram to a responder that echoes it, or
an ICMP echo. Each observed outcome is compared with the evaluator's verdict.

Probes carry the policy's own addresses. The lab adds each source address to
the sending namespace and each destination address to the namespace that
owns it, with host routes inside the lab only. Probes whose addresses or
bound ports would clash in one namespace go in separate batches.

Every namespace and process belongs to a ``Lab``, which removes them when
the run ends, fails or is interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from compiler import capabilities
from compiler.errors import Diagnostic, PolywallError, SourceCache, render
from compiler.graph import RuleGraph
from compiler.netlab import Lab, LabError, Probe
from compiler.packet import IpAddress
from compiler.probes import PROBED_DIRECTIONS, LabPlan, ProbeCase, ProbeSet, derive_probes

# The commands that load each target's files in the firewall namespace.
LOADERS: dict[str, list[tuple[str, list[str]]]] = {
    "iptables": [("rules.v4", ["iptables-restore"]), ("rules.v6", ["ip6tables-restore"])],
    "nftables": [("ruleset.nft", ["nft", "-f", "-"])],
}
DEFAULT_TARGETS = ("iptables", "nftables")
# Seconds a probe waits for a reply before it counts as dropped.
PROBE_TIMEOUT = 1.0
# Seconds to wait for a fresh link to carry an echo in both families.
LINK_READY_TIMEOUT = 10.0
# The interface name of the far end of every link, inside its own namespace.
SIDE_INTERFACE = "up0"

Transform = Callable[[str, dict[str, str]], dict[str, str]]
Progress = Callable[[str], None]


class VerifyError(PolywallError):
    """verify cannot run here: no root, no namespaces, a missing tool or a target it cannot load."""


@dataclass
class DirectionResult:
    """The probes of one direction and the outcome each target showed for each probe."""

    probes: ProbeSet
    observed: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Mismatch:
    """A probe whose observed outcome on a target differs from the expected one."""

    target: str
    direction: str
    case: ProbeCase
    observed: str

    def __str__(self) -> str:
        return (f"{self.target} {self.direction}: {self.case.label}: expected {self.case.expected}, "
                f"observed {self.observed} ({self.case.reason})")


@dataclass
class VerifyResult:
    """Everything one verify run found, in probe order."""

    targets: list[str]
    directions: list[DirectionResult]
    not_probed: list[str]

    @property
    def mismatches(self) -> list[Mismatch]:
        found = []
        for result in self.directions:
            for target in self.targets:
                for case, observed in zip(result.probes.cases, result.observed.get(target, [])):
                    if observed != case.expected:
                        found.append(Mismatch(target, result.probes.direction, case, observed))
        return found

    @property
    def probe_count(self) -> int:
        return sum(len(r.probes.cases) for r in self.directions)


def check_environment(targets: list[str]) -> None:
    """Raise VerifyError unless this process can build a lab and load every target."""
    unknown = [t for t in targets if t not in LOADERS]
    if unknown:
        raise VerifyError(
            f"verify cannot load target '{unknown[0]}' in a lab; it supports {', '.join(LOADERS)}"
        )
    if os.geteuid() != 0:
        raise VerifyError("verify needs root to create network namespaces; run it as root")
    for tool in ["ip", "unshare", *(argv[0] for t in targets for _, argv in LOADERS[t])]:
        if shutil.which(tool) is None:
            raise VerifyError(f"verify needs the '{tool}' command, which is not on PATH")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        raise VerifyError(
            f"network namespaces are not available here: {probe.stderr.strip() or 'unshare failed'}"
        )


def export_targets(graph: RuleGraph, targets: list[str]) -> tuple[dict[str, dict[str, str]],
                                                                 list[Diagnostic]]:
    """Render each target's files, or return the problems of the targets that cannot express it."""
    from compiler.plugins import exporters

    available = exporters()
    outputs: dict[str, dict[str, str]] = {}
    problems: list[Diagnostic] = []
    for name in targets:
        exporter = available[name]
        found = capabilities.check(graph, name, frozenset(exporter.capabilities))
        if hasattr(exporter, "check"):
            found += exporter.check(graph)
        if found:
            problems.extend(found)
            continue
        outputs[name] = exporter.render(graph)
    return outputs, problems


def verify_graph(graph: RuleGraph, targets: list[str], transform: Transform | None = None,
                 progress: Progress | None = None, timeout: float = PROBE_TIMEOUT) -> VerifyResult:
    """Probe every target's export of the graph in a lab and record what each probe shows.

    ``transform(target, files)`` may change the exported files before they are
    loaded, so that a test can break an export on purpose. Raises VerifyError
    when a target cannot express the policy and LabError when the lab fails.
    """
    report = progress or (lambda message: None)
    outputs, problems = export_targets(graph, targets)
    if problems:
        raise VerifyError("; ".join(f"{p.source.file}:{p.source.line}: {p.message}"
                                    for p in problems))
    if transform is not None:
        outputs = {target: transform(target, dict(files)) for target, files in outputs.items()}

    not_probed = []
    output = graph.chains["output"]
    if output.rules or output.policy != "accept":
        count = len(output.rules)
        not_probed.append(
            f"out: the output chain ({count} rule{'s' if count != 1 else ''}, default "
            f"{output.policy}) is not probed, because verify sends packets into and through the "
            "firewall, not from it; it is only used to predict whether answers come back"
        )
    directions = []
    for direction in PROBED_DIRECTIONS:
        probes = derive_probes(graph, direction)
        result = DirectionResult(probes)
        directions.append(result)
        if not probes.cases:
            continue
        for target in targets:
            links = len(probes.plan.interfaces)
            report(f"verify: {target}, {direction}: building the lab "
                   f"({links} link{'s' if links != 1 else ''})")
            result.observed[target] = _probe_target(probes, target, outputs[target], timeout,
                                                    report)
    return VerifyResult(list(targets), directions, not_probed)


def _probe_target(probes: ProbeSet, target: str, files: dict[str, str], timeout: float,
                  report: Progress) -> list[str]:
    """Build a lab for one direction, load the target's files and return each probe's outcome."""
    with Lab() as lab:
        topology = _build(lab, probes.plan)
        report(f"verify: {target}, {probes.direction}: loading the export")
        _load(lab, topology.firewall, target, files)
        batches = _batches(probes.cases, probes.direction)
        outcomes: dict[int, str] = {}
        for number, batch in enumerate(batches, 1):
            report(f"verify: {target}, {probes.direction}: sending {len(batch)} probes "
                   f"(batch {number} of {len(batches)})")
            outcomes.update(_run_batch(lab, topology, probes.cases, batch, timeout))
        return [outcomes[index] for index in range(len(probes.cases))]


@dataclass
class _Topology:
    """Namespaces of one lab: the firewall and one namespace behind each interface."""

    plan: LabPlan
    firewall: str
    sides: dict[str, str]


def _build(lab: Lab, plan: LabPlan) -> _Topology:
    role = "router" if plan.direction == "fwd" else "fw"
    firewall = lab.namespace(role)
    _disable_reverse_path_filter(lab, firewall)
    if plan.direction == "fwd":
        lab.enable_forwarding(firewall)
    sides: dict[str, str] = {}
    for index, name in enumerate(plan.interfaces):
        side = lab.namespace(f"s{index}")
        _disable_reverse_path_filter(lab, side)
        sides[name] = side
        lab.run(firewall, ["ip", "link", "add", name, "type", "veth", "peer", "name",
                           SIDE_INTERFACE, "netns", side])
        addresses = [(plan.firewall_address(name, f), plan.side_address(name, f))
                     for f in ("ipv4", "ipv6")]
        firewall_commands = [_address_command("add", own, name, plan.prefix_length(f))
                             for f, (own, _) in zip(("ipv4", "ipv6"), addresses)]
        firewall_commands.append(f"link set {name} up")
        _ip_batch(lab, firewall, firewall_commands)
        side_commands = [_address_command("add", peer, SIDE_INTERFACE, plan.prefix_length(f))
                         for f, (_, peer) in zip(("ipv4", "ipv6"), addresses)]
        side_commands.append(f"link set {SIDE_INTERFACE} up")
        # Every probe leaves its side namespace through the firewall.
        side_commands += [f"route add {default} via {own}"
                          for default, (own, _) in zip(("0.0.0.0/0", "::/0"), addresses)]
        _ip_batch(lab, side, side_commands)
        _pin_neighbours(lab, plan, name, firewall, side)
    topology = _Topology(plan, firewall, sides)
    _wait_for_links(lab, topology)
    return topology


def _disable_reverse_path_filter(lab: Lab, namespace: str) -> None:
    # Probe sources live on hosts behind other links, so strict reverse-path
    # filtering (inherited from the host on some systems) must not drop them.
    for scope in ("all", "default"):
        lab.run(namespace, ["sysctl", "-qw", f"net.ipv4.conf.{scope}.rp_filter=0"])


def _pin_neighbours(lab: Lab, plan: LabPlan, name: str, firewall: str, side: str) -> None:
    """Add permanent neighbour entries on both ends of a link.

    The evaluator does not model neighbour discovery, so a policy that drops
    ICMPv6 must not make the lab's IPv6 probes fail. On a real network such a
    policy also breaks IPv6, and verify does not report that.
    """
    firewall_mac = _mac_address(lab, firewall, name)
    side_mac = _mac_address(lab, side, SIDE_INTERFACE)
    firewall_commands, side_commands = [], []
    for family in ("ipv4", "ipv6"):
        own, peer = plan.firewall_address(name, family), plan.side_address(name, family)
        firewall_commands.append(f"neigh replace {peer} lladdr {side_mac} dev {name} nud permanent")
        side_commands.append(
            f"neigh replace {own} lladdr {firewall_mac} dev {SIDE_INTERFACE} nud permanent")
    _ip_batch(lab, firewall, firewall_commands)
    _ip_batch(lab, side, side_commands)


def _mac_address(lab: Lab, namespace: str, interface: str) -> str:
    completed = lab.run(namespace, ["ip", "-j", "link", "show", "dev", interface])
    return json.loads(completed.stdout)[0]["address"]


def _wait_for_links(lab: Lab, topology: _Topology) -> None:
    """Wait until every link carries an echo in both families, before any firewall is loaded."""
    plan = topology.plan
    deadline = time.monotonic() + LINK_READY_TIMEOUT
    for name, side in topology.sides.items():
        echoes = [Probe("icmp", str(plan.firewall_address(name, f))) for f in ("ipv4", "ipv6")]
        while True:
            outcomes = lab.probe(side, echoes, timeout=0.5)
            if all(outcome == "open" for outcome in outcomes.values()):
                break
            if time.monotonic() > deadline:
                raise LabError(f"lab link {name} did not come up: {outcomes}")


def _load(lab: Lab, namespace: str, target: str, files: dict[str, str]) -> None:
    for file_name, argv in LOADERS[target]:
        if file_name not in files:
            raise VerifyError(f"the {target} export has no file {file_name}")
        completed = lab.run(namespace, argv, input=files[file_name], check=False)
        if completed.returncode != 0:
            raise VerifyError(f"{argv[0]} rejected the {target} file {file_name}: "
                              f"{completed.stderr.strip()}")


def _address_command(verb: str, address: IpAddress, device: str, length: int | None = None) -> str:
    """Return an ``ip addr`` command for the address, as a host address unless length is given."""
    if length is None:
        length = address.max_prefixlen
    extra = " nodad" if address.version == 6 and verb == "add" else ""
    return f"addr {verb} {address}/{length} dev {device}{extra}"


def _ip_batch(lab: Lab, namespace: str, commands: list[str]) -> None:
    if commands:
        lab.run(namespace, ["ip", "-batch", "-"], input="\n".join(commands) + "\n")


def _places(case: ProbeCase, direction: str) -> tuple[str, str]:
    """Return where a probe's source and destination addresses live.

    An interface name stands for the namespace behind that interface of the
    firewall, and the empty string for the firewall itself.
    """
    packet = case.packet
    source_place = packet.in_interface or ""
    destination_place = "" if direction == "in" else packet.out_interface or ""
    return source_place, destination_place


@dataclass
class _Batch:
    """Probes that can run at once: each address in one place, no port both bound and listened."""

    indexes: list[int] = field(default_factory=list)
    places: dict[IpAddress, str] = field(default_factory=dict)
    listening: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    bound: dict[str, set[tuple[str, int]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indexes)

    def accepts(self, case: ProbeCase, direction: str) -> bool:
        packet = case.packet
        source_place, destination_place = _places(case, direction)
        for address, place in ((packet.source, source_place),
                               (packet.destination, destination_place)):
            if self.places.get(address, place) != place:
                return False
        if packet.source == packet.destination:
            return False
        if packet.destination_port is not None:
            key = (packet.protocol, packet.destination_port)
            if key in self.bound.get(destination_place, set()):
                return False
        if packet.source_port is not None:
            key = (packet.protocol, packet.source_port)
            if key in self.listening.get(source_place, set()):
                return False
        return True

    def add(self, index: int, case: ProbeCase, direction: str) -> None:
        packet = case.packet
        source_place, destination_place = _places(case, direction)
        self.indexes.append(index)
        self.places[packet.source] = source_place
        self.places[packet.destination] = destination_place
        if packet.destination_port is not None:
            self.listening.setdefault(destination_place, set()).add(
                (packet.protocol, packet.destination_port))
        if packet.source_port is not None:
            self.bound.setdefault(source_place, set()).add((packet.protocol, packet.source_port))


def _batches(cases: list[ProbeCase], direction: str) -> list[_Batch]:
    batches: list[_Batch] = []
    for index, case in enumerate(cases):
        for batch in batches:
            if batch.accepts(case, direction):
                batch.add(index, case, direction)
                break
        else:
            batch = _Batch()
            batch.add(index, case, direction)
            batches.append(batch)
    return batches


def _batch_commands(topology: _Topology, batch: _Batch, verb: str) -> dict[str, list[str]]:
    """Return the ip commands per namespace that add (or delete) a batch's addresses and routes."""
    plan = topology.plan
    link_hosts = {plan.firewall_address(n, f) for n in plan.interfaces for f in ("ipv4", "ipv6")}
    link_hosts |= {plan.side_address(n, f) for n in plan.interfaces for f in ("ipv4", "ipv6")}
    commands: dict[str, list[str]] = {}
    for address, place in sorted(batch.places.items(), key=lambda item: (item[0].version,
                                                                         item[0])):
        if address in link_hosts:
            continue
        length = address.max_prefixlen
        if place == "":
            commands.setdefault(topology.firewall, []).append(
                _address_command(verb, address, "lo"))
            continue
        commands.setdefault(topology.sides[place], []).append(
            _address_command(verb, address, SIDE_INTERFACE))
        family = "ipv4" if address.version == 4 else "ipv6"
        gateway = plan.side_address(place, family)
        commands.setdefault(topology.firewall, []).append(
            f"route {verb} {address}/{length} via {gateway}")
    return commands


def _run_batch(lab: Lab, topology: _Topology, cases: list[ProbeCase], batch: _Batch,
               timeout: float) -> dict[int, str]:
    for namespace, commands in _batch_commands(topology, batch, "add").items():
        _ip_batch(lab, namespace, commands)
    listeners = []
    try:
        for place, ports in sorted(batch.listening.items()):
            namespace = topology.firewall if place == "" else topology.sides[place]
            tcp = [port for protocol, port in ports if protocol == "tcp"]
            udp = [port for protocol, port in ports if protocol == "udp"]
            listeners.append(lab.serve(namespace, tcp=tcp, udp=udp))
        return _send(lab, topology, cases, batch, timeout)
    finally:
        for process in listeners:
            _stop(process)
        for namespace, commands in _batch_commands(topology, batch, "del").items():
            _ip_batch(lab, namespace, commands)


def _send(lab: Lab, topology: _Topology, cases: list[ProbeCase], batch: _Batch,
          timeout: float) -> dict[int, str]:
    """Run one prober per sending namespace at once and collect every outcome."""
    by_side: dict[str, list[int]] = {}
    for index in batch.indexes:
        by_side.setdefault(cases[index].packet.in_interface or "", []).append(index)
    running = []
    for place, indexes in sorted(by_side.items()):
        requests = [_probe_request(cases[i], i) for i in indexes]
        process = subprocess.Popen(
            ["ip", "netns", "exec", topology.sides[place], sys.executable, "-c", _PROBER,
             json.dumps(requests), str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lab.processes.append(process)
        running.append((indexes, process))
    outcomes: dict[int, str] = {}
    for indexes, process in running:
        stdout, stderr = process.communicate(timeout=timeout * 4 + 30)
        if process.returncode != 0:
            raise LabError(f"the prober failed ({process.returncode}): {stderr.strip()}")
        outcomes.update(zip(indexes, json.loads(stdout)))
    return outcomes


def _probe_request(case: ProbeCase, index: int) -> dict:
    packet = case.packet
    protocol = "icmp" if packet.icmp_type is not None else packet.protocol
    return {
        "protocol": protocol,
        "source": str(packet.source),
        "source_port": packet.source_port or 0,
        "destination": str(packet.destination),
        "port": packet.destination_port or 0,
        # Distinct echo identifiers tell apart the replies to probes sent at the same time.
        "ident": (index % 0xFFFF) + 1,
    }


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The prober, run inside a sending namespace: sends every probe in parallel
# threads from its own source address and port, and prints one JSON outcome
# per probe: "open", "dropped", "rejected" or "error: ...".
_PROBER = r"""
import errno, json, os, socket, struct, sys, threading, time
probes, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
REJECTED = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES)
results = [None] * len(probes)

def family(p):
    return socket.AF_INET6 if ":" in p["destination"] else socket.AF_INET

def failure(exc):
    if isinstance(exc, socket.timeout):
        return "dropped"
    if exc.errno in REJECTED:
        return "rejected"
    return "error: %s" % (exc.strerror or exc)

def bound(p, kind):
    s = socket.socket(family(p), kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(timeout)
    s.bind((p["source"], p["source_port"]))
    return s

# IP_RECVERR and IPV6_RECVERR from linux/in.h and linux/in6.h. Without them,
# Linux (seen on 6.18) treats an ICMPv6 unreachable for a connecting TCP
# socket as a soft error and keeps retrying, which would read as dropped.
RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}

def tcp(p):
    s = bound(p, socket.SOCK_STREAM)
    s.setsockopt(*RECVERR[family(p)], 1)
    try:
        s.connect((p["destination"], p["port"]))
        return "open"
    except OSError as exc:
        return failure(exc)
    finally:
        s.close()

def udp(p):
    s = bound(p, socket.SOCK_DGRAM)
    token = os.urandom(8)
    deadline = time.monotonic() + timeout
    try:
        s.connect((p["destination"], p["port"]))
        s.send(token)
        while True:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            if s.recv(2048) == token:
                return "open"
    except OSError as exc:
        return failure(exc)
    finally:
        s.close()

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF

def icmp(p):
    v6 = ":" in p["destination"]
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        request, reply, unreachable = 128, 129, 1
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        request, reply, unreachable = 8, 0, 3
    s.bind((p["source"], 0))
    ident, payload = p["ident"], os.urandom(16)
    header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
    if not v6:
        header = struct.pack("!BBHHH", request, 0, checksum(header + payload), ident, 1)
    deadline = time.monotonic() + timeout
    try:
        s.sendto(header + payload, (p["destination"], 0))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "dropped"
            s.settimeout(remaining)
            data = s.recv(2048)
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) < 8:
                continue
            if data[0] == reply and struct.unpack("!H", data[4:6])[0] == ident:
                return "open"
            if data[0] == unreachable:
                inner = data[8:]
                inner = inner[(inner[0] & 0x0F) * 4:] if (inner and not v6) else inner[40:]
                if len(inner) >= 6 and inner[0] == request and \
                        struct.unpack("!H", inner[4:6])[0] == ident:
                    return "rejected"
    except OSError as exc:
        return failure(exc)
    finally:
        s.close()

def run(index, p):
    try:
        results[index] = {"tcp": tcp, "udp": udp, "icmp": icmp}[p["protocol"]](p)
    except Exception as exc:
        results[index] = "error: %r" % (exc,)

threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(probes)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
"""


def format_report(result: VerifyResult) -> str:
    """Format the probe table per direction, the skipped probes and a summary line."""
    lines: list[str] = []
    headers = ["PROBE", "WHY", "EXPECTED", *(t.upper() for t in result.targets)]
    for direction in result.directions:
        probes = direction.probes
        chain = "input" if probes.direction == "in" else "forward"
        lines.append(f"{probes.direction} ({chain} chain): {len(probes.cases)} probes, "
                     f"{len(probes.skipped)} skipped")
        rows = []
        for index, case in enumerate(probes.cases):
            observed = [direction.observed.get(t, ["-"] * len(probes.cases))[index]
                        for t in result.targets]
            wrong = any(o != case.expected for o in observed if o != "-")
            rows.append([case.label, case.reason, case.expected, *observed,
                         "MISMATCH" if wrong else ""])
        if rows:
            lines.extend(_table([*headers, ""], rows))
        for skipped in probes.skipped:
            where = f"{skipped.rule.file}:{skipped.rule.line} " if skipped.rule else ""
            lines.append(f"  skipped: {where}{skipped.description}: {skipped.reason}")
        lines.append("")
    for note in result.not_probed:
        lines.append(f"not probed: {note}")
    mismatches = result.mismatches
    targets = ", ".join(result.targets)
    if mismatches:
        lines.append(f"verify: {len(mismatches)} outcomes on {targets} differ from the policy:")
        lines.extend(f"  {m}" for m in mismatches)
    else:
        lines.append(f"verify: all {result.probe_count} probes behave as the policy says on "
                     f"{targets}")
    return "\n".join(lines) + "\n"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    out = []
    for row in [headers, *rows]:
        out.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_verify(policy: str, target_names: list[str] | None, sources: SourceCache,
               transform: Transform | None = None) -> int:
    """Run ``polywall verify`` and return the exit status: 0 when every probe matches."""
    from compiler.api import load_policy

    targets: list[str] = []
    for value in target_names or [",".join(DEFAULT_TARGETS)]:
        targets.extend(part.strip() for part in value.split(",") if part.strip())
    targets = list(dict.fromkeys(targets))
    check_environment(targets)
    graph = load_policy(policy, sources)
    for warning in graph.warnings:
        print(render(warning, sources), file=sys.stderr)
    _, problems = export_targets(graph, targets)
    if problems:
        for diagnostic in problems:
            print(render(diagnostic, sources), file=sys.stderr)
        return 1
    started = time.monotonic()
    # SIGTERM unwinds like Ctrl-C, so the Lab context removes its namespaces either way.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = verify_graph(graph, targets, transform,
                              progress=lambda message: print(message, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("polywall: verify interrupted; the lab namespaces are removed", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"polywall: error: the lab failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.stdout.write(format_report(result))
    print(f"verify: finished in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 1 if result.mismatches else 0
