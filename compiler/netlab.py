"""A small network lab of namespaces joined by veth pairs, for real-packet tests.

Every namespace, interface and process the lab creates is its own: names
carry the lab's process id and a counter, and ``close`` removes them all,
also after a failure. Nothing here touches the root network namespace
except creating and deleting the lab's own namespaces.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

_COUNTER = itertools.count(1)


class LabError(RuntimeError):
    """A namespace, link or command of the lab failed."""


@dataclass(frozen=True)
class Probe:
    """One test packet: a TCP connect, a UDP exchange or an ICMP echo."""

    protocol: str  # "tcp", "udp" or "icmp" (ICMPv6 echo for an IPv6 address)
    address: str
    port: int = 0
    source: str | None = None  # source address to bind, or None for the default

    def __str__(self) -> str:
        where = f"[{self.address}]" if ":" in self.address else self.address
        text = f"{self.protocol} {where}" + (f":{self.port}" if self.port else "")
        return text + (f" from {self.source}" if self.source else "")


@dataclass
class Link:
    """A veth pair between namespaces ``a`` and ``b`` and its addresses."""

    a: str
    b: str
    a_if: str
    b_if: str
    a4: str
    b4: str
    a6: str
    b6: str
    prefix4: int = 24
    prefix6: int = 64


# A listener run inside a namespace: accepts TCP connections and echoes UDP
# datagrams on every requested port, over IPv4 and IPv6 at once.
_SERVER = r"""
import json, select, socket, sys
tcp_ports, udp_ports = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sockets = []
for port in tcp_ports:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port)); s.listen(64); s.setblocking(False); sockets.append(("tcp", s))
for port in udp_ports:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    s.bind(("::", port)); s.setblocking(False); sockets.append(("udp", s))
print("ready", flush=True)
by_fd = {s.fileno(): (kind, s) for kind, s in sockets}
while True:
    ready, _, _ = select.select(list(by_fd), [], [], 1.0)
    for fd in ready:
        kind, s = by_fd[fd]
        try:
            if kind == "tcp":
                conn, _ = s.accept(); conn.close()
            else:
                # Reply from the address the datagram was sent to, so a client
                # that sent to a second address accepts the reply.
                data, ancillary, _, peer = s.recvmsg(2048, 256)
                info = [(l, t, d) for l, t, d in ancillary if t == socket.IPV6_PKTINFO]
                s.sendmsg([data], info, 0, peer)
        except OSError:
            pass
"""

# A prober run inside a namespace: runs every probe in parallel threads and
# prints one JSON outcome per probe: "open", "dropped" or "rejected".
_PROBER = r"""
import json, os, socket, struct, sys, threading
probes, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
results = [None] * len(probes)

def family(address):
    return socket.AF_INET6 if ":" in address else socket.AF_INET

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF

def tcp(p):
    s = socket.socket(family(p["address"]), socket.SOCK_STREAM)
    s.settimeout(timeout)
    if p.get("source"):
        s.bind((p["source"], 0))
    try:
        s.connect((p["address"], p["port"]))
        return "open"
    except socket.timeout:
        return "dropped"
    except (ConnectionRefusedError, ConnectionResetError):
        return "rejected"
    except OSError as exc:
        return "rejected" if exc.errno in (113, 101, 13, 111) else "error: %s" % exc
    finally:
        s.close()

def udp(p):
    s = socket.socket(family(p["address"]), socket.SOCK_DGRAM)
    s.settimeout(timeout)
    if p.get("source"):
        s.bind((p["source"], 0))
    try:
        s.connect((p["address"], p["port"]))
        token = os.urandom(8)
        s.send(token)
        data = s.recv(2048)
        return "open" if data == token else "error: wrong reply"
    except socket.timeout:
        return "dropped"
    except (ConnectionRefusedError, OSError) as exc:
        return "rejected" if isinstance(exc, ConnectionRefusedError) or exc.errno in (113, 101, 13, 111) else "error: %s" % exc
    finally:
        s.close()

def quotes_echo(quoted, v6, ident):
    # True when an ICMP error quotes our own echo request.
    if not v6:
        if not quoted:
            return False
        quoted = quoted[(quoted[0] & 0x0F) * 4:]
    else:
        quoted = quoted[40:]
    return len(quoted) >= 6 and struct.unpack("!H", quoted[4:6])[0] == ident

def icmp(p):
    v6 = ":" in p["address"]
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        kind, reply = 128, 129
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        kind, reply = 8, 0
    s.settimeout(timeout)
    if p.get("source"):
        s.bind((p["source"], 0))
    ident = (os.getpid() + threading.get_ident()) & 0xFFFF
    payload = os.urandom(16)
    header = struct.pack("!BBHHH", kind, 0, 0, ident, 1)
    packet = header + payload
    if not v6:
        packet = struct.pack("!BBHHH", kind, 0, checksum(packet), ident, 1) + payload
    try:
        s.sendto(packet, (p["address"], 0))
        while True:
            data = s.recv(2048)
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]
            if len(data) >= 8 and data[0] == reply and struct.unpack("!H", data[4:6])[0] == ident:
                return "open"
            if len(data) >= 8 and data[0] in ((1, 3) if v6 else (3,)) and quotes_echo(data[8:], v6, ident):
                return "rejected"
    except socket.timeout:
        return "dropped"
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


@dataclass
class Lab:
    """Network namespaces, veth links and listener processes, removed on close."""

    tag: str = field(default_factory=lambda: f"pw{os.getpid()}x{next(_COUNTER)}")
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    _links: int = 0

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def namespace(self, role: str) -> str:
        """Create a namespace with loopback up and return its name."""
        name = f"{self.tag}-{role}"
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        self.run(name, ["ip", "link", "set", "lo", "up"])
        # ICMP errors are rate-limited per namespace; a burst of rejects
        # would otherwise read as drops.
        for setting in ("net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
                        "net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=100000"):
            self.run(name, ["sysctl", "-qw", setting], check=False)
        return name

    def link(self, a: str, b: str, subnet: int | None = None) -> Link:
        """Join namespaces a and b by a veth pair with IPv4 and IPv6 addresses.

        Addresses come from 10.<subnet>.0.0/24 and fd00:<subnet>::/64, with a
        on .2/::2 and b on .1/::1; subnet defaults to a counter from 201.
        """
        self._links += 1
        subnet = subnet if subnet is not None else 200 + self._links
        a_if, b_if = f"pwa{self._links}", f"pwb{self._links}"
        _run(["ip", "-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b])
        link = Link(a, b, a_if, b_if, f"10.{subnet}.0.2", f"10.{subnet}.0.1",
                    f"fd00:{subnet}::2", f"fd00:{subnet}::1")
        for ns, ifname, v4, v6 in ((a, a_if, link.a4, link.a6), (b, b_if, link.b4, link.b6)):
            self.run(ns, ["ip", "addr", "add", f"{v4}/24", "dev", ifname])
            self.run(ns, ["ip", "-6", "addr", "add", f"{v6}/64", "dev", ifname, "nodad"])
            self.run(ns, ["ip", "link", "set", ifname, "up"])
        self._warm_up(link)
        return link

    def _warm_up(self, link: Link) -> None:
        """Wait until both families carry an echo across the link.

        A fresh veth pair drops the first IPv6 packets for a moment after it
        comes up, which would read as a firewall drop.
        """
        probes = [Probe("icmp", link.b4), Probe("icmp", link.b6)]
        deadline = time.monotonic() + 10
        while True:
            outcomes = self.probe(link.a, probes, timeout=0.5)
            if all(v == "open" for v in outcomes.values()):
                return
            if time.monotonic() > deadline:
                raise LabError(f"link {link.a_if}-{link.b_if} did not come up: {outcomes}")

    def add_address(self, namespace: str, ifname: str, address: str) -> None:
        """Add one more address (``10.x.y.z/24`` or ``fd00::.../64``) to an interface."""
        command = ["ip", "-6"] if ":" in address else ["ip"]
        extra = ["nodad"] if ":" in address else []
        self.run(namespace, [*command, "addr", "add", address, "dev", ifname, *extra])

    def route(self, namespace: str, via4: str, via6: str) -> None:
        """Send all traffic of a namespace through a router."""
        self.run(namespace, ["ip", "route", "add", "default", "via", via4])
        self.run(namespace, ["ip", "-6", "route", "add", "default", "via", via6])

    def enable_forwarding(self, namespace: str) -> None:
        """Turn on IPv4 and IPv6 forwarding inside one namespace only."""
        self.run(namespace, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.run(namespace, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    def run(self, namespace: str, argv: list[str], input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command inside a namespace; raise LabError when check is set and it fails."""
        return _run(["ip", "netns", "exec", namespace, *argv], input=input, check=check, timeout=timeout)

    def serve(self, namespace: str, tcp=(), udp=()) -> subprocess.Popen:
        """Start a listener for TCP and UDP ports in a namespace and wait until it is ready."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", _SERVER,
             json.dumps(sorted(set(tcp))), json.dumps(sorted(set(udp)))],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.processes.append(process)
        line = process.stdout.readline() if process.stdout else ""
        if line.strip() != "ready":
            error = process.stderr.read() if process.stderr else ""
            raise LabError(f"listener in {namespace} failed to start: {error.strip()}")
        return process

    def probe(self, namespace: str, probes: list[Probe], timeout: float = 1.5) -> dict[Probe, str]:
        """Send every probe from a namespace in parallel and return each outcome.

        The default timeout is above Linux's initial TCP retransmission time
        of 1 s: a TCP connect over IPv6 fails only on the ICMPv6 error to the
        resent SYN, so a shorter wait reads a reject as a drop.
        """
        data = json.dumps([p.__dict__ for p in probes])
        completed = self.run(namespace, [sys.executable, "-c", _PROBER, data, str(timeout)],
                             timeout=timeout * 4 + 30)
        outcomes = json.loads(completed.stdout)
        return dict(zip(probes, outcomes))

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()


def _run(argv: list[str], input: str | None = None, check: bool = True,
         timeout: float = 60) -> subprocess.CompletedProcess:
    completed = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and completed.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Poll predicate until it returns true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
