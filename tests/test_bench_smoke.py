"""The benchmark's generator and one polywall compile of its 1,000-rule policy.

Speed targets live in bench/run.py only; these tests check that the
generated policies are valid and that their output loads in a real kernel.
"""

from __future__ import annotations

import re
import subprocess
import sys

from bench.generate import (
    SERVICE_POOL,
    aerleon_networks_text,
    aerleon_policy_text,
    aerleon_services_text,
    make_policy,
    polywall_text,
    write_policy_files,
)
from bench.measure import load_steps, time_load
from tests.conftest import ROOT, need_tool


def test_generator_is_deterministic():
    first, second = make_policy(1000), make_policy(1000)
    assert first == second
    assert polywall_text(first) == polywall_text(second)
    assert make_policy(1000, seed=1) != first


def test_generated_rules_have_own_networks_and_two_services():
    policy = make_policy(1000)
    assert len(policy.rules) == 1000
    assert len({rule.network for rule in policy.rules}) == 1000
    assert len(set(policy.ports)) == SERVICE_POOL
    for rule in policy.rules:
        assert rule.network.startswith("10.")
        assert rule.network.endswith(".0/24")
        assert len(set(rule.services)) == 2


def test_aerleon_files_carry_same_rules():
    policy = make_policy(50)
    networks = aerleon_networks_text(policy).splitlines()
    services = aerleon_services_text(policy).splitlines()
    terms = re.findall(r"term rule-(\d+) \{", aerleon_policy_text(policy, "nftables"))
    assert len(networks) == 50
    assert len(services) == SERVICE_POOL
    assert terms == [str(n) for n in range(1, 51)]
    assert networks[0] == f"NET_1 = {policy.rules[0].network}"
    port = policy.ports[policy.rules[0].services[0]]
    assert f"= {port}/tcp" in services[policy.rules[0].services[0]]
    assert "target:: speedway INPUT DROP" in aerleon_policy_text(policy, "iptables")


def test_generated_policy_compiles_and_loads(tmp_path, need_namespaces):
    need_tool("nft")
    files = write_policy_files(make_policy(1000), tmp_path / "policy")
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "compiler.cli", "compile", str(files.polywall),
        "-t", "nftables", "-o", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ruleset = output / "nftables" / "ruleset.nft"
    text = ruleset.read_text(encoding="utf-8")
    # The 1,000 rules merge into one rule over a concatenated set of 2,000 elements.
    assert text.count("# bench1000.wall:") == 1000
    assert "ip saddr . tcp dport @input_1 accept" in text
    assert len(re.findall(r"^\t10\.[0-9.]+/24 \. \d+,?$", text, re.MULTILINE)) == 2000
    loaded = time_load(load_steps("nftables", [ruleset]), timeout=60, log=tmp_path / "load.log")
    assert loaded.returncode == 0, (tmp_path / "load.log").read_text()
    assert not loaded.timed_out
