"""Parse plain one-line statements without Lark, for large policies and fast start-up.

Most lines of a large policy look like ``allow tcp ssh, https from
192.0.2.0/24``. Lark's LALR parser took about 0.2 ms per such line, 2.1 s of
the 4.6 s that the 10,000-rule benchmark policy took to compile, and
importing Lark took about 60 ms (docs/performance.md). This module
recognizes a strict subset of the language and builds the same syntax nodes,
with the same source positions, as the Lark path in compiler.parser. A line
outside the subset returns None and goes to Lark.

The subset, one statement per line:

- ``policy NAME`` and ``default ACTION [DIRECTIONS]``;
- ``service NAME = [PROTOCOL] PORT, ...`` and ``hosts NAME = ADDRESS, ...``;
- rules: an action, an optional protocol and port list, then the clauses
  ``from`` and ``to`` (each with an optional ``port`` list), directions and
  ``established``, each at most once.

A line may end with a ``#`` comment. Lines with quotes, ``!``, ``;``,
braces, backslashes or any other clause are left to Lark, and so is a word in
a name position that is one of the language's keywords.
"""

from __future__ import annotations

import re

from compiler import syntax
from compiler.errors import Source
from grammar import keywords as grammar_keywords

# Every keyword of grammar/polywall.lark that the NAME terminal also matches.
KEYWORDS = grammar_keywords()
ACTIONS = frozenset({"allow", "drop", "reject"})
PROTOCOLS = frozenset({"tcp", "udp", "icmp", "icmpv6"})
DIRECTIONS = frozenset({"in", "out", "fwd"})

# The terminals of the grammar that the subset uses, matched against whole words.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_INT = re.compile(r"\d+")
_PORT_RANGE = re.compile(r"\d+-\d+")
_ADDRESS = re.compile(r"\d+\.[0-9.]*(/\d+)?|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(/\d+)?")
_TOKEN = re.compile(r"[^ \t,]+|,")


class _NotInSubset(Exception):
    """The line needs the full parser."""


class _Tokens:
    """The words and commas of one line, with a cursor.

    The list ends with an end marker whose word is None, so that peek needs
    no bounds check.
    """

    def __init__(self, line: str, number: int, file: str, chain: tuple):
        self.items: list[tuple[str | None, int, int]] = []
        end = 0
        for word in _TOKEN.findall(line):
            start = line.find(word, end)
            end = start + len(word)
            self.items.append((word, start, end))
        self.items.append((None, end, end))
        self.index = 0
        self.number = number
        self.file = file
        self.chain = chain

    def peek(self) -> str | None:
        return self.items[self.index][0]

    def take(self) -> tuple[str, int, int]:
        item = self.items[self.index]
        if item[0] is None:
            raise _NotInSubset
        self.index += 1
        return item

    def take_keyword(self, words: frozenset[str]) -> tuple[str, int, int]:
        item = self.take()
        if item[0] not in words:
            raise _NotInSubset
        return item

    def take_comma(self) -> bool:
        if self.peek() == ",":
            self.index += 1
            return True
        return False

    def source(self, start: int, end: int) -> Source:
        """Return the position of columns start to end (0-based, end exclusive) of this line."""
        return Source(self.file, self.number, start + 1, end + 1, self.chain)

    def end_of(self, index: int) -> int:
        return self.items[index - 1][2]


def parse_line(line: str, number: int, file: str, chain: tuple = ()) -> syntax.Statement | None:
    """Return the statement on a line, or None when the line is outside the subset.

    ``number`` is the line's number in its file. A blank or comment-only line
    also returns None; the caller tells those apart with is_blank.
    """
    code = line.split("#", 1)[0]
    tokens = _Tokens(code, number, file, chain)
    if tokens.peek() is None:
        return None
    first = tokens.peek()
    try:
        if first in ACTIONS:
            statement = _rule(tokens, code)
        elif first == "policy":
            statement = _policy(tokens)
        elif first == "default":
            statement = _default(tokens)
        elif first == "service":
            statement = _service(tokens)
        elif first == "hosts":
            statement = _hosts(tokens)
        else:
            return None
    except _NotInSubset:
        return None
    return statement if tokens.peek() is None else None


def is_blank(line: str) -> bool:
    """Tell whether a line contains nothing but spaces, tabs and a comment."""
    return not line.split("#", 1)[0].strip(" \t")


def _name(tokens: _Tokens) -> tuple[str, int, int]:
    item = tokens.take()
    if item[0] in KEYWORDS or not _NAME.fullmatch(item[0]):
        raise _NotInSubset
    return item


def _port(tokens: _Tokens) -> syntax.PortItem:
    text, start, end = tokens.take()
    return syntax.PortItem(_port_kind(text), text, tokens.source(start, end))


def _port_kind(text: str) -> str:
    if text[0].isdigit():
        if _INT.fullmatch(text):
            return "number"
        if _PORT_RANGE.fullmatch(text):
            return "range"
    elif text not in KEYWORDS and _NAME.fullmatch(text):
        return "name"
    raise _NotInSubset


def _ports(tokens: _Tokens) -> list[syntax.PortItem]:
    items = [_port(tokens)]
    while tokens.take_comma():
        items.append(_port(tokens))
    return items


def _starts_port(word: str | None) -> bool:
    """Tell whether a word after the action or protocol opens a port list rather than a clause."""
    return word is not None and word != "," and word not in KEYWORDS


def _address(tokens: _Tokens) -> syntax.AddressItem:
    text, start, end = tokens.take()
    if text == "any":
        kind = "any"
    elif _ADDRESS.fullmatch(text):
        kind = "address"
    elif text not in KEYWORDS and _NAME.fullmatch(text):
        kind = "group"
    else:
        raise _NotInSubset
    return syntax.AddressItem(kind, text, tokens.source(start, end))


def _addresses(tokens: _Tokens) -> list[syntax.AddressItem]:
    items = [_address(tokens)]
    while tokens.take_comma():
        items.append(_address(tokens))
    return items


def _directions(tokens: _Tokens) -> list[tuple[str, Source]]:
    found = []
    while True:
        text, start, end = tokens.take_keyword(DIRECTIONS)
        found.append((text, tokens.source(start, end)))
        if not tokens.take_comma():
            return found


def _policy(tokens: _Tokens) -> syntax.PolicyStmt:
    _, start, _ = tokens.take()
    name, _, end = _name(tokens)
    return syntax.PolicyStmt(name, tokens.source(start, end))


def _default(tokens: _Tokens) -> syntax.DefaultStmt:
    _, start, end = tokens.take()
    action, _, end = tokens.take_keyword(ACTIONS)
    directions = _directions(tokens) if tokens.peek() is not None else []
    end = tokens.end_of(tokens.index)
    return syntax.DefaultStmt(action, directions, tokens.source(start, end))


def _service(tokens: _Tokens) -> syntax.ServiceDef:
    tokens.take()
    name, start, end = _name(tokens)
    if tokens.take()[0] != "=":
        raise _NotInSubset
    items = []
    while True:
        protocol = tokens.take()[0] if tokens.peek() in PROTOCOLS else None
        items.append((protocol, _port(tokens)))
        if not tokens.take_comma():
            break
    return syntax.ServiceDef(name, items, tokens.source(start, end))


def _hosts(tokens: _Tokens) -> syntax.HostsDef:
    tokens.take()
    name, start, end = _name(tokens)
    if tokens.take()[0] != "=":
        raise _NotInSubset
    return syntax.HostsDef(name, _addresses(tokens), tokens.source(start, end))


def _rule(tokens: _Tokens, code: str) -> syntax.RuleStmt:
    action, start, end = tokens.take()
    rule = syntax.RuleStmt(action=action, source=tokens.source(start, end), text="")

    word = tokens.peek()
    if word in PROTOCOLS:
        _, clause_start, clause_end = tokens.take()
        rule.protocol = word
        rule.protocol_source = tokens.source(clause_start, clause_end)
        if _starts_port(tokens.peek()):
            rule.ports = _ports(tokens)
        rule.clauses["protocol"] = tokens.source(clause_start, tokens.end_of(tokens.index))
    elif _starts_port(word):
        clause_start = tokens.items[tokens.index][1]
        rule.ports = _ports(tokens)
        rule.clauses["ports"] = tokens.source(clause_start, tokens.end_of(tokens.index))

    while tokens.peek() is not None:
        _clause(tokens, rule)
    rule.text = " ".join(code[start : tokens.end_of(tokens.index)].split())
    return rule


def _clause(tokens: _Tokens, rule: syntax.RuleStmt) -> None:
    word, clause_start, _ = tokens.items[tokens.index]
    name = "direction" if word in DIRECTIONS else word
    if name in rule.clauses:
        # A repeated clause is an error that the full parser reports.
        raise _NotInSubset
    if word in ("from", "to"):
        tokens.take()
        addresses = _addresses(tokens)
        ports = []
        if tokens.peek() == "port":
            tokens.take()
            ports = _ports(tokens)
        if word == "from":
            rule.from_addresses, rule.from_ports = addresses, ports
        else:
            rule.to_addresses, rule.to_ports = addresses, ports
    elif word in DIRECTIONS:
        rule.directions = _directions(tokens)
    elif word == "established":
        _, start, end = tokens.take()
        source = tokens.source(start, end)
        rule.states = [("established", source), ("related", source)]
        name = "state"
        if name in rule.clauses:
            raise _NotInSubset
    else:
        raise _NotInSubset
    rule.clauses[name] = tokens.source(clause_start, tokens.end_of(tokens.index))
