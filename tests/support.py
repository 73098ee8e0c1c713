"""Test doubles shared by the test suites."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa

from sluiceway.core import BaseLoader, Batch, LoadResult


class ListLoader(BaseLoader[dict]):
    """Collects loaded rows in memory (a test double for a sink, used by core unit tests)."""

    type_name = "list"

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[pa.Table] = []
        self.batches: list[Batch] = []

    def load(self, batch: Batch) -> LoadResult | None:
        self.tables.append(batch.to_arrow())
        self.batches.append(batch)
        return None

    @property
    def rows(self) -> list[dict]:
        out: list[dict] = []
        for table in self.tables:
            out.extend(table.to_pylist())
        return out


def python_child(code: str, *args: str, env: dict[str, str]) -> str:
    """Run ``code`` in a fresh interpreter; its standard output (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
