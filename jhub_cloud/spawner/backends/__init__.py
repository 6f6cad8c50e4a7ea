"""Thin adapters: the child spawner classes, one module per backend."""
