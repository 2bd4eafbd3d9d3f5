"""Every sample's kernel output loads with the kernel's own tools, in a private namespace."""

from __future__ import annotations

import json
import re

import pytest

from compiler.netlab import Lab
from tests.conftest import need_tool, sample_files
from tests.helpers import export

SAMPLES = sample_files()
IDS = [p.stem for p in SAMPLES]


def _expected_rule_count(text: str) -> int:
    """Count the rules iptables-restore creates: each -A line times its address lists."""
    total = 0
    for line in text.splitlines():
        if not line.startswith("-A "):
            continue
        count = 1
        for flag in ("-s", "-d"):
            found = re.search(rf"(?:^| ){flag} (\S+)", line)
            if found:
                count *= len(found.group(1).split(","))
        total += count
    return total


def _comments(text: str) -> list[str]:
    return re.findall(r'--comment "([^"]*)"', text)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_iptables_restore_loads(sample, family, need_namespaces, tmp_path):
    tool = "iptables" if family == "ipv4" else "ip6tables"
    need_tool(f"{tool}-restore")
    text = export(sample, "iptables")["rules.v4" if family == "ipv4" else "rules.v6"]
    with Lab() as lab:
        ns = lab.namespace("ipt")
        checked = lab.run(ns, [f"{tool}-restore", "--test"], input=text, check=False)
        assert checked.returncode == 0, checked.stderr
        loaded = lab.run(ns, [f"{tool}-restore"], input=text, check=False)
        assert loaded.returncode == 0, loaded.stderr
        saved = lab.run(ns, [f"{tool}-save", "-t", "filter"]).stdout
    rules = [line for line in saved.splitlines() if line.startswith("-A ")]
    assert len(rules) == _expected_rule_count(text)
    for comment in _comments(text):
        assert f'"{comment}"' in saved or f" {comment} " in saved + " ", comment


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_nft_loads(sample, need_namespaces):
    need_tool("nft")
    text = export(sample, "nftables")["ruleset.nft"]
    with Lab() as lab:
        ns = lab.namespace("nft")
        checked = lab.run(ns, ["nft", "-c", "-f", "-"], input=text, check=False)
        assert checked.returncode == 0, checked.stderr
        loaded = lab.run(ns, ["nft", "-f", "-"], input=text, check=False)
        assert loaded.returncode == 0, loaded.stderr
        # Loading twice proves the declare-delete-define idiom replaces the table.
        again = lab.run(ns, ["nft", "-f", "-"], input=text, check=False)
        assert again.returncode == 0, again.stderr
        listed = json.loads(lab.run(ns, ["nft", "-j", "list", "ruleset"]).stdout)
    items = listed["nftables"]
    tables = [i["table"] for i in items if "table" in i]
    assert len(tables) == 1
    rules = [i["rule"] for i in items if "rule" in i]
    expected = sum(
        1 for line in text.splitlines() if line.startswith("\t\t") and not line.strip().startswith(("#", "type "))
    )
    assert len(rules) == expected
    for comment in re.findall(r'comment "([^"]*)"', text):
        assert any(r.get("comment") == comment for r in rules), comment


def test_nft_rejects_broken_output(need_namespaces):
    """The nft check can fail: a misspelt keyword is reported."""
    need_tool("nft")
    with Lab() as lab:
        ns = lab.namespace("nftbad")
        broken = "table inet t {\n chain input { type filter hook input priority filter; policy drop;\n tcp dprot 22 accept\n }\n}\n"
        result = lab.run(ns, ["nft", "-c", "-f", "-"], input=broken, check=False)
    assert result.returncode != 0
