"""Metrics, tables and plots from saved run records; never imports the engine."""
