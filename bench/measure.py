"""Measure whole processes: wall time and peak memory, and loads into private network namespaces."""

from __future__ import annotations

import itertools
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# How often a run with a time limit is polled for its exit, in seconds.
POLL_INTERVAL = 0.002
_namespace_numbers = itertools.count(1)


class BenchError(Exception):
    """A measured command failed, or the machine cannot run a step of the benchmark."""


@dataclass(frozen=True)
class Measurement:
    """One finished process: wall time in seconds, peak resident memory in KiB, exit code."""

    wall: float
    max_rss_kib: int
    returncode: int
    timed_out: bool = False


def run_measured(
    command: list[str],
    *,
    cwd: Path | None = None,
    stdin: Path | None = None,
    log: Path | None = None,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> Measurement:
    """Run a command and return its wall time and peak memory.

    The figures come from wait4(2) on this one child, so they cover the
    process and every descendant it waited for, and nothing else. Standard
    output and error go to ``log`` (or are discarded). With ``timeout``, the
    process is killed after that many seconds and the result is marked
    ``timed_out``.
    """
    output = open(log, "wb") if log else subprocess.DEVNULL
    source = open(stdin, "rb") if stdin else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, stdin=source, stdout=output, stderr=output, env=env
        )
        timed_out = False
        if timeout is None:
            _, status, usage = os.wait4(process.pid, 0)
        else:
            deadline = start + timeout
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    process.kill()
                    _, status, usage = os.wait4(process.pid, 0)
                    timed_out = True
                    break
                time.sleep(POLL_INTERVAL)
        wall = time.perf_counter() - start
    finally:
        for handle in (output, source):
            if handle is not subprocess.DEVNULL:
                handle.close()
    # Tell the Popen object that the child is reaped, so it does not wait again.
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(wall, usage.ru_maxrss, process.returncode, timed_out)


def _ip(*arguments: str) -> None:
    result = subprocess.run(["ip", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"'ip {' '.join(arguments)}' failed: {result.stderr.strip()}")


@contextmanager
def network_namespace() -> Iterator[str]:
    """Create a network namespace with a name unique to this process, and delete it afterwards."""
    name = f"pwbench-{os.getpid()}-{next(_namespace_numbers)}"
    _ip("netns", "add", name)
    try:
        yield name
    finally:
        _ip("netns", "delete", name)


@dataclass(frozen=True)
class LoadStep:
    """One restore command and the file it reads: from standard input or as an argument."""

    tool: str
    file: Path
    from_stdin: bool


def load_steps(target: str, files: list[Path]) -> list[LoadStep]:
    """Return the restore commands for exported files of one target."""
    steps = []
    for path in sorted(files):
        if target == "nftables":
            steps.append(LoadStep("nft", path, from_stdin=False))
        elif path.name.endswith(".v6"):
            steps.append(LoadStep("ip6tables-restore", path, from_stdin=True))
        else:
            steps.append(LoadStep("iptables-restore", path, from_stdin=True))
    return steps


def time_load(steps: list[LoadStep], timeout: float, log: Path) -> Measurement:
    """Load files into a fresh network namespace and return the summed time of the restore commands.

    The namespace is deleted afterwards, also when a command fails or times out.
    """
    wall = 0.0
    max_rss = 0
    with network_namespace() as namespace:
        for step in steps:
            prefix = ["ip", "netns", "exec", namespace]
            if step.from_stdin:
                command = [*prefix, step.tool]
                stdin = step.file
            else:
                command = [*prefix, step.tool, "-f", str(step.file)]
                stdin = None
            result = run_measured(command, stdin=stdin, log=log, timeout=max(timeout - wall, 0.1))
            wall += result.wall
            max_rss = max(max_rss, result.max_rss_kib)
            if result.timed_out or result.returncode != 0:
                return Measurement(wall, max_rss, result.returncode, result.timed_out)
    return Measurement(wall, max_rss, 0)
