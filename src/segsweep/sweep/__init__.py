"""Sweep analysis, arrays in and files out: reading a multirun dir, statistics, tables and plots (no model loading)."""
