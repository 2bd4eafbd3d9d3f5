"""JSON exporter: the rule graph itself, for other tools to read."""

from __future__ import annotations

import json

from compiler import capabilities
from compiler.graph import RuleGraph, graph_to_json
from compiler.hookspecs import hookimpl


class JsonExporter:
    name = "json"
    description = "the rule graph as JSON, for other tools to read"
    capabilities = capabilities.ALL

    def render(self, graph: RuleGraph) -> dict[str, str]:
        return {"graph.json": json.dumps(graph_to_json(graph), indent=2) + "\n"}


@hookimpl
def polywall_exporters():
    return [JsonExporter()]
