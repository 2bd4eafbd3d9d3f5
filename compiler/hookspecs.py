"""Pluggy hook specifications that exporters implement.

Built-in exporters and third-party ones register the same way: a module or
object with a ``polywall_exporters`` hook implementation. Third-party
packages expose it through the ``polywall.exporters`` entry-point group.
"""

from __future__ import annotations

import pluggy

PROJECT = "polywall"
ENTRY_POINT_GROUP = "polywall.exporters"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def polywall_exporters() -> list:
    """Return the exporters this plugin provides.

    Each item is an object with these attributes:

    - ``name``: the target name used on the command line; unique across plugins.
    - ``description``: one line shown by ``polywall targets``.
    - ``capabilities``: a frozenset of names from ``compiler.capabilities``,
      the features the target can express. The compiler rejects a policy that
      uses a feature outside this set before ``render`` is called.
    - ``render(graph)``: return a dict of relative file path to file text. It
      must be deterministic: the same graph gives the same bytes.

    and optionally ``check(graph)``, returning a list of
    ``compiler.errors.Diagnostic`` for limits that a capability name cannot
    state (such as a maximum prefix length).
    """
