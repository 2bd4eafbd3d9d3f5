"""Built-in exporters, one module per target; each is a pluggy plugin."""
