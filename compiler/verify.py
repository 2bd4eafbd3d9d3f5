"""``polywall verify``: load each target's export into a lab and send the probes for real.

The lab has a firewall namespace and one namespace per firewall interface,
joined by veth pairs whose firewall ends carry the interface names the policy
uses. One lab per target serves every direction. The target's own tool loads
the exported configuration into the firewall namespace: iptables-restore,
nft, ufw or the firewalld daemon. Every probe packet of ``compiler.probes``
is then sent as a TCP connect, a UDP datagram to a responder that echoes it,
or an ICMP echo: from the namespace behind its input interface for ``in`` and
``fwd``, and from the firewall namespace itself for ``out``. Each observed
outcome is compared with the evaluator's verdict.

ufw and firewalld accept some traffic ahead of every policy rule by design
(established replies, loopback, ufw's stock ICMP rules). For those targets
the expected outcome takes that traffic into account, and the report lists
every probe where this changes the outcome as "by design of TARGET".

Probes carry the policy's own addresses. The lab adds each source address to
the sending namespace and each destination address to the namespace that
owns it, with host routes inside the lab only. Probes whose addresses or
bound ports would clash in one namespace go in separate batches.

Every namespace and process belongs to a ``Lab`` or a ``TargetLab``, which
removes them when the run ends, fails or is interrupted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from compiler import capabilities
from compiler.errors import Diagnostic, PolywallError, SourceCache, render
from compiler.evaluate import evaluate
from compiler.graph import DIRECTION_CHAINS, RuleGraph
from compiler.netlab import Lab, LabError, Probe
from compiler.packet import IpAddress, Packet
from compiler.probes import (
    PROBED_DIRECTIONS,
    LabPlan,
    ProbeCase,
    ProbeSet,
    derive_probes,
    sender_outcome,
)

# The commands that load each file of the iptables and nftables exports in the firewall namespace.
LOADERS: dict[str, list[tuple[str, list[str]]]] = {
    "iptables": [("rules.v4", ["iptables-restore"]), ("rules.v6", ["ip6tables-restore"])],
    "nftables": [("ruleset.nft", ["nft", "-f", "-"])],
}
# The commands each target needs, besides ip and unshare.
TOOLS: dict[str, tuple[str, ...]] = {
    "iptables": ("iptables-restore", "ip6tables-restore"),
    "nftables": ("nft",),
    "ufw": ("ufw", "mount", "iptables-restore"),
    "firewalld": ("firewalld", "firewall-cmd", "dbus-daemon", "nsenter", "mount"),
}
DEFAULT_TARGETS = ("iptables", "nftables")
# Seconds a probe waits for a reply before it counts as dropped.
PROBE_TIMEOUT = 1.0
# Seconds to wait for a fresh link to carry an echo in both families.
LINK_READY_TIMEOUT = 10.0
# Seconds to wait for the firewalld daemon to report "running".
FIREWALLD_START_TIMEOUT = 60.0
# The interface name of the far end of every link, inside its own namespace.
SIDE_INTERFACE = "up0"
# The firewalld.conf of the lab: the Debian 12 defaults of firewalld 1.3, written
# out because firewalld prints an error when its configuration folder has none.
FIREWALLD_CONF = """\
DefaultZone=public
FirewallBackend=nftables
LogDenied=off
CleanupOnExit=yes
CleanupModulesOnExit=no
IPv6_rpfilter=yes
IndividualCalls=no
FlushAllOnReload=yes
RFC3964_IPv4=yes
Lockdown=no
"""

Transform = Callable[[str, dict[str, str]], dict[str, str]]
Progress = Callable[[str], None]
# Returns why a target accepts a packet ahead of every policy rule, or None when it does not.
ByDesign = Callable[[Packet], "str | None"]


class VerifyError(PolywallError):
    """verify cannot run here: no root, no namespaces, a missing tool or a target it cannot load."""


@dataclass
class DirectionResult:
    """The probes of one direction and, per target, the expected and the observed outcomes.

    ``expected`` is the evaluator's outcome, changed only where the target
    accepts a packet by design. ``by_design`` contains the reason for each probe
    whose expected outcome was changed, and None for the others.
    """

    probes: ProbeSet
    observed: dict[str, list[str]] = field(default_factory=dict)
    expected: dict[str, list[str]] = field(default_factory=dict)
    by_design: dict[str, list[str | None]] = field(default_factory=dict)

    def expected_on(self, target: str) -> list[str]:
        """Return the expected outcome of each probe on a target."""
        return self.expected.get(target, [case.expected for case in self.probes.cases])


@dataclass(frozen=True)
class Mismatch:
    """A probe whose observed outcome on a target differs from the expected one."""

    target: str
    direction: str
    case: ProbeCase
    expected: str
    observed: str

    def __str__(self) -> str:
        return (f"{self.target} {self.direction}: {self.case.label}: expected {self.expected}, "
                f"observed {self.observed} ({self.case.reason})")


@dataclass(frozen=True)
class DesignDifference:
    """A probe whose outcome on a target differs from the policy because of the target's design."""

    target: str
    direction: str
    case: ProbeCase
    expected: str
    reason: str

    def __str__(self) -> str:
        return (f"by design of {self.target}: {self.direction}: {self.case.label}: the policy "
                f"gives {self.case.expected}, {self.target} gives {self.expected}, because "
                f"{self.reason}")


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
                observed = result.observed.get(target, [])
                for case, expected, outcome in zip(result.probes.cases,
                                                   result.expected_on(target), observed):
                    if outcome != expected:
                        found.append(Mismatch(target, result.probes.direction, case, expected,
                                              outcome))
        return found

    @property
    def design_differences(self) -> list[DesignDifference]:
        found = []
        for result in self.directions:
            for target in self.targets:
                reasons = result.by_design.get(target, [])
                for case, expected, reason in zip(result.probes.cases,
                                                  result.expected_on(target), reasons):
                    if reason is not None:
                        found.append(DesignDifference(target, result.probes.direction, case,
                                                      expected, reason))
        return found

    @property
    def probe_count(self) -> int:
        return sum(len(r.probes.cases) for r in self.directions)


def check_environment(targets: list[str]) -> None:
    """Raise VerifyError unless this process can build a lab and load every target."""
    unknown = [t for t in targets if t not in TOOLS]
    if unknown:
        raise VerifyError(
            f"verify cannot load target '{unknown[0]}' in a lab; it supports {', '.join(TOOLS)}"
        )
    if os.geteuid() != 0:
        raise VerifyError("verify needs root to create network namespaces; run it as root")
    for tool in ["ip", "unshare", *(tool for t in targets for tool in TOOLS[t])]:
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

    directions = [DirectionResult(derive_probes(graph, d)) for d in PROBED_DIRECTIONS]
    for target in targets:
        by_design = BY_DESIGN.get(target)
        for result in directions:
            if by_design is not None:
                pairs = [expected_on_target(graph, case, by_design) for case in result.probes.cases]
                result.expected[target] = [outcome for outcome, _ in pairs]
                result.by_design[target] = [reason for _, reason in pairs]
    plan = directions[0].probes.plan
    for target in targets:
        if not any(result.probes.cases for result in directions):
            break
        links = len(plan.interfaces)
        report(f"verify: {target}: building the lab ({links} link{'s' if links != 1 else ''})")
        with Lab() as lab, TargetLab(lab, plan, target) as target_lab:
            report(f"verify: {target}: loading the export")
            target_lab.load(outputs[target])
            for result in directions:
                if not result.probes.cases:
                    continue
                result.observed[target] = target_lab.send(result.probes.cases,
                                                          result.probes.direction, timeout,
                                                          report)
    return VerifyResult(list(targets), directions, [])


def expected_on_target(graph: RuleGraph, case: ProbeCase,
                       by_design: ByDesign) -> tuple[str, str | None]:
    """Return a probe's expected outcome on a target that accepts some traffic by design.

    The second value is the first reason why the target accepts a packet that
    the policy does not, when the outcome differs from the evaluator's, and
    None when it is the same.
    """
    reasons: list[str] = []

    def decide(packet: Packet) -> tuple[str, str | None]:
        decision = evaluate(graph, packet)
        reason = by_design(packet)
        if reason is None or decision.verdict == "accept":
            return decision.verdict, decision.reject_with
        if packet != case.packet:
            if packet.state != "established":
                kind = "reject error"
            elif packet.source == case.packet.source:
                kind = "ACK of the TCP handshake"
            else:
                kind = "reply"
            reason = f"it accepts the {kind}: {reason}"
        reasons.append(reason)
        return "accept", None

    outcome = sender_outcome(case.packet, decide)
    if outcome == case.expected:
        return outcome, None
    return outcome, reasons[0] if reasons else None


def ufw_by_design(packet: Packet) -> str | None:
    """Return the stock ufw rule that accepts the packet ahead of every ufw rule, or None."""
    from exporters.ufw import STOCK_ALLOWANCES

    for allowance in STOCK_ALLOWANCES:
        if allowance.chain != packet.chain or allowance.family != packet.family:
            continue
        if allowance.protocol is not None and allowance.protocol != packet.protocol:
            continue
        if allowance.icmp_type is not None and allowance.icmp_type != packet.icmp_type:
            continue
        if allowance.sport is not None and allowance.sport != packet.source_port:
            continue
        if allowance.dport is not None and allowance.dport != packet.destination_port:
            continue
        if allowance.saddr is not None and packet.source not in allowance.saddr:
            continue
        if allowance.daddr is not None and packet.destination not in allowance.daddr:
            continue
        interface = packet.out_interface if packet.chain == "output" else packet.in_interface
        if allowance.interface is not None and allowance.interface != interface:
            continue
        if allowance.states is not None and packet.state not in allowance.states:
            continue
        return f"ufw's stock {allowance.file} accepts {allowance.label}"
    return None


# ICMPv6 types that firewalld's shipped policy allow-host-ipv6 accepts towards the host:
# neighbour solicitation and advertisement, router advertisement and redirect.
FIREWALLD_HOST_ICMPV6 = (134, 135, 136, 137)


def firewalld_by_design(packet: Packet) -> str | None:
    """Return why firewalld 1.3 accepts the packet ahead of every zone or policy rule, or None."""
    if packet.state in ("established", "related"):
        return "firewalld accepts established and related traffic before any zone or policy rule"
    if "lo" in (packet.in_interface, packet.out_interface):
        return "firewalld accepts all loopback (lo) traffic before any zone or policy rule"
    if (packet.chain == "input" and packet.protocol == "icmpv6"
            and packet.icmp_type in FIREWALLD_HOST_ICMPV6):
        return "firewalld's shipped policy allow-host-ipv6 accepts it"
    return None


BY_DESIGN: dict[str, ByDesign] = {"ufw": ufw_by_design, "firewalld": firewalld_by_design}


class TargetLab:
    """The links of a lab plan with one target loaded in the firewall namespace.

    ``load`` may be called again to replace the rules (iptables, nftables and
    ufw only), and ``send`` to probe any number of packets of the plan's links.
    The firewalld daemon, when the target is firewalld, starts once at the
    first ``load`` and stops on ``close``.
    """

    def __init__(self, lab: Lab, plan: LabPlan, target: str):
        if target not in TOOLS:
            raise VerifyError(f"verify cannot load target '{target}' in a lab")
        self.lab = lab
        self.plan = plan
        self.target = target
        self.topology = _build(lab, plan)
        self._firewalld: _FirewalldDaemon | None = None
        self._folder = Path(tempfile.mkdtemp(prefix=f"polywall-verify-{target}-"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def load(self, files: dict[str, str]) -> None:
        """Load the target's exported files in the firewall namespace; raise VerifyError on failure."""
        namespace = self.topology.firewall
        if self.target == "nftables":
            # The script replaces only its own table, which is named after the
            # policy, so a table of an earlier policy would stay loaded.
            self.lab.run(namespace, ["nft", "flush", "ruleset"])
        if self.target in LOADERS:
            _load(self.lab, namespace, self.target, files)
        elif self.target == "ufw":
            _load_ufw(self.lab, namespace, files, self._folder)
        else:
            if self._firewalld is not None:
                raise VerifyError("verify starts firewalld once per lab and cannot reload it")
            self._firewalld = _FirewalldDaemon(namespace, self._folder)
            self._firewalld.start(files, self.plan.interfaces)

    def send(self, cases: list[ProbeCase], direction: str, timeout: float = PROBE_TIMEOUT,
             progress: Progress | None = None) -> list[str]:
        """Send probes in batches and return each observed outcome.

        The probes may be of several directions; ``direction`` only names them
        in the progress messages.
        """
        report = progress or (lambda message: None)
        batches = _batches(cases)
        outcomes: dict[int, str] = {}
        for number, batch in enumerate(batches, 1):
            report(f"verify: {self.target}, {direction}: sending {len(batch)} probes "
                   f"(batch {number} of {len(batches)})")
            outcomes.update(_run_batch(self.lab, self.topology, cases, batch, timeout))
        return [outcomes[index] for index in range(len(cases))]

    def close(self) -> None:
        """Stop the firewalld daemon, if any, and remove the temporary folder."""
        try:
            if self._firewalld is not None:
                self._firewalld.stop()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


@dataclass
class _Topology:
    """Namespaces of one lab: the firewall and one namespace behind each interface."""

    plan: LabPlan
    firewall: str
    sides: dict[str, str]


def _build(lab: Lab, plan: LabPlan) -> _Topology:
    firewall = lab.namespace("fw")
    _disable_reverse_path_filter(lab, firewall)
    # Forwarding is on for every direction, because one lab serves them all.
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


def _load_ufw(lab: Lab, namespace: str, files: dict[str, str], folder: Path) -> None:
    """Run the exported ufw.sh under the real ufw, over copies of ufw's state.

    ufw keeps its state in /etc/ufw, /lib/ufw and /etc/default/ufw. Copies of
    them are bound over the real paths in a private mount namespace inside the
    firewall namespace, so the host's ufw is never changed. The rules that ufw
    loads stay in the firewall namespace after the mount namespace ends.
    """
    from exporters.ufw import FILE

    if FILE not in files:
        raise VerifyError(f"the ufw export has no file {FILE}")
    state = folder / "ufw-state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    etc, lib, default = state / "etc-ufw", state / "lib-ufw", state / "default-ufw"
    shutil.copytree("/etc/ufw", etc, symlinks=True)
    # On Debian 12 /lib is a link to /usr/lib, and a bind mount needs the real path.
    lib_path = os.path.realpath("/lib/ufw")
    shutil.copytree(lib_path, lib, symlinks=True)
    shutil.copy2("/etc/default/ufw", default)
    # ufw would otherwise apply /etc/ufw/sysctl.conf; the lab sets its own sysctls.
    empty = state / "sysctl-empty.conf"
    empty.write_text("", encoding="utf-8")
    text = default.read_text(encoding="utf-8")
    default.write_text(re.sub(r"(?m)^IPT_SYSCTL=.*$", f"IPT_SYSCTL={empty}", text),
                       encoding="utf-8")
    script = state / FILE
    script.write_text(files[FILE], encoding="utf-8")
    binds = [(etc, "/etc/ufw"), (lib, lib_path), (default, "/etc/default/ufw")]
    mounts = " && ".join(f"mount --bind {shlex.quote(str(a))} {shlex.quote(b)}" for a, b in binds)
    # TESTSTATE makes ufw keep its lock file in the copied /lib/ufw instead of /run.
    command = f"mount --make-rprivate / && {mounts} && TESTSTATE=1 sh {shlex.quote(str(script))}"
    completed = lab.run(namespace, ["unshare", "-m", "sh", "-c", command], check=False,
                        timeout=180)
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()
        raise VerifyError(f"ufw failed to load {FILE} ({completed.returncode}): {output}")


class _FirewalldDaemon:
    """dbus-daemon and firewalld in the firewall namespace, in a private mount namespace.

    A tmpfs over /run gives them their own /run/dbus and /run/firewalld; a
    mount over /run/firewalld alone would first create that folder on the host.
    Both daemons are stopped by their process ids.
    """

    def __init__(self, namespace: str, folder: Path):
        self.namespace = namespace
        self.config = folder / "firewalld"
        self.log = folder / "firewalld.log"
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []

    def start(self, files: dict[str, str], interfaces: tuple[str, ...]) -> None:
        """Write the exported tree, start the daemons and bind every lab interface to the zone."""
        from exporters.firewalld import SCRIPT

        zones = [name for name in files if name.startswith("zones/")]
        if len(zones) != 1:
            raise VerifyError(f"the firewalld export has {len(zones)} zone files, expected one")
        zone = Path(zones[0]).stem
        for relative, text in files.items():
            if relative == SCRIPT:
                continue
            path = self.config / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (self.config / "firewalld.conf").write_text(FIREWALLD_CONF, encoding="utf-8")
        script = (
            "set -e; mount -t tmpfs polywall-run /run; mkdir /run/dbus /run/firewalld; "
            "echo $$; dbus-daemon --system --fork --print-pid; "
            f"firewalld --nofork --nopid --system-config {shlex.quote(str(self.config))} "
            f"--log-target console >{shlex.quote(str(self.log))} 2>&1 & echo $!; wait"
        )
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "unshare", "--mount", "--propagation",
             "private", "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(3):
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line.strip().isdigit():
                raise VerifyError(f"firewalld and its dbus-daemon did not start: {line.strip()!r}")
            self.pids.append(int(line))
        deadline = time.monotonic() + FIREWALLD_START_TIMEOUT
        while self._run(["firewall-cmd", "--state"]).stdout.strip() != "running":
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise VerifyError(f"firewalld did not start: {self._log_text()}")
            time.sleep(0.3)
        for interface in interfaces:
            completed = self._run(["firewall-cmd", f"--zone={zone}",
                                   f"--change-interface={interface}"])
            if completed.returncode != 0:
                raise VerifyError(f"firewall-cmd failed to bind {interface} to zone {zone}: "
                                  f"{(completed.stdout + completed.stderr).strip()}")
        # firewalld falls back to its stock configuration when it cannot load a
        # file, and reports that only in its log.
        complaints = [line for line in self._log_text().splitlines()
                      if "WARNING" in line or "ERROR" in line]
        if complaints:
            raise VerifyError("firewalld reported problems with the export: "
                              + "; ".join(complaints))

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess:
        shell = self.pids[0]
        return subprocess.run(["nsenter", "-t", str(shell), "-m", "-n", "--", *argv],
                              capture_output=True, text=True, timeout=120, check=False)

    def _log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Stop firewalld and dbus-daemon by process id, then the shell that started them."""
        for pid in reversed(self.pids[1:]):
            _kill(pid)
        if self.process is None:
            return
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _kill(pid: int) -> None:
    """Stop one process that verify started: TERM, then KILL after 10 s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _address_command(verb: str, address: IpAddress, device: str, length: int | None = None) -> str:
    """Return an ``ip addr`` command for the address, as a host address unless length is given."""
    if length is None:
        length = address.max_prefixlen
    extra = " nodad" if address.version == 6 and verb == "add" else ""
    return f"addr {verb} {address}/{length} dev {device}{extra}"


def _ip_batch(lab: Lab, namespace: str, commands: list[str]) -> None:
    if commands:
        lab.run(namespace, ["ip", "-batch", "-"], input="\n".join(commands) + "\n")


def _places(case: ProbeCase) -> tuple[str, str]:
    """Return where a probe's source and destination addresses live.

    An interface name stands for the namespace behind that interface of the
    firewall, and the empty string for the firewall itself.
    """
    packet = case.packet
    if packet.direction == "out":
        return "", packet.out_interface or ""
    source_place = packet.in_interface or ""
    destination_place = "" if packet.direction == "in" else packet.out_interface or ""
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

    def accepts(self, case: ProbeCase) -> bool:
        packet = case.packet
        source_place, destination_place = _places(case)
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

    def add(self, index: int, case: ProbeCase) -> None:
        packet = case.packet
        source_place, destination_place = _places(case)
        self.indexes.append(index)
        self.places[packet.source] = source_place
        self.places[packet.destination] = destination_place
        if packet.destination_port is not None:
            self.listening.setdefault(destination_place, set()).add(
                (packet.protocol, packet.destination_port))
        if packet.source_port is not None:
            self.bound.setdefault(source_place, set()).add((packet.protocol, packet.source_port))


def _batches(cases: list[ProbeCase]) -> list[_Batch]:
    batches: list[_Batch] = []
    for index, case in enumerate(cases):
        for batch in batches:
            if batch.accepts(case):
                batch.add(index, case)
                break
        else:
            batch = _Batch()
            batch.add(index, case)
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
        packet = cases[index].packet
        # Probes of ``out`` leave the firewall itself, whose place is the empty string.
        place = "" if packet.direction == "out" else packet.in_interface or ""
        by_side.setdefault(place, []).append(index)
    running = []
    for place, indexes in sorted(by_side.items()):
        requests = [_probe_request(cases[i], i) for i in indexes]
        namespace = topology.firewall if place == "" else topology.sides[place]
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", _PROBER,
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

# Linux resends a SYN after 1 s (TCP_TIMEOUT_INIT). Once conntrack has seen a
# reply, even one that the firewall then dropped, it sees the resent SYN as
# established, which a policy may treat differently. A connect waits less than
# that, so its outcome is that of the first SYN, as the evaluator predicts.
FIRST_SYN_TIMEOUT = 0.9

def tcp(p):
    s = bound(p, socket.SOCK_STREAM)
    s.settimeout(min(timeout, FIRST_SYN_TIMEOUT))
    s.setsockopt(*RECVERR[family(p)], 1)
    # Close with a reset, so that no TIME_WAIT socket keeps the address and
    # port pair from a later probe of the same connection.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        s.connect((p["destination"], p["port"]))
        return "open"
    except OSError as exc:
        return failure(exc)
    finally:
        s.close()

def send_locally_filtered(send, *args):
    # A datagram that the sender's own output chain drops or rejects fails the
    # send with EPERM. A reject also sends an ICMP error, which the receive
    # that follows returns, so the outcome is decided there.
    try:
        send(*args)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise

def udp(p):
    s = bound(p, socket.SOCK_DGRAM)
    # Without RECVERR a UDP socket ignores the soft errors host-unreachable
    # and net-unreachable (icmp_err_convert in Linux's net/ipv4/icmp.c).
    s.setsockopt(*RECVERR[family(p)], 1)
    token = os.urandom(8)
    deadline = time.monotonic() + timeout
    try:
        s.connect((p["destination"], p["port"]))
        send_locally_filtered(s.send, token)
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
        send_locally_filtered(s.sendto, header + payload, (p["destination"], 0))
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
    """Format the probe table per direction, the skipped probes, the by-design differences
    and a summary line."""
    lines: list[str] = []
    for direction in result.directions:
        lines.extend(_direction_lines(result, direction))
    for note in result.not_probed:
        lines.append(f"not probed: {note}")
    differences = result.design_differences
    lines.extend(str(difference) for difference in differences)

    mismatches = result.mismatches
    targets = ", ".join(result.targets)
    if mismatches:
        lines.append(f"verify: {len(mismatches)} outcomes on {targets} differ from the policy:")
        lines.extend(f"  {m}" for m in mismatches)
    elif differences:
        lines.append(f"verify: all {result.probe_count} probes behave as the policy says on "
                     f"{targets}, apart from the {len(differences)} outcomes listed "
                     "above as by design of the target")
    else:
        lines.append(f"verify: all {result.probe_count} probes behave as the policy says on "
                     f"{targets}")
    return "\n".join(lines) + "\n"


def _direction_lines(result: VerifyResult, direction: DirectionResult) -> list[str]:
    """Format one direction: a title, the probe table and the skipped probes."""
    probes = direction.probes
    count = len(probes.cases)
    chain = DIRECTION_CHAINS[probes.direction]
    title = f"{probes.direction} ({chain} chain): {count} probes, {len(probes.skipped)} skipped"
    lines = [title]
    rows = []
    for index, case in enumerate(probes.cases):
        observed = [direction.observed.get(t, ["-"] * count)[index] for t in result.targets]
        expected = [direction.expected_on(t)[index] for t in result.targets]
        designed = [t for t in result.targets if direction.by_design.get(t, [None] * count)[index]]
        wrong = any(o != e for o, e in zip(observed, expected) if o != "-")
        mark = "MISMATCH" if wrong else ""
        if not wrong and designed:
            mark = f"by design of {', '.join(designed)}"
        rows.append([case.label, case.reason, case.expected, *observed, mark])

    if rows:
        headers = ["PROBE", "WHY", "EXPECTED", *(t.upper() for t in result.targets), ""]
        lines.extend(_table(headers, rows))
    for skipped in probes.skipped:
        where = f"{skipped.rule.file}:{skipped.rule.line} " if skipped.rule else ""
        lines.append(f"  skipped: {where}{skipped.description}: {skipped.reason}")
    lines.append("")
    return lines


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
