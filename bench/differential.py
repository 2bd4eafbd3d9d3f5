"""Run the differential property test (evaluator against kernel) with more examples.

Usage: python bench/differential.py [--long] [--examples N] [--target iptables|nftables]

Without --long this is the CI run of tests/test_differential.py: derandomized
and bounded. --long draws a new random seed (Hypothesis prints it on a
failure, for --seed), runs 500 examples per target unless --examples sets
another number, and shrinks a failure to a minimal policy. An example took
0.4 to 1.5 s on the machine this was written on, so the default long run
takes about 10 to 25 minutes (an estimate). Needs root and network
namespaces, as the test does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/test_differential.py"
LONG_EXAMPLES = 500


def main(argv: list[str] | None = None) -> int:
    """Run the property test with the requested number of examples and return pytest's status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true",
                        help=f"random seed, shrinking and {LONG_EXAMPLES} examples per target")
    parser.add_argument("--examples", type=int, metavar="N",
                        help=f"examples per target (default: 50, or {LONG_EXAMPLES} with --long)")
    parser.add_argument("--target", choices=("iptables", "nftables"),
                        help="run one target only (default: both)")
    parser.add_argument("--seed", metavar="SEED",
                        help="with --long: the Hypothesis seed of an earlier run, to repeat it")
    args = parser.parse_args(argv)

    environment = dict(os.environ)
    if args.long:
        environment["POLYWALL_DIFFERENTIAL_RANDOM"] = "1"
    examples = args.examples or (LONG_EXAMPLES if args.long else None)
    if examples is not None:
        environment["POLYWALL_DIFFERENTIAL_EXAMPLES"] = str(examples)
    selection = "test_kernel_agrees_with_evaluator"
    if args.target:
        selection += f" and {args.target}"
    command = [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider",
               "-k", selection]
    if args.seed:
        command.append(f"--hypothesis-seed={args.seed}")
    return subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
