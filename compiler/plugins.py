"""Discovery of exporters through pluggy, built-in and third-party alike."""

from __future__ import annotations

import importlib

import pluggy

from compiler import hookspecs
from compiler.errors import PolywallError

BUILTIN_EXPORTERS = (
    "exporters.iptables",
    "exporters.nftables",
    "exporters.json_graph",
    "exporters.cisco_asa",
    "exporters.cisco_ios",
    "exporters.juniper_srx",
    "exporters.ufw",
    "exporters.firewalld",
    "exporters.paloalto",
    "exporters.fortigate",
    "exporters.pf",
)


class PluginError(PolywallError):
    """An exporter plugin is broken or conflicts with another one."""


# The target each built-in module provides, so that a command that names only
# these targets imports only their modules: the others cost start-up time. A
# module missing here is still found, by importing every built-in module.
BUILTIN_TARGETS = {
    "iptables": "exporters.iptables",
    "nftables": "exporters.nftables",
    "json": "exporters.json_graph",
    "cisco-asa": "exporters.cisco_asa",
    "cisco-ios": "exporters.cisco_ios",
    "juniper-srx": "exporters.juniper_srx",
    "ufw": "exporters.ufw",
    "firewalld": "exporters.firewalld",
    "paloalto": "exporters.paloalto",
    "fortigate": "exporters.fortigate",
    "pf": "exporters.pf",
}


def plugin_manager(
    load_entry_points: bool = True, extra=(), modules=BUILTIN_EXPORTERS
) -> pluggy.PluginManager:
    """Create a plugin manager with built-in exporters and, optionally, entry points.

    ``modules`` names the built-in modules to register, all of them by default.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for module_name in modules:
        manager.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra:
        manager.register(plugin)
    if load_entry_points:
        manager.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    return manager


def exporters(manager: pluggy.PluginManager | None = None) -> dict:
    """Return every registered exporter by target name, sorted by name."""
    manager = manager or plugin_manager()
    found: dict = {}
    owners: dict[str, str] = {}
    for plugin in manager.get_plugins():
        implementation = getattr(plugin, "polywall_exporters", None)
        if implementation is None:
            continue
        plugin_name = manager.get_name(plugin) or repr(plugin)
        for exporter in implementation():
            for attribute in ("name", "description", "capabilities", "render"):
                if not hasattr(exporter, attribute):
                    raise PluginError(f"exporter from plugin {plugin_name} has no '{attribute}' attribute")
            if exporter.name in found:
                raise PluginError(
                    f"target '{exporter.name}' is provided by both {owners[exporter.name]} and {plugin_name}"
                )
            found[exporter.name] = exporter
            owners[exporter.name] = plugin_name
    return dict(sorted(found.items()))
