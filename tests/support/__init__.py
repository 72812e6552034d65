"""Helpers shared by the tests (data mirror, tiny models, CLI and workflow runners, synthetic attention).

Imported as ``support.<module>`` (pytest puts ``tests/`` on the path: ``pythonpath`` in pyproject.toml)."""
