"""Architectures (one file per model), the backbone/head contract and the registry."""
