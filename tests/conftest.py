"""Shared fixtures: sample discovery and the root/namespace requirement."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def sample_files() -> list[Path]:
    """Return every shipped sample policy, sorted by name."""
    return sorted(SAMPLES.glob("*.wall"))


def require(condition: bool, reason: str) -> None:
    """Skip the test when a condition fails, but fail it under CI.

    CI installs every tool the tests need, so a missing one there is a fault of
    the CI setup, not a reason to pass quietly.
    """
    if condition:
        return
    if UNDER_CI:
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def _can_use_namespaces() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def namespaces_available() -> bool:
    return _can_use_namespaces()


@pytest.fixture
def need_namespaces(namespaces_available) -> None:
    """Require root and network namespaces (fail instead of skip under CI)."""
    require(namespaces_available, "needs root and network namespaces")


def need_tool(name: str) -> str:
    """Return the path of a command-line tool, or skip (fail under CI) when it is missing."""
    path = shutil.which(name)
    require(path is not None, f"needs {name} on PATH")
    return path
