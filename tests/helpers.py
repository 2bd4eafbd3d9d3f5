"""Helpers for tests: compile samples and policy text through the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

from compiler import capabilities
from compiler.api import load_policy
from compiler.plugins import exporters


def export(policy: Path | str, target: str) -> dict[str, str]:
    """Compile a policy file for one target, failing on capability problems."""
    exporter = exporters()[target]
    previous = os.getcwd()
    os.chdir(Path(policy).parent)
    try:
        graph = load_policy(Path(policy).name)
    finally:
        os.chdir(previous)
    problems = capabilities.check(graph, target, frozenset(exporter.capabilities))
    if hasattr(exporter, "check"):
        problems += exporter.check(graph)
    assert not problems, [p.message for p in problems]
    return exporter.render(graph)


def write_policy(tmp_path: Path, text: str, name: str = "policy.wall") -> Path:
    """Write policy text to a file under tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
