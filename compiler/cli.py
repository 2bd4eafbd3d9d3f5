"""The ``polywall`` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import shutil
import sys
import tempfile
from typing import Iterator

from compiler import __version__, capabilities
from compiler.errors import Diagnostic, PolicyError, PolywallError, SourceCache, render

EXIT_OK, EXIT_POLICY, EXIT_USAGE = 0, 1, 2


class UsageError(PolywallError):
    """The command line requests something that cannot be done."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polywall",
        description="Compile one firewall policy to the configuration of many firewalls.",
    )
    parser.add_argument("--version", action="version", version=f"polywall {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_ = commands.add_parser("compile", help="compile a policy for one or more targets")
    compile_.add_argument("policy", metavar="POLICY", help="policy file (.wall)")
    compile_.add_argument(
        "--target",
        "-t",
        action="append",
        required=True,
        metavar="NAME",
        help="target to export; repeat it or separate names by commas; 'all' for every target",
    )
    compile_.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        help="write DIR/<target>/... ; without it a single-file result goes to standard output",
    )
    compile_.add_argument(
        "--skip-unsupported",
        action="store_true",
        help="with several targets, still write the targets that can express the policy",
    )

    check = commands.add_parser("check", help="parse and resolve a policy without exporting")
    check.add_argument("policy", metavar="POLICY")

    commands.add_parser("targets", help="list the available targets")

    verify = commands.add_parser(
        "verify",
        help="load the exports into network namespaces and check them with real packets",
        description="Load each target's export into a lab of network namespaces, send probe "
        "packets derived from the policy and compare each outcome with the policy's verdict. "
        "Needs root and network namespaces; exits 1 on any difference.",
    )
    verify.add_argument("policy", metavar="POLICY", help="policy file (.wall)")
    verify.add_argument(
        "--target",
        "-t",
        action="append",
        metavar="NAME",
        help="target to check (iptables, nftables, ufw, firewalld); repeat it or separate names "
        "by commas; "
        "default: iptables,nftables",
    )

    explain = commands.add_parser(
        "explain",
        help="show which rule of a policy decides a packet",
        description="Show which rule decides a packet, from the policy alone (no root needed).",
        epilog="examples (quote the packet: an unquoted '>' is a shell redirection):\n"
        "  polywall explain site.wall 'tcp 198.51.100.5:40000 -> 192.0.2.10:993 in on eth0'\n"
        "  polywall explain site.wall 'udp [2001:db8::5]:5353 -> [2001:db8::1]:53 fwd on eth1 "
        "out-on eth0'\n"
        "  polywall explain site.wall 'icmp echo-request 192.0.2.9 -> 192.0.2.1 in'\n"
        "  polywall explain site.wall 'tcp established 198.51.100.5:40000 -> 192.0.2.10:993'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain.add_argument("policy", metavar="POLICY", help="policy file (.wall)")
    explain.add_argument(
        "packet",
        metavar="PACKET",
        nargs="+",
        help="PROTOCOL [ICMP-TYPE] [STATE] SOURCE -> DESTINATION [in|out|fwd] [on IFACE] "
        "[out-on IFACE], as one argument or as several",
    )
    # argparse reads a separate '->' word as an option, so '->' is declared as one
    # that collects the words after it; compiler.packet.packet_text joins them.
    explain.add_argument(
        "->", dest="after_arrow", nargs="*", action="append", help=argparse.SUPPRESS
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sources = SourceCache()
    try:
        if args.command == "targets":
            return _targets()
        if args.command == "verify":
            from compiler.verify import run_verify

            return run_verify(args.policy, args.target, sources)
        if args.command == "explain":
            from compiler.explain import run_explain
            from compiler.packet import packet_text

            text = packet_text(args.packet, args.after_arrow)
            return run_explain(args.policy, text, args.json, sources)
        if args.command == "check":
            graph = _load(args.policy, sources)
            _warn(graph.warnings, sources)
            count = sum(len(c.rules) for c in graph.chains.values())
            print(f"{args.policy}: ok, policy {graph.name}, {count} rules after expansion")
            return EXIT_OK
        with _collector_paused():
            return _compile(args, sources)
    except PolicyError as exc:
        for diagnostic in exc.diagnostics:
            print(render(diagnostic, sources), file=sys.stderr)
        return EXIT_POLICY
    except UsageError as exc:
        print(f"polywall: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PolywallError as exc:
        print(f"polywall: error: {exc}", file=sys.stderr)
        return EXIT_POLICY


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector, and restore its state afterwards.

    A compile allocates a few objects per rule that live until the output is
    written and form no reference cycles, so the collector's passes find
    nothing. On a policy of 10,000 rules they took more than half of the parse
    time (bench/run.py; figures in docs/performance.md).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(path: str, sources: SourceCache):
    from compiler.api import load_policy

    return load_policy(path, sources)


def _warn(warnings: list[Diagnostic], sources: SourceCache) -> None:
    for warning in warnings:
        print(render(warning, sources), file=sys.stderr)


def _targets() -> int:
    from compiler.plugins import exporters

    found = exporters()
    width = max(len(name) for name in found)
    for name, exporter in found.items():
        print(f"{name:<{width}}  {exporter.description}")
    return EXIT_OK


def _unknown_target_blocks(graph, find_exporters) -> list[Diagnostic]:
    """Warn about ``target NAME { ... }`` blocks that name no registered target."""
    if not graph.settings:
        return []
    from compiler.resolve import suggest

    known = find_exporters()
    warnings = []
    for name, node in sorted(graph.settings.items()):
        if name in known:
            continue
        warnings.append(
            Diagnostic(
                f"settings for unknown target '{name}' are ignored",
                node.source,
                suggest(name, known) or "run 'polywall targets' for the list",
                severity="warning",
            )
        )
    return warnings


def _selected_targets(requested: list[str], available: dict) -> tuple[list[str], bool]:
    names: list[str] = []
    for value in requested:
        names.extend(part.strip() for part in value.split(",") if part.strip())
    if not names:
        raise UsageError("no target given; run 'polywall targets' for the list")
    unknown = [n for n in names if n not in available and n != "all"]
    if unknown:
        raise UsageError(f"unknown target '{unknown[0]}'; available: {', '.join(available)}")
    if "all" in names:
        return list(available), True
    return list(dict.fromkeys(names)), len(set(names)) > 1


def _compile(args, sources: SourceCache) -> int:
    from compiler.plugins import BUILTIN_TARGETS, exporters, plugin_manager

    names = {part.strip() for value in args.target for part in value.split(",") if part.strip()}
    if names and names <= BUILTIN_TARGETS.keys():
        # Import only the requested built-in exporters; entry points still load.
        available = exporters(plugin_manager(modules=[BUILTIN_TARGETS[n] for n in sorted(names)]))
    else:
        available = exporters()
    targets, several = _selected_targets(args.target, available)
    graph = _load(args.policy, sources)
    _warn(graph.warnings, sources)
    _warn(_unknown_target_blocks(graph, exporters), sources)

    outputs: dict[str, dict[str, str]] = {}
    unsupported: list[str] = []
    problems: list[Diagnostic] = []
    for name in targets:
        exporter = available[name]
        found = capabilities.check(graph, name, frozenset(exporter.capabilities))
        if hasattr(exporter, "check"):
            found += exporter.check(graph)
        if found:
            problems.extend(found)
            unsupported.append(name)
            continue
        if hasattr(exporter, "warnings"):
            _warn(exporter.warnings(graph), sources)
        outputs[name] = exporter.render(graph)

    skipping = bool(problems) and several and args.skip_unsupported
    if problems:
        for diagnostic in problems:
            if skipping:
                # The user asked to skip what a target cannot express, so the
                # problems stay visible but no longer fail the run.
                diagnostic = dataclasses.replace(diagnostic, severity="warning")
            print(render(diagnostic, sources), file=sys.stderr)
        if not skipping:
            if several:
                print(
                    f"polywall: nothing written; {', '.join(unsupported)} cannot express this policy "
                    "(pass --skip-unsupported to write the other targets)",
                    file=sys.stderr,
                )
            return EXIT_POLICY
        print(f"polywall: skipped {', '.join(unsupported)}", file=sys.stderr)

    if args.output is None:
        if len(outputs) != 1 or len(next(iter(outputs.values()))) != 1:
            files = sum(len(v) for v in outputs.values())
            names = ", ".join(outputs) or "the targets"
            verb = "writes" if len(outputs) == 1 else "write"
            raise UsageError(f"{names} {verb} {files} files; give --output DIR")
        sys.stdout.write(next(iter(next(iter(outputs.values())).values())))
        return EXIT_OK
    written = write_outputs(args.output, outputs)
    for path in written:
        print(path)
    return EXIT_OK


def write_outputs(directory: str, outputs: dict[str, dict[str, str]]) -> list[str]:
    """Write DIR/<target>/<file> for every target, replacing each target folder whole.

    Files go to a temporary folder inside DIR first, and each target folder is
    swapped in by rename, so an error leaves no half-written target behind.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".polywall-", dir=directory)
    except OSError as exc:
        raise PolywallError(f"cannot create output folder {directory}: {exc.strerror}") from None
    written: list[str] = []
    try:
        for target, files in outputs.items():
            for relative, text in sorted(files.items()):
                path = os.path.join(staging, target, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8", newline="\n") as handle:
                    handle.write(text)
                written.append(os.path.join(directory, target, relative))
        for target in outputs:
            final = os.path.join(directory, target)
            if os.path.lexists(final):
                os.rename(final, os.path.join(staging, f".old-{target}"))
            os.rename(os.path.join(staging, target), final)
    except OSError as exc:
        raise PolywallError(f"cannot write output to {directory}: {exc.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
