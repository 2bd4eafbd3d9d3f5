"""The ``target NAME { KEY = VALUE }`` block: grammar, graph, and each vendor target's validation."""

from __future__ import annotations

import json

import pytest
from lark import Lark

from compiler.api import load_policy_text
from compiler.errors import PolicyError
from compiler.graph import graph_to_json
from compiler.plugins import exporters
from grammar import grammar_text


def test_grammar_builds_strict():
    Lark(grammar_text(), parser="lalr", strict=True)


def test_target_block_reaches_graph():
    graph = load_policy_text(
        'target cisco-ios {\n  inbound-acl = OUT; outside-interface = "Gi0/0"\n  x = 5\n}\nallow tcp 22\n'
    )
    entries = graph.settings["cisco-ios"].entries
    assert entries["inbound-acl"].value == "OUT"
    assert entries["inbound-acl"].kind == "name"
    assert entries["outside-interface"].value == "Gi0/0"
    assert entries["outside-interface"].kind == "string"
    assert entries["x"].kind == "int"
    assert entries["x"].source.line == 3


def test_empty_target_blocks_parse():
    graph = load_policy_text("target a {}\ntarget b {\n}\ntarget c { k = v; }\n")
    assert sorted(graph.settings) == ["a", "b", "c"]
    assert graph.settings["c"].entries["k"].value == "v"


def test_target_keyword_is_reserved():
    with pytest.raises(PolicyError, match="'target' is a keyword and cannot name a host group"):
        load_policy_text("hosts target = 192.0.2.1\nallow tcp 22 from target\n")


def test_settings_in_json():
    graph = load_policy_text("target juniper-srx { outside-zone = wan }\n")
    data = json.loads(json.dumps(graph_to_json(graph)))
    entry = data["settings"]["juniper-srx"]["entries"]["outside-zone"]
    assert entry["value"] == "wan"
    assert entry["source"]["line"] == 1


def test_duplicate_key_is_positioned():
    with pytest.raises(PolicyError) as caught:
        load_policy_text("target a {\n  k = 1\n  k = 2\n}\n")
    (problem,) = caught.value.diagnostics
    assert "already given" in problem.message
    assert (problem.source.line, problem.source.column) == (3, 3)


def test_duplicate_block_is_positioned():
    with pytest.raises(PolicyError) as caught:
        load_policy_text("target a { k = 1 }\ntarget a { j = 2 }\n")
    (problem,) = caught.value.diagnostics
    assert "already given" in problem.message
    assert problem.source.line == 2


@pytest.mark.parametrize(
    "target, typo, suggestion",
    [
        ("cisco-asa", "inbound-alc", "inbound-acl"),
        ("cisco-ios", "outside-interfce", "outside-interface"),
        ("juniper-srx", "outside-zon", "outside-zone"),
    ],
)
def test_unknown_key_suggests(target, typo, suggestion):
    graph = load_policy_text(f"target {target} {{\n  {typo} = x\n}}\n")
    problems = exporters()[target].check(graph)
    assert len(problems) == 1
    assert problems[0].message == f"unknown setting '{typo}' for target {target}"
    assert problems[0].hint == f"did you mean '{suggestion}'?"
    assert (problems[0].source.line, problems[0].source.column) == (2, 3)


@pytest.mark.parametrize(
    "target, key, value",
    [
        ("cisco-asa", "inbound-acl", '"two words"'),
        ("cisco-asa", "outside-interface", '"out;side"'),
        ("cisco-ios", "inbound-acl", "42"),
        ("cisco-ios", "outside-interface", '"Gi0/0 exit"'),
        ("juniper-srx", "outside-zone", '"a b"'),
        ("juniper-srx", "inside-zone", '"' + "z" * 64 + '"'),
    ],
)
def test_invalid_value_is_positioned(target, key, value):
    graph = load_policy_text(f"target {target} {{ {key} = {value} }}\n")
    problems = exporters()[target].check(graph)
    assert len(problems) == 1
    assert problems[0].message.startswith("invalid value")
    assert key in problems[0].message
    assert problems[0].source.column == len(f"target {target} {{ {key} = ") + 1


@pytest.mark.parametrize(
    "target, text",
    [
        ("cisco-asa", "inbound-acl = X; outbound-acl = X"),
        ("cisco-ios", 'outside-interface = "Gi0/1"; inside-interface = "Gi0/1"'),
        ("juniper-srx", "outside-zone = trust"),
    ],
)
def test_same_name_twice_is_an_error(target, text):
    graph = load_policy_text(f"target {target} {{ {text} }}\n")
    problems = exporters()[target].check(graph)
    assert len(problems) == 1
    assert "must differ" in problems[0].message or "different" in problems[0].message
    assert problems[0].source.line == 1


def test_other_targets_ignore_vendor_block():
    graph = load_policy_text("target cisco-asa { inbound-acl = X }\nallow tcp 22\n")
    assert exporters()["nftables"].check(graph) == []
