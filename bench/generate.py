"""Generate the synthetic benchmark policy for polywall and, with the same rules, for Aerleon.

Every rule allows TCP to two named services, drawn from a pool of 400, from a
/24 source network of its own inside 10.0.0.0/8; a default drop follows. The
addresses appear only in generated files that are compiled and loaded into
private network namespaces, never in packets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

SEED = 20240601
SERVICE_POOL = 400
SERVICES_PER_RULE = 2
# 10.0.0.0/8 contains 65,536 networks of size /24.
MAX_RULES = 65536
# Aerleon's iptables-restore generator is named "speedway". "nochainedterms"
# keeps every term in INPUT, as polywall writes it, instead of one chain per term.
AERLEON_TARGETS = {
    "iptables": "speedway INPUT DROP inet nochainedterms",
    "nftables": "nftables inet INPUT",
}


@dataclass(frozen=True)
class BenchRule:
    """One generated rule: a source /24 and the indexes of its services in the pool."""

    network: str
    services: tuple[int, ...]


@dataclass(frozen=True)
class BenchPolicy:
    """A generated policy: the service ports of the pool and the rules in order."""

    size: int
    ports: tuple[int, ...]
    rules: tuple[BenchRule, ...]

    @property
    def name(self) -> str:
        return f"bench{self.size}"


def make_policy(size: int, seed: int = SEED) -> BenchPolicy:
    """Draw a policy of ``size`` rules; the same size and seed give the same policy."""
    if not 1 <= size <= MAX_RULES:
        raise ValueError(f"size must be 1 to {MAX_RULES}, not {size}")
    rng = random.Random(seed)
    ports = tuple(rng.sample(range(1024, 49152), SERVICE_POOL))
    networks = rng.sample(range(MAX_RULES), size)
    rules = tuple(
        BenchRule(
            network=f"10.{number >> 8}.{number & 0xFF}.0/24",
            services=tuple(rng.sample(range(SERVICE_POOL), SERVICES_PER_RULE)),
        )
        for number in networks
    )
    return BenchPolicy(size, ports, rules)


def _service_name(index: int) -> str:
    return f"svc{index + 1:03d}"


def polywall_text(policy: BenchPolicy) -> str:
    """Return the policy in polywall's language."""
    lines = [
        f"# Synthetic benchmark policy: {policy.size} rules, seed {SEED}.",
        f"policy {policy.name}",
        "",
    ]
    for index, port in enumerate(policy.ports):
        lines.append(f"service {_service_name(index)} = tcp {port}")
    lines.append("")
    for rule in policy.rules:
        names = ", ".join(_service_name(i) for i in rule.services)
        lines.append(f"allow tcp {names} from {rule.network}")
    lines.append("")
    lines.append("default drop in")
    return "\n".join(lines) + "\n"


def aerleon_policy_text(policy: BenchPolicy, target: str) -> str:
    """Return the Aerleon policy file (.pol) for one target: "iptables" or "nftables"."""
    lines = [
        "header {",
        f'  comment:: "Synthetic benchmark policy: {policy.size} rules, seed {SEED}."',
        f"  target:: {AERLEON_TARGETS[target]}",
        "}",
    ]
    for number, rule in enumerate(policy.rules, 1):
        services = " ".join(_service_name(i).upper() for i in rule.services)
        lines += [
            f"term rule-{number} {{",
            f"  source-address:: NET_{number}",
            f"  destination-port:: {services}",
            "  protocol:: tcp",
            "  action:: accept",
            "}",
        ]
    lines += ["term default-drop {", "  action:: deny", "}"]
    return "\n".join(lines) + "\n"


def aerleon_networks_text(policy: BenchPolicy) -> str:
    """Return Aerleon's network definitions (NETWORKS.net): one name per rule's network."""
    lines = [f"NET_{number} = {rule.network}" for number, rule in enumerate(policy.rules, 1)]
    return "\n".join(lines) + "\n"


def aerleon_services_text(policy: BenchPolicy) -> str:
    """Return Aerleon's service definitions (SERVICES.svc) for the pool."""
    lines = [f"{_service_name(i).upper()} = {port}/tcp" for i, port in enumerate(policy.ports)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PolicyFiles:
    """Paths of one size's generated files."""

    polywall: Path
    aerleon_root: Path
    aerleon_policies: dict[str, Path]
    aerleon_definitions: Path


def write_policy_files(policy: BenchPolicy, directory: Path) -> PolicyFiles:
    """Write the polywall policy and Aerleon's policy and definition files under directory.

    Layout: ``DIR/bench{N}.wall`` and ``DIR/aerleon/{policies/pol,def}/...``, the
    folders Aerleon's ``aclgen`` expects.
    """
    directory.mkdir(parents=True, exist_ok=True)
    polywall = directory / f"{policy.name}.wall"
    polywall.write_text(polywall_text(policy), encoding="utf-8")

    root = directory / "aerleon"
    definitions = root / "def"
    policies = root / "policies" / "pol"
    definitions.mkdir(parents=True, exist_ok=True)
    policies.mkdir(parents=True, exist_ok=True)
    (definitions / "NETWORKS.net").write_text(aerleon_networks_text(policy), encoding="utf-8")
    (definitions / "SERVICES.svc").write_text(aerleon_services_text(policy), encoding="utf-8")
    paths = {}
    for target in AERLEON_TARGETS:
        path = policies / f"{policy.name}-{target}.pol"
        path.write_text(aerleon_policy_text(policy, target), encoding="utf-8")
        paths[target] = path
    return PolicyFiles(polywall, root, paths, definitions)
