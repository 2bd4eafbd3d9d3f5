"""Exporters load through pluggy: built-ins, an object, and a real entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from compiler import capabilities
from compiler.cli import main
from compiler.hookspecs import hookimpl
from compiler.plugins import PluginError, exporters, plugin_manager
from tests.helpers import write_policy


class _CountingExporter:
    name = "rule-count"
    description = "number of rules per chain"
    capabilities = frozenset({"forward-chain", "output-chain", "conntrack-states", "in-interface", "ipv6"})

    def render(self, graph):
        lines = [f"{name} {len(chain.rules)}" for name, chain in graph.chains.items()]
        return {"count.txt": "\n".join(lines) + "\n"}


class _CountingPlugin:
    @hookimpl
    def polywall_exporters(self):
        return [_CountingExporter()]


def test_builtin_targets_listed(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("iptables", "nftables", "json"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name


def test_every_hookspec_documented():
    from compiler import hookspecs

    assert hookspecs.polywall_exporters.__doc__
    assert "render" in hookspecs.polywall_exporters.__doc__


def test_out_of_tree_exporter_object(tmp_path, monkeypatch):
    found = exporters(plugin_manager(load_entry_points=False, extra=[_CountingPlugin()]))
    assert "rule-count" in found
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow established in\nallow on lo\n")
    from compiler.api import load_policy

    graph = load_policy("policy.wall")
    exporter = found["rule-count"]
    assert capabilities.check(graph, exporter.name, exporter.capabilities) == []
    assert exporter.render(graph)["count.txt"] == "input 2\nforward 0\noutput 0\n"


def test_capability_check_names_missing_feature(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_policy(tmp_path, "allow tcp 22\nallow tcp 80 log\n")
    limited = _CountingExporter.capabilities - {"ipv6"}
    from compiler.api import load_policy

    graph = load_policy("policy.wall")
    problems = capabilities.check(graph, "rule-count", limited)
    messages = [f"{p.source}: {p.message}" for p in problems]
    assert "policy.wall:2:1: rule-count cannot express per-rule logging" in messages
    assert "policy.wall:1:1: rule-count cannot express IPv6 rules" in messages


def test_target_claimed_twice_is_error():
    with pytest.raises(PluginError, match="target 'rule-count' is provided by both"):
        exporters(plugin_manager(load_entry_points=False, extra=[_CountingPlugin(), _CountingPlugin()]))


def test_entry_point_exporter(tmp_path):
    """An installed distribution with a polywall.exporters entry point is found by the CLI."""
    site = tmp_path / "site"
    package = site / "pw_demo_exporter"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent('''
        from compiler.hookspecs import hookimpl

        class Exporter:
            name = "demo"
            description = "policy name only"
            capabilities = frozenset({"forward-chain", "output-chain", "ipv6"})

            def render(self, graph):
                return {"name.txt": graph.name + "\\n"}

        @hookimpl
        def polywall_exporters():
            return [Exporter()]
    '''))
    info = site / "pw_demo_exporter-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pw-demo-exporter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[polywall.exporters]\ndemo = pw_demo_exporter\n")
    write_policy(tmp_path, "policy demo_policy\nallow tcp 22\n")
    env_path = f"{site}"
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from compiler.cli import main;"
         " sys.exit(main(sys.argv[2:]))", env_path, "compile", "policy.wall", "-t", "demo"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "demo_policy\n"
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from compiler.cli import main;"
         " sys.exit(main(sys.argv[2:]))", env_path, "targets"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    demo_lines = [line for line in listed.stdout.splitlines() if line.split()[0] == "demo"]
    assert len(demo_lines) == 1
    assert demo_lines[0].endswith("policy name only")
