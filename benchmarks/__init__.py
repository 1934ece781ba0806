"""Datasets, scenarios, backbones, the training engine, run records and the CLI."""
