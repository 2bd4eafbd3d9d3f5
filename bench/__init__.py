"""Benchmark of polywall against Aerleon: policy generator, process measurement and runner."""
