"""The Lark grammar of the polywall policy language."""

from importlib import resources


def grammar_text() -> str:
    """Return the text of ``polywall.lark``."""
    return resources.files(__name__).joinpath("polywall.lark").read_text("utf-8")
