"""Snapshot of every sample for every target: one text file per pair."""

from __future__ import annotations

import pytest

from compiler import capabilities
from compiler.api import load_policy
from compiler.plugins import exporters
from tests.conftest import sample_files
from tests.snapshots import TextSnapshotExtension, join_files

TARGETS = list(exporters())
SAMPLES = sample_files()


@pytest.fixture
def snapshot_text(snapshot):
    return snapshot.use_extension(TextSnapshotExtension)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_sample_export(sample, target, snapshot_text, monkeypatch):
    monkeypatch.chdir(sample.parent)
    graph = load_policy(sample.name)
    exporter = exporters()[target]
    problems = capabilities.check(graph, target, frozenset(exporter.capabilities))
    if hasattr(exporter, "check"):
        problems += exporter.check(graph)
    if problems:
        # A target that refuses a sample is part of its contract: snapshot the errors.
        text = "".join(f"{p.source}: error: {p.message}\n" for p in problems)
    else:
        text = join_files(exporter.render(graph))
    assert text == snapshot_text
