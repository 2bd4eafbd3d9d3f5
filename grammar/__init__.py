"""The Lark grammar of the polywall policy language."""

from importlib import resources


def grammar_text() -> str:
    """Return the text of ``polywall.lark``."""
    return resources.files(__name__).joinpath("polywall.lark").read_text("utf-8")


def keywords() -> frozenset[str]:
    """Return the grammar's reserved words: every quoted literal that looks like a name.

    Read from the grammar text, so that the list cannot drift from the
    grammar and no parser has to be built.
    """
    import re

    return frozenset(re.findall(r'"([A-Za-z][A-Za-z0-9_-]*)"', grammar_text()))
