"""Plain helper functions shared by the tests (fixtures live in tests/conftest.py), one concern a module."""
