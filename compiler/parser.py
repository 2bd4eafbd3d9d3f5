"""Parse policy files into syntax trees, following includes."""

from __future__ import annotations

import os
import stat
from functools import cache
from typing import TYPE_CHECKING

from compiler import lineparser, syntax
from compiler.errors import Diagnostic, PolicyError, Source, SourceCache, error
from grammar import grammar_text

if TYPE_CHECKING:
    from lark import Lark, Token, Tree
    from lark.exceptions import UnexpectedInput

# Lark is imported only when a file has a line outside compiler.lineparser's
# subset: the import takes about a third of the start-up time.

# Policies are written by people; a larger file is almost certainly a mistake,
# such as an include of a device or a log.
MAX_FILE_BYTES = 64 * 2**20
MAX_INCLUDE_DEPTH = 32
# Numbers longer than this are out of every range the language has; Python's
# int() also refuses strings of more than 4300 digits.
MAX_NUMBER_DIGITS = 20

# Words shown for terminals in "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "a number",
    "PORT_RANGE": "a port range",
    "ADDRESS": "an address",
    "STRING": 'a quoted string ("...")',
    "IFACE": "an interface name",
    "RATE": "a rate such as 10/minute",
    "_NL": "end of line",
    "$END": "end of file",
}


# Words from other firewalls that users type by habit, and the polywall word.
_KEYWORD_HINTS = {
    "accept": "polywall's action is 'allow'",
    "permit": "polywall's action is 'allow'",
    "pass": "polywall's action is 'allow'",
    "deny": "polywall's actions are 'drop' and 'reject'",
    "block": "polywall's actions are 'drop' and 'reject'",
    "input": "directions are 'in', 'out' and 'fwd'",
    "output": "directions are 'in', 'out' and 'fwd'",
    "forward": "directions are 'in', 'out' and 'fwd'",
    "proto": "write the protocol after the action, as in 'allow tcp 22'",
    "dport": "write ports after the protocol, as in 'allow tcp 22'",
    "sport": "write a source port as 'from ADDRESS port P'",
}


@cache
def _parser() -> Lark:
    from lark import Lark

    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=True,
    )


def _describe_terminals(names: set[str]) -> str:
    parser = _parser()
    patterns = {t.name: t.pattern for t in parser.terminals}
    words = set()
    for name in names:
        if name in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[name])
        elif name in patterns and patterns[name].type == "str":
            words.add(f"'{patterns[name].value}'")
        else:
            words.add(name.lower())
    ordered = sorted(words)
    if len(ordered) > 16:
        ordered = ordered[:16] + ["..."]
    return ", ".join(ordered)


class Loader:
    """Read a policy file and its includes into one list of statements."""

    def __init__(self, sources: SourceCache | None = None):
        self.sources = sources if sources is not None else SourceCache()
        self.files: list[str] = []
        self._loaded: dict[str, Source | None] = {}

    def display_name(self, path: str) -> str:
        """Return the path as shown in messages: relative to the working folder when inside it."""
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    def load(self, path: str) -> list[syntax.Statement]:
        return self._load(os.path.abspath(path), path, (), (), None)

    def load_text(self, text: str, name: str = "<policy>") -> list[syntax.Statement]:
        self.sources.texts[name] = text
        self.files.append(name)
        return self._statements(text, name, os.getcwd(), (), ())

    def _load(self, path, display, chain, stack, include_source) -> list[syntax.Statement]:
        """Read one file; errors point at the include statement that named it, if any."""
        what = "included file" if include_source else "policy file"
        try:
            # stat() follows links and does not block, unlike open() on a FIFO.
            info = os.stat(path)
        except FileNotFoundError:
            raise error(f"{what} not found: {display}", include_source) from None
        except OSError as exc:
            raise error(f"failed to read {display}: {exc.strerror}", include_source) from None
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {display} is not a regular file", include_source)
        if info.st_size > MAX_FILE_BYTES:
            raise error(
                f"{what} {display} is larger than {MAX_FILE_BYTES // 2**20} MiB",
                include_source,
            )
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read(MAX_FILE_BYTES + 1)
        except UnicodeDecodeError as exc:
            raise error(f"{display} is not valid UTF-8 text: {exc.reason}", include_source) from None
        except OSError as exc:
            raise error(f"failed to read {display}: {exc.strerror}", include_source) from None
        # A byte-order mark is legal in UTF-8 files that editors write.
        text = text.removeprefix("\ufeff")
        self.sources.texts[display] = text
        self.files.append(display)
        self._loaded[path] = include_source
        return self._statements(text, display, os.path.dirname(path), chain, stack + (path,))

    def _statements(self, text, display, directory, chain, stack) -> list[syntax.Statement]:
        """Return the statements of one file's text, includes expanded in place.

        Lines in compiler.lineparser's subset skip Lark. Each run of other lines
        goes to Lark on its own, padded with newlines so that positions stay
        right. A run that does not parse on its own (a syntax error, or a list
        or line continued into the next line) sends the whole file through Lark,
        so that errors and continued lines read exactly as without the subset.
        """
        pieces = self._split(text, display, chain)
        if pieces is None:
            pieces = [(_Builder(display, text, chain), self._parse(text, display, chain))]
        out: list[syntax.Statement] = []
        for piece in pieces:
            if not isinstance(piece, tuple):
                out.append(piece)
                continue
            builder, tree = piece
            for child in tree.children:
                if child.data == "include_stmt":
                    out.extend(self._include(child, builder, directory, chain, stack))
                else:
                    out.append(builder.statement(child))
        return out

    def _split(self, text: str, display: str, chain) -> list | None:
        """Return the file's statements from the subset and (builder, tree) pairs for the rest.

        Returns None when a run of other lines does not parse on its own.
        """
        lines = text.split("\n")
        pieces: list = []
        run_start = None
        for index, line in enumerate(lines):
            statement = lineparser.parse_line(line, index + 1, display, chain)
            if statement is None:
                if run_start is None and not lineparser.is_blank(line):
                    run_start = index
                continue
            if run_start is not None:
                piece = self._parse_run(lines, run_start, index, display, chain)
                if piece is None:
                    return None
                pieces.append(piece)
                run_start = None
            pieces.append(statement)
        if run_start is not None:
            piece = self._parse_run(lines, run_start, len(lines), display, chain)
            if piece is None:
                return None
            pieces.append(piece)
        return pieces

    def _parse_run(self, lines: list[str], start: int, end: int, display: str, chain):
        """Parse lines[start:end] with Lark, or return None when they do not stand alone."""
        from lark.exceptions import UnexpectedInput

        if lines[end - 1].rstrip("\r").endswith("\\"):
            return None
        text = "\n" * start + "\n".join(lines[start:end])
        try:
            tree = _parser().parse(text + "\n")
        except UnexpectedInput:
            return None
        return _Builder(display, text, chain), tree

    def _include(self, tree: Tree, builder: "_Builder", directory, chain, stack):
        token = tree.children[0]
        source = builder.token_source(token)
        target = _unquote(token, source)
        if not target or any(not c.isprintable() for c in target):
            raise error("invalid include path", source, "name a .wall file, relative to this file")
        path = os.path.abspath(os.path.join(directory, target))
        display = self.display_name(path)
        if path in stack:
            cycle = " -> ".join(self.display_name(p) for p in stack[stack.index(path):] + (path,))
            raise error(f"include cycle: {cycle}", source, "remove one of these includes")
        if len(stack) >= MAX_INCLUDE_DEPTH:
            raise error(f"includes nest more than {MAX_INCLUDE_DEPTH} deep", source)
        if path in self._loaded:
            first = self._loaded[path]
            where = f"{first.file}:{first.line}" if first else "as the policy file"
            raise error(
                f"{display} is already included ({where})",
                source,
                "include each file once; its definitions and rules would repeat",
            )
        if not os.path.lexists(path):
            raise error(
                f'included file not found: "{target}" (looked for {display})',
                source,
                "include paths are relative to the file that contains the include",
            )
        return self._load(path, display, chain + ((source.file, source.line),), stack, source)

    def _parse(self, text: str, display: str, chain) -> Tree:
        from lark.exceptions import UnexpectedInput

        try:
            return _parser().parse(text + "\n")
        except UnexpectedInput as exc:
            raise self._syntax_error(exc, text, display, chain) from None

    def _syntax_error(self, exc: UnexpectedInput, text: str, display: str, chain) -> PolicyError:
        from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

        line = getattr(exc, "line", 1) or 1
        column = getattr(exc, "column", 1) or 1
        if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
            lines = text.splitlines() or [""]
            line, column = len(lines), len(lines[-1]) + 1
        source = Source(display, line, column, column + 1, chain)
        hint = None
        word = _word_at(text, line, column)
        if word is not None and isinstance(exc, (UnexpectedToken, UnexpectedCharacters)):
            # The lexer may have cut a word after a keyword prefix ("input" into
            # "in" + "put"); report the whole word the user wrote.
            start, value = word
            expected = (exc.expected if isinstance(exc, UnexpectedToken) else exc.allowed) or set()
            source = Source(display, line, start, start + len(value), chain)
            message = f"unexpected {value!r}"
            hint = _KEYWORD_HINTS.get(value.lower())
            if expected:
                message += f"; expected {_describe_terminals(set(expected))}"
            return PolicyError(Diagnostic(message, source, hint))
        if isinstance(exc, UnexpectedCharacters):
            char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
            message = f"unexpected character {char!r}"
            expected = exc.allowed or set()
            if char == "'":
                hint = 'strings use double quotes: "..."'
        elif isinstance(exc, UnexpectedToken):
            token = exc.token
            value = str(token).strip() or "end of line"
            width = max(1, len(str(token).split("\n")[0]))
            source = Source(display, line, column, column + width, chain)
            message = f"unexpected {value!r}" if token.type not in ("_NL", "$END") else "unexpected end of line"
            expected = exc.expected or set()
            hint = _KEYWORD_HINTS.get(str(token).lower())
        elif isinstance(exc, UnexpectedEOF):
            message = "unexpected end of file"
            expected = set(exc.expected or ())
        else:  # pragma: no cover - Lark raises only the three above
            message = "syntax error"
            expected = set()
        if expected:
            message += f"; expected {_describe_terminals(set(expected))}"
        return PolicyError(Diagnostic(message, source, hint))


def _without_comments(text: str) -> str:
    """Drop ``#`` comments from statement text, leaving ``#`` inside strings alone."""
    out = []
    in_string = escaped = in_comment = False
    for char in text:
        if in_comment:
            if char == "\n":
                in_comment = False
                out.append(char)
            continue
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "#":
            in_comment = True
            continue
        out.append(char)
    return "".join(out)


_WORD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _word_at(text: str, line: int, column: int) -> tuple[int, str] | None:
    """Return (start column, word) of a name-like word that a keyword prefix split, if any."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    row = lines[line - 1]
    index = column - 1
    if index >= len(row) or row[index] not in _WORD_CHARS:
        return None
    start = index
    while start > 0 and row[start - 1] in _WORD_CHARS:
        start -= 1
    if start == index:
        return None
    end = index
    while end < len(row) and row[end] in _WORD_CHARS:
        end += 1
    return start + 1, row[start:end]


def _unquote(token: Token, source: Source | None = None) -> str:
    """Return a string literal's text; the only escapes are backslash-quote and double backslash."""
    body = str(token)[1:-1]
    out = []
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt not in ('"', "\\"):
                column = (source.column + 1 + i) if source else 1
                at = Source(source.file, source.line, column, column + 2, source.include_chain) if source else None
                raise error(
                    f"invalid escape '\\{nxt}' in a string",
                    at,
                    'strings know only \\" and \\\\; write other characters as they are',
                )
            out.append(nxt)
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


class _Builder:
    """Turn Lark trees of one file into syntax nodes with source positions."""

    def __init__(self, file: str, text: str, chain):
        self.file = file
        self.text = text
        self.chain = chain

    def token_source(self, token: Token) -> Source:
        return Source(self.file, token.line, token.column, token.end_column, self.chain)

    def tree_source(self, tree: Tree) -> Source:
        meta = tree.meta
        end = meta.end_column if meta.end_line == meta.line else meta.column + 1
        return Source(self.file, meta.line, meta.column, end, self.chain)

    def tree_text(self, tree: Tree) -> str:
        text = self.text[tree.meta.start_pos : tree.meta.end_pos]
        return " ".join(_without_comments(text).replace("\\\n", " ").split())

    def statement(self, tree: Tree) -> syntax.Statement:
        return getattr(self, "_" + tree.data)(tree)

    def _policy_stmt(self, tree: Tree) -> syntax.PolicyStmt:
        return syntax.PolicyStmt(str(tree.children[0]), self.tree_source(tree))

    def _service_def(self, tree: Tree) -> syntax.ServiceDef:
        name, *items = tree.children
        entries = []
        for item in items:
            protocol = None
            parts = list(item.children)
            if getattr(parts[0], "data", None) == "protocol":
                protocol = str(parts.pop(0).children[0])
            entries.append((protocol, self._port(parts[0])))
        return syntax.ServiceDef(str(name), entries, self.token_source(name))

    def _hosts_def(self, tree: Tree) -> syntax.HostsDef:
        name, *items = tree.children
        return syntax.HostsDef(str(name), [self._address(i) for i in items], self.token_source(name))

    def _default_stmt(self, tree: Tree) -> syntax.DefaultStmt:
        action = str(tree.children[0].children[0])
        directions = self._directions(tree.children[1]) if len(tree.children) > 1 else []
        return syntax.DefaultStmt(action, directions, self.tree_source(tree))

    def _target_settings(self, tree: Tree) -> syntax.TargetSettings:
        name, *entries = tree.children
        settings = []
        for entry in entries:
            key, value_tree = entry.children
            token = value_tree.children[0]
            kind = {"setting_name": "name", "setting_int": "int", "setting_string": "string"}[
                value_tree.data
            ]
            value = _unquote(token, self.token_source(token)) if kind == "string" else str(token)
            settings.append(
                syntax.TargetSetting(
                    str(key), value, kind, self.token_source(key), self.token_source(token)
                )
            )
        return syntax.TargetSettings(str(name), settings, self.token_source(name))

    def _directions(self, tree: Tree) -> list[tuple[str, Source]]:
        return [(str(d.children[0]), self.token_source(d.children[0])) for d in tree.children]

    def _port(self, tree: Tree) -> syntax.PortItem:
        token = tree.children[0]
        kind = {"port_number": "number", "port_range": "range", "port_name": "name"}[tree.data]
        return syntax.PortItem(kind, str(token), self.token_source(token))

    def _ports(self, tree: Tree) -> list[syntax.PortItem]:
        return [self._port(child) for child in tree.children]

    def _address(self, tree: Tree) -> syntax.AddressItem:
        source = self.tree_source(tree)
        if tree.data == "any_address":
            return syntax.AddressItem("any", "any", source)
        token = tree.children[0]
        kind = "address" if tree.data in ("address", "negated_address") else "group"
        negated = tree.data.startswith("negated")
        return syntax.AddressItem(kind, str(token), source, negated)

    def _rule(self, tree: Tree) -> syntax.RuleStmt:
        action_tree, *clauses = tree.children
        rule = syntax.RuleStmt(
            action=str(action_tree.children[0]),
            source=self.tree_source(action_tree),
            text=self.tree_text(tree),
        )
        for clause in clauses:
            self._clause(rule, clause)
        return rule

    def _claim(self, rule: syntax.RuleStmt, name: str, tree: Tree) -> None:
        source = self.tree_source(tree)
        if name in rule.clauses:
            first = rule.clauses[name]
            raise error(
                f"'{name}' is given twice in one rule (first at column {first.column})",
                source,
                f"merge the two '{name}' clauses into one",
            )
        rule.clauses[name] = source

    def _clause(self, rule: syntax.RuleStmt, clause: Tree) -> None:
        kind = clause.data
        children = clause.children
        if kind == "protocol_target":
            self._claim(rule, "protocol", clause)
            rule.protocol = str(children[0].children[0])
            rule.protocol_source = self.token_source(children[0].children[0])
            if len(children) > 1:
                rule.ports = self._ports(children[1])
        elif kind == "port_target":
            self._claim(rule, "ports", clause)
            rule.ports = self._ports(children[0])
        elif kind == "directions":
            self._claim(rule, "direction", clause)
            rule.directions = self._directions(clause)
        elif kind in ("from_clause", "to_clause"):
            name = kind.split("_")[0]
            self._claim(rule, name, clause)
            addresses = [self._address(a) for a in children[0].children]
            ports = self._ports(children[1]) if len(children) > 1 else []
            if name == "from":
                rule.from_addresses, rule.from_ports = addresses, ports
            else:
                rule.to_addresses, rule.to_ports = addresses, ports
        elif kind == "in_interface":
            self._claim(rule, "on", clause)
            rule.in_interface = (str(children[0]), self.token_source(children[0]))
        elif kind == "out_interface":
            self._claim(rule, "out-on", clause)
            rule.out_interface = (str(children[0]), self.token_source(children[0]))
        elif kind == "established":
            self._claim(rule, "state", clause)
            source = self.tree_source(clause)
            rule.states = [("established", source), ("related", source)]
        elif kind == "state":
            self._claim(rule, "state", clause)
            rule.states = [(str(s.children[0]), self.token_source(s.children[0])) for s in children]
        elif kind == "log":
            self._claim(rule, "log", clause)
            rule.log = True
            rule.log_source = self.tree_source(clause)
            if children:
                rule.log_prefix = _unquote(children[0], self.token_source(children[0]))
        elif kind == "limit":
            self._claim(rule, "limit", clause)
            rate, _, unit = str(children[0]).partition("/")
            burst_text = str(children[1]) if len(children) > 1 else None
            for text in (rate, burst_text):
                if text is not None and len(text) > MAX_NUMBER_DIGITS:
                    raise error(f"the number {text[:12]}... is too large", self.tree_source(clause))
            burst = int(burst_text) if burst_text is not None else None
            rule.limit = syntax.Limit(int(rate), unit, burst, self.tree_source(clause))
        elif kind == "comment":
            self._claim(rule, "comment", clause)
            rule.comment = _unquote(children[0], self.token_source(children[0]))
        elif kind == "reject_with":
            self._claim(rule, "with", clause)
            rule.reject_with = (str(children[0]), self.token_source(children[0]))
        else:  # pragma: no cover - the grammar has no other clause
            raise AssertionError(kind)
