"""Benchmark polywall against Aerleon on generated policies, and time the kernel loads.

Usage: python bench/run.py [--sizes 1000,10000,50000] [--repeat N] [--quick]

For each size, the same rules are generated in polywall's language and in
Aerleon's policy and naming files. Both compilers run as whole processes on
the same interpreter, alternating, for the iptables-restore and nftables
targets. Each output is then loaded into a fresh network namespace with
iptables-restore, ip6tables-restore or nft -f. The table goes to standard
output and the figures, with the machine and tool versions, to
bench/results/*.json. Loading needs root; pass --no-load without it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import SEED, PolicyFiles, make_policy, write_policy_files  # noqa: E402
from bench.measure import BenchError, Measurement, load_steps, run_measured, time_load  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGETS = ("iptables", "nftables")
TOOLS = ("polywall", "aerleon")
DEFAULT_SIZES = (1000, 10000, 50000)
DEFAULT_REPEAT = 3
ONE_LINE_POLICY = "allow tcp 22\n"
STARTUP_RUNS = 10
# Aerleon's unmerged nftables output for 50,000 rules takes far longer than
# this to load (the kernel's time grows faster than linearly with the number
# of anonymous sets), so loads stop here and are reported as timed out.
DEFAULT_LOAD_TIMEOUT = 120.0

# The targets the benchmark checks; sizes not in a run are skipped.
MAX_TIME_RATIO = 0.2
MAX_MEMORY_RATIO = 0.5
MAX_GROWTH = 5.5
MAX_STARTUP = 0.150
MAX_NFT_LOAD = 1.0


@dataclass
class Series:
    """Repeated compiles of one size, target and tool, and the load of its output."""

    size: int
    target: str
    tool: str
    runs: list[Measurement] = field(default_factory=list)
    load: Measurement | None = None
    outputs: list[Path] = field(default_factory=list)

    @property
    def median_wall(self) -> float:
        return statistics.median(run.wall for run in self.runs)

    @property
    def median_max_rss_mib(self) -> float:
        return statistics.median(run.max_rss_kib for run in self.runs) / 1024


def polywall_command(policy: Path, target: str, output: Path) -> list[str]:
    """Return the polywall command that compiles one policy for one target."""
    return [
        sys.executable, "-m", "compiler.cli", "compile", str(policy),
        "-t", target, "-o", str(output),
    ]  # fmt: skip


def aerleon_command(files: PolicyFiles, target: str, output: Path) -> list[str]:
    """Return the aclgen command that compiles the Aerleon policy of one target."""
    return [
        sys.executable, "-m", "aerleon.aclgen",
        "--base_directory", str(files.aerleon_root / "policies"),
        "--definitions_directory", str(files.aerleon_definitions),
        "--policy_file", str(files.aerleon_policies[target]),
        "--output_directory", str(output),
    ]  # fmt: skip


def compiler_environment(work: Path) -> dict[str, str]:
    """Return the environment for the compilers: bytecode cached in the work folder.

    An installed package comes with compiled bytecode, so both tools run
    with bytecode caching on even where PYTHONDONTWRITEBYTECODE is set, and
    with the cache kept out of the checkout.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def _output_files(tool: str, target: str, output: Path) -> list[Path]:
    folder = output / target if tool == "polywall" else output
    return sorted(path for path in folder.iterdir() if path.is_file() and path.stat().st_size)


def compile_once(
    tool: str, files: PolicyFiles, target: str, output: Path, log: Path, env: dict[str, str]
) -> Measurement:
    """Run one compile and check that it wrote its output."""
    if tool == "polywall":
        command = polywall_command(files.polywall, target, output)
    else:
        command = aerleon_command(files, target, output)
    output.mkdir(parents=True, exist_ok=True)
    result = run_measured(command, cwd=ROOT, log=log, env=env)
    if result.returncode != 0 or not _output_files(tool, target, output):
        text = log.read_text(errors="replace")[-2000:]
        raise BenchError(f"{tool} {target} failed with exit code {result.returncode}:\n{text}")
    return result


def _pair_ratios(polywall: Series, aerleon: Series) -> dict[str, float]:
    """Return the median of the run-by-run ratios polywall / Aerleon for time and memory."""
    pairs = list(zip(polywall.runs, aerleon.runs))
    return {
        "time": statistics.median(p.wall / a.wall for p, a in pairs),
        "memory": statistics.median(p.max_rss_kib / a.max_rss_kib for p, a in pairs),
    }


def run_compiles(sizes: list[int], repeat: int, work: Path) -> dict[tuple, Series]:
    """Compile every size for every target with both tools, alternating which goes first."""
    series: dict[tuple, Series] = {}
    env = compiler_environment(work)
    warmed = False
    for size in sizes:
        files = write_policy_files(make_policy(size), work / f"policy-{size}")
        for target in TARGETS:
            if not warmed:
                # One untimed run each, so that the bytecode and Lark's grammar cache exist.
                for tool in TOOLS:
                    compile_once(
                        tool, files, target, work / "warmup" / tool, work / "warmup.log", env
                    )
            for tool in TOOLS:
                series[size, target, tool] = Series(size, target, tool)
            for index in range(repeat):
                order = TOOLS if index % 2 == 0 else TOOLS[::-1]
                for tool in order:
                    output = work / "out" / f"{size}-{target}-{tool}-{index}"
                    log = work / f"{size}-{target}-{tool}-{index}.log"
                    result = compile_once(tool, files, target, output, log, env)
                    series[size, target, tool].runs.append(result)
                    series[size, target, tool].outputs = _output_files(tool, target, output)
                    print(
                        f"  {size:>6} {target:<9} {tool:<9} run {index + 1}: "
                        f"{result.wall:.3f} s, {result.max_rss_kib / 1024:.1f} MiB",
                        file=sys.stderr,
                    )
        warmed = True
    return series


def run_loads(series: dict[tuple, Series], timeout: float, work: Path) -> None:
    """Load each series' last output into a fresh namespace and record the time."""
    for (size, target, tool), item in series.items():
        steps = load_steps(target, item.outputs)
        item.load = time_load(steps, timeout, work / f"load-{size}-{target}-{tool}.log")
        status = _load_status(item.load)
        print(f"  {size:>6} {target:<9} {tool:<9} load: {item.load.wall:.3f} s {status}", file=sys.stderr)


def _load_status(load: Measurement | None) -> str:
    if load is None:
        return "skipped"
    if load.timed_out:
        return "timeout"
    return "ok" if load.returncode == 0 else f"failed ({load.returncode})"


def run_startup(runs: int, work: Path) -> dict[str, list[Measurement]]:
    """Compile the one-line policy repeatedly for each target."""
    policy = work / "one-line.wall"
    policy.write_text(ONE_LINE_POLICY, encoding="utf-8")
    results: dict[str, list[Measurement]] = {}
    for target in TARGETS:
        command = polywall_command(policy, target, work / "out-one-line")
        measured = []
        for _ in range(runs):
            result = run_measured(
                command, cwd=ROOT, log=work / "one-line.log", env=compiler_environment(work)
            )
            if result.returncode != 0:
                raise BenchError(f"polywall failed on the one-line policy for {target}")
            measured.append(result)
        results[target] = measured
    return results


def _command_version(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        return None
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def environment() -> dict:
    """Describe the machine and the versions of the tools under test."""
    from compiler import __version__

    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "kernel": platform.release(),
            "load_average": os.getloadavg(),
        },
        "versions": {
            "python": platform.python_version(),
            "polywall": __version__,
            "aerleon": importlib.metadata.version("aerleon"),
            "lark": importlib.metadata.version("lark"),
            "nft": _command_version(["nft", "--version"]),
            "iptables": _command_version(["iptables", "--version"]),
        },
    }


def checks(series: dict[tuple, Series], startup: dict[str, list[Measurement]]) -> list[dict]:
    """Compare the figures with the performance targets, for the sizes that were run."""
    found = []

    def add(name: str, value: float, limit: float) -> None:
        found.append({"check": name, "value": value, "limit": limit, "passed": value <= limit})

    for target in TARGETS:
        if (10000, target, "polywall") in series:
            ratios = _pair_ratios(series[10000, target, "polywall"], series[10000, target, "aerleon"])
            add(f"{target}: time polywall / Aerleon, 10,000 rules", ratios["time"], MAX_TIME_RATIO)
            add(f"{target}: peak memory polywall / Aerleon, 10,000 rules", ratios["memory"], MAX_MEMORY_RATIO)
        if (10000, target, "polywall") in series and (50000, target, "polywall") in series:
            growth = series[50000, target, "polywall"].median_wall / series[10000, target, "polywall"].median_wall
            add(f"{target}: time 50,000 rules / 10,000 rules", growth, MAX_GROWTH)
        if target in startup:
            median = statistics.median(run.wall for run in startup[target])
            add(f"{target}: one-line policy, seconds", median, MAX_STARTUP)
    load = series.get((10000, "nftables", "polywall"))
    if load is not None and load.load is not None and not load.load.timed_out:
        add("nftables: load of 10,000 rules, seconds", load.load.wall, MAX_NFT_LOAD)
    return found


def table(series: dict[tuple, Series]) -> str:
    """Format the results as a plain text table, one row per size, target and tool."""
    header = ("size", "target", "tool", "median s", "peak MiB", "time ratio", "mem ratio", "load s")
    rows = [header]
    for (size, target, tool), item in series.items():
        time_ratio = memory_ratio = ""
        if tool == "polywall":
            ratios = _pair_ratios(item, series[size, target, "aerleon"])
            time_ratio, memory_ratio = f"{ratios['time']:.3f}", f"{ratios['memory']:.3f}"
        load = ""
        if item.load is not None:
            load = f"{item.load.wall:.3f}" if _load_status(item.load) == "ok" else _load_status(item.load)
        rows.append(
            (
                str(size), target, tool, f"{item.median_wall:.3f}",
                f"{item.median_max_rss_mib:.1f}", time_ratio, memory_ratio, load,
            )  # fmt: skip
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def results_json(settings: dict, series: dict[tuple, Series], startup: dict, found: list[dict]) -> dict:
    """Collect every figure of a run as JSON data."""
    compiles = []
    for (size, target, tool), item in series.items():
        entry = {
            "size": size,
            "target": target,
            "tool": tool,
            "runs": [{"wall_s": r.wall, "max_rss_kib": r.max_rss_kib} for r in item.runs],
            "median_wall_s": item.median_wall,
            "median_max_rss_mib": item.median_max_rss_mib,
            "load": None
            if item.load is None
            else {"wall_s": item.load.wall, "status": _load_status(item.load)},
        }
        if tool == "polywall":
            ratios = _pair_ratios(item, series[size, target, "aerleon"])
            entry["time_ratio"] = ratios["time"]
            entry["memory_ratio"] = ratios["memory"]
        compiles.append(entry)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **environment(),
        "settings": settings,
        "compile": compiles,
        "startup": {
            "policy": ONE_LINE_POLICY.strip(),
            "targets": {
                target: {
                    "runs_s": [r.wall for r in runs],
                    "median_wall_s": statistics.median(r.wall for r in runs),
                }
                for target, runs in startup.items()
            },
        },
        "checks": found,
    }


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark polywall against Aerleon.")
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated policy sizes in rules (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat", type=int, default=DEFAULT_REPEAT, help="compiles per tool, size and target"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 rules, one compile each")
    parser.add_argument("--no-load", action="store_true", help="skip the loads into network namespaces")
    parser.add_argument(
        "--load-timeout",
        type=float,
        default=DEFAULT_LOAD_TIMEOUT,
        help="seconds before a load is stopped and reported as timed out (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder and print its path")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = "1000", 1
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes takes numbers separated by commas, not {args.sizes!r}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if not args.no_load and os.geteuid() != 0:
        print("run.py: loading needs root for 'ip netns'; run as root or pass --no-load", file=sys.stderr)
        return 2
    for tool in ("iptables-restore", "ip6tables-restore", "nft", "ip"):
        if not args.no_load and shutil.which(tool) is None:
            print(f"run.py: {tool} not found on PATH; install it or pass --no-load", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="polywall-bench-"))
    try:
        series = run_compiles(args.sizes, args.repeat, work)
        if not args.no_load:
            run_loads(series, args.load_timeout, work)
        startup = run_startup(3 if args.quick else STARTUP_RUNS, work)
    except BenchError as exc:
        print(f"run.py: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    found = checks(series, startup)
    settings = {"sizes": args.sizes, "repeat": args.repeat, "seed": SEED, "quick": args.quick}
    data = results_json(settings, series, startup, found)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = data["date"].replace(":", "").replace("+0000", "Z")
    path = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    print(table(series))
    print()
    for target, runs in startup.items():
        median = statistics.median(r.wall for r in runs)
        print(f"one-line policy ({ONE_LINE_POLICY.strip()!r}), {target}: median {median:.3f} s")
    for item in found:
        mark = "ok  " if item["passed"] else "FAIL"
        print(f"{mark} {item['check']}: {item['value']:.3f} (limit {item['limit']})")
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
