"""Diagnostics: source positions, policy errors and their rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Source(NamedTuple):
    """A position in a policy file, with the chain of includes that led to it.

    A named tuple rather than a frozen dataclass: the parser makes several for
    every rule, and a tuple is built about four times faster (see
    docs/performance.md).
    """

    file: str
    line: int
    column: int
    end_column: int = 0
    include_chain: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class PolywallError(Exception):
    """Base class of every error that polywall reports to its user."""


@dataclass
class Diagnostic:
    """One message about a position in a policy: an error or a warning."""

    message: str
    source: Source | None = None
    hint: str | None = None
    severity: str = "error"


class PolicyError(PolywallError):
    """One or more problems in a policy, each tied to a source position."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = diagnostics
        super().__init__("; ".join(d.message for d in diagnostics))


def error(message: str, source: Source | None, hint: str | None = None) -> PolicyError:
    """Build a PolicyError with a single diagnostic."""
    return PolicyError(Diagnostic(message, source, hint))


@dataclass
class SourceCache:
    """File texts by path, so that diagnostics can quote the offending line."""

    texts: dict[str, str] = field(default_factory=dict)

    def line(self, file: str, number: int) -> str | None:
        text = self.texts.get(file)
        if text is None:
            return None
        # Split on "\n" only, as the parser counts lines; str.splitlines also
        # breaks at form feeds and Unicode line separators.
        lines = text.split("\n")
        if 1 <= number <= len(lines):
            return lines[number - 1].rstrip("\r")
        return None


def render(diagnostic: Diagnostic, sources: SourceCache) -> str:
    """Format a diagnostic as ``file:line:col: error: message`` with a caret line."""
    src = diagnostic.source
    if src is None:
        out = [f"polywall: {diagnostic.severity}: {diagnostic.message}"]
    else:
        out = [f"{src}: {diagnostic.severity}: {diagnostic.message}"]
        for including_file, including_line in src.include_chain:
            out.append(f"  included from {including_file}:{including_line}")
        text = sources.line(src.file, src.line)
        if text is not None:
            shown = text.expandtabs(1)
            width = max(1, (src.end_column or src.column + 1) - src.column)
            out.append(f"    {shown}")
            out.append("    " + " " * (src.column - 1) + "^" * width)
    if diagnostic.hint:
        out.append(f"hint: {diagnostic.hint}")
    return "\n".join(out)
