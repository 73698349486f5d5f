"""The log scan runs after every other test of the session, whatever order they were collected in."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move this folder's tests to the end of the run (they read what the others logged)."""
    last = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if last:
        items[:] = [item for item in items if item not in last] + last
