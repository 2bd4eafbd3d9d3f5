"""The one-line parser builds exactly what the Lark parser builds, and start-up stays lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from compiler import lineparser
from compiler.errors import PolicyError, SourceCache
from compiler.parser import Loader, _Builder, _parser
from tests.conftest import ROOT, sample_files

LINES = [
    "allow tcp 22",
    "allow tcp svc158, svc049 from 10.87.222.0/24",
    "allow tcp 22, ssh from 10.0.0.0/8, any to grp in,out",
    "  drop  udp   53-60  to  192.0.2.1 fwd   # trailing comment",
    "allow ssh",
    "allow",
    "reject tcp 113 from 2001:db8::/32 port 1024-65535 to any port 113 out",
    "allow established in,fwd",
    "allow icmp echo-request from admins",
    "allow from any",
    "allow tcp http, https to web established",
    "policy edge-01",
    "default drop",
    "default drop in, fwd",
    "service web = tcp 80, tcp 443, udp 443",
    "service dns = 53",
    "hosts admins = 192.0.2.0/26, 2001:db8:a::/48, other",
    # Python's \d, in Lark's INT as here, matches every Unicode decimal digit.
    "allow tcp \u0662\u0662",
]


def _lark_statements(text: str, file: str = "p.wall") -> list:
    builder = _Builder(file, text, ())
    tree = _parser().parse(text + "\n")
    return [builder.statement(child) for child in tree.children]


@pytest.mark.parametrize("line", LINES)
def test_line_matches_lark(line):
    statement = lineparser.parse_line(line, 1, "p.wall")
    assert statement is not None
    assert [statement] == _lark_statements(line)


@pytest.mark.parametrize(
    "line",
    [
        'allow tcp 22 comment "ssh"',
        "allow tcp 22 from !192.0.2.1",
        "allow tcp 22; allow tcp 80",
        "allow tcp a,",
        "allow tcp 22 \\",
        "allow tcp 22 from 10.0.0.0/8 from 10.1.0.0/16",
        "allow tcp 22 in in",
        "allow on eth0",
        "allow tcp from",
        "service new = tcp 22",
        "target nftables {",
        "allow tcp 22\r",
        'allow tcp "22"',
        "allow tcp 22 {",
        "allow\ftcp 22",
        "allow tcp 2\u00b2",
    ],
)
def test_line_outside_subset(line):
    assert lineparser.parse_line(line, 1, "p.wall") is None


def test_keywords_match_grammar():
    terminals = _parser().terminals
    words = {
        t.pattern.value
        for t in terminals
        if t.pattern.type == "str" and lineparser._NAME.fullmatch(t.pattern.value)
    }
    assert lineparser.KEYWORDS == words


_WORDS = st.sampled_from(
    sorted(lineparser.KEYWORDS)
    + ["22", "53-60", "0", "99999", "10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "fd00::1",
       "ssh", "web", "svc_1", "a.b-c", "1abc", "10", "=", ",", "#", "eth0+"]
)  # fmt: skip


@settings(max_examples=2000, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=9), st.sampled_from([" ", "  ", "\t"]))
@example(["allow", "tcp", "from", ",", "to"], " ")
def test_random_lines_match_lark(words, separator):
    line = separator.join(words)
    statement = lineparser.parse_line(line, 1, "p.wall")
    if statement is None:
        return
    assert [statement] == _lark_statements(line)


_SPACE = st.sampled_from([" ", "  ", "\t", " \t "])
_PORT = st.sampled_from(["22", "8080", "1000-2000", "ssh", "svc_9", "web.v2"])
_ADDRESS = st.sampled_from(["192.0.2.0/24", "198.51.100.7", "2001:db8::/48", "any", "admins"])


@st.composite
def _rule_lines(draw) -> str:
    """Draw a rule inside the subset, with varied spacing around words and commas."""

    def listing(items: list[str]) -> str:
        return "".join(
            (draw(st.sampled_from([",", ", ", " , ", ",\t"])) if i else "") + item
            for i, item in enumerate(items)
        )

    words = [draw(st.sampled_from(sorted(lineparser.ACTIONS)))]
    if draw(st.booleans()):
        words.append(draw(st.sampled_from(["tcp", "udp"])))
    if draw(st.booleans()):
        words.append(listing(draw(st.lists(_PORT, min_size=1, max_size=3))))
    clauses = []
    for keyword in ("from", "to"):
        if draw(st.booleans()):
            clause = f"{keyword} {listing(draw(st.lists(_ADDRESS, min_size=1, max_size=3)))}"
            if draw(st.booleans()):
                clause += f" port {listing(draw(st.lists(_PORT, min_size=1, max_size=2)))}"
            clauses.append(clause)
    if draw(st.booleans()):
        clauses.append(listing(draw(st.lists(st.sampled_from(["in", "out", "fwd"]), min_size=1))))
    if draw(st.booleans()):
        clauses.append("established")
    words += draw(st.permutations(clauses))
    comment = draw(st.sampled_from(["", " # note", "#x"]))
    return draw(_SPACE).join(words) + comment


@settings(max_examples=1000, deadline=None)
@given(_rule_lines())
def test_subset_rules_match_lark(line):
    statement = lineparser.parse_line(line, 1, "p.wall")
    assert statement is not None
    assert [statement] == _lark_statements(line)


def _pure_lark(text: str) -> list:
    return _lark_statements(text, "<policy>")


@pytest.mark.parametrize(
    "text",
    [
        # A list continued on the next line, whose words look like a statement.
        "allow tcp a,\nallow from 10.0.0.0/8\nallow tcp 22",
        "hosts h = 192.0.2.1,\n  192.0.2.2\nallow tcp 22 from h",
        "allow tcp 22 \\\nfrom 10.0.0.0/8\nallow tcp 80",
        "allow tcp a, # a comment between\n\nb\nallow udp 53",
        'allow tcp 22 comment "x"\nallow tcp 23\ndefault drop',
        "allow tcp 22; allow tcp 23\nallow tcp 24",
        "# heading\n\npolicy p\nservice s = tcp 1\n\nallow s from 10.0.0.0/24\n",
    ],
)
def test_file_matches_lark(text):
    assert Loader(SourceCache()).load_text(text) == _pure_lark(text)


def test_samples_match_lark():
    for path in sample_files():
        text = path.read_text(encoding="utf-8")
        if "include" in text:
            continue
        assert Loader(SourceCache()).load_text(text) == _pure_lark(text), path.name


def test_line_inside_target_block_is_error():
    text = "allow tcp 22\ntarget nftables {\ndrop\n}\n"
    with pytest.raises(PolicyError) as raised:
        Loader(SourceCache()).load_text(text)
    assert raised.value.diagnostics[0].source.line == 3


def test_simple_compile_imports_no_lark_or_other_exporters(tmp_path):
    from compiler.plugins import BUILTIN_TARGETS

    policy = tmp_path / "one.wall"
    policy.write_text("allow tcp 22 from 192.0.2.0/24\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from compiler.cli import main\n"
        f"assert main(['compile', {str(policy)!r}, '-t', 'nftables', '-o', {str(tmp_path)!r}]) == 0\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(result.stdout.strip().splitlines()[-1].split())
    assert "exporters.nftables" in loaded
    assert "lark" not in loaded
    others = {module for target, module in BUILTIN_TARGETS.items() if target != "nftables"}
    assert not loaded & others


def test_builtin_targets_name_their_modules():
    from compiler.plugins import BUILTIN_EXPORTERS, BUILTIN_TARGETS, exporters, plugin_manager

    for target, module in BUILTIN_TARGETS.items():
        assert module in BUILTIN_EXPORTERS
        found = exporters(plugin_manager(load_entry_points=False, modules=[module]))
        assert list(found) == [target]
