"""polywall compiler: policy text to a rule graph, and the graph to exporters."""

__version__ = "0.1.0"
