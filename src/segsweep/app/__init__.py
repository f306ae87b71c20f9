"""Shared plumbing of the entry points: configs and their validation, objects built from a config, a run dir's life, launchers."""
