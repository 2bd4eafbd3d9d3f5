"""The same policy gives the same bytes on every run, whatever the hash seed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, sample_files


def _compile_all(out: Path, seed: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    digests = {}
    for sample in sample_files():
        target_dir = out / sample.stem
        subprocess.run(
            [sys.executable, "-m", "compiler.cli", "compile", sample.name, "-t", "iptables",
             "-t", "nftables", "-t", "json", "-o", str(target_dir)],
            cwd=sample.parent, env=env, check=True, capture_output=True,
        )
        for path in sorted(target_dir.rglob("*")):
            if path.is_file():
                digests[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def test_same_bytes_under_different_hash_seeds(tmp_path):
    first = _compile_all(tmp_path / "a", "1")
    second = _compile_all(tmp_path / "b", "4242")
    assert first == second
    assert len(first) == 4 * len(sample_files())


def test_output_independent_of_working_folder(tmp_path):
    sample = sample_files()[0]
    from_samples = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", sample.name, "-t", "nftables"],
        cwd=sample.parent, check=True, capture_output=True, text=True,
    ).stdout
    from_root = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "compile", str(sample.relative_to(ROOT)), "-t", "nftables"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    assert from_samples == from_root
