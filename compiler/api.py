"""Entry points for library users: load a policy file into a rule graph."""

from __future__ import annotations

from compiler.errors import SourceCache
from compiler.graph import RuleGraph
from compiler.parser import Loader
from compiler.resolve import build_graph


def load_policy(path: str, sources: SourceCache | None = None) -> RuleGraph:
    """Parse a policy file with its includes and build its rule graph."""
    loader = Loader(sources)
    statements = loader.load(path)
    return build_graph(statements, loader.files[0], loader.files)


def load_policy_text(text: str, name: str = "<policy>", sources: SourceCache | None = None) -> RuleGraph:
    """Build the rule graph of policy text that has no includes of its own file."""
    loader = Loader(sources)
    statements = loader.load_text(text, name)
    return build_graph(statements, name, loader.files)
