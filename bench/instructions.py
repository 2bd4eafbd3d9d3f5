"""Count the instructions one compile executes, with valgrind's callgrind.

Usage: python bench/instructions.py [--size 3000] [--target nftables] [--tool polywall]

Wall time on a shared machine varies by tens of percent from run to run, but
the instruction count does not. So the count tells whether a small change to
the compiler helps. The count covers the whole process, start-up included. Each
run takes about 20 times longer than the compile itself.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import make_policy, write_policy_files  # noqa: E402
from bench.run import aerleon_command, compiler_environment, polywall_command  # noqa: E402


def count_instructions(command: list[str], env: dict[str, str], work: Path) -> int:
    """Run a command under callgrind and return the number of instructions it executed."""
    report = work / "callgrind.out"
    result = subprocess.run(
        [
            "valgrind", "--tool=callgrind", "--cache-sim=no", "--branch-sim=no",
            f"--callgrind-out-file={report}", *command,
        ],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"instructions.py: the run failed:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count the instructions of one compile.")
    parser.add_argument("--size", type=int, default=3000, help="rules in the generated policy")
    parser.add_argument("--target", choices=("iptables", "nftables"), default="nftables")
    parser.add_argument("--tool", choices=("polywall", "aerleon"), default="polywall")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("instructions.py: valgrind not found; install it (Debian: valgrind)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="polywall-instructions-") as folder:
        work = Path(folder)
        files = write_policy_files(make_policy(args.size), work / "policy")
        if args.tool == "polywall":
            command = polywall_command(files.polywall, args.target, work / "out")
        else:
            command = aerleon_command(files, args.target, work / "out")
        env = compiler_environment(work)
        # One plain run first, so that the counted run finds the bytecode cache filled.
        subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True)
        total = count_instructions(command, env, work)
    print(f"{args.tool} {args.target} {args.size} rules: {total} instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
