"""Shared plumbing of the entry points: the configs and their validation, objects built from a config, launchers."""
