"""A crash at page k resumes at page k: ``sluiceway run`` is SIGKILLed while loading
a page of a paginated API; the rerun starts at the first page whose state was not
committed (re-fetching a pending page exactly), never re-requests a committed page,
and loads no record twice into an idempotent sink (DuckDB append + batch ledger)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from pytest_httpserver import HTTPServer
from tests.integration.rest.support import USERS, json_response, page_of, requests_to
from werkzeug import Request, Response

SLUICEWAY = str(Path(sys.executable).parent / "sluiceway")


def run_cli(spec: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SLUICEWAY_CRASH_AT"}
    env["SLUICEWAY_LOG_FORMAT"] = "json"
    if crash_at:
        env["SLUICEWAY_CRASH_AT"] = crash_at
    return subprocess.run(
        [SLUICEWAY, "run", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "point", ["after_extract", "mid_load", "after_sink_commit", "mid_state_write"]
)
def test_crash_at_page_k_resumes_at_page_k(api: HTTPServer, tmp_path: Path, point: str) -> None:
    def handler(request: Request) -> Response:
        return json_response({"items": page_of(USERS, request, size=25)})

    api.expect_request("/users").respond_with_handler(handler)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: rest-crash
            source:
              type: rest
              base_url: "{api.url_for("/")}"
              endpoints:
                - name: users
                  path: /users
                  records: items
                  paginate: {{type: page_number, size: 25}}
            sink: {{type: duckdb, database: sink.duckdb, table: users, mode: append}}
            """
        )
    )
    # mid_state_write is passed twice per page (intent, then commit): its 5th pass is page 3.
    crash = f"{point}:{5 if point == 'mid_state_write' else 3}"
    crashed = run_cli(spec, crash_at=crash)
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    state = json.loads((tmp_path / ".sluiceway" / "state" / "rest-crash.state.json").read_text())
    resume_at = state["state"]["positions"]["users"]["next"]["page"]
    assert resume_at >= 2, "the crashed run committed no page"
    before = len(requests_to(api, "/users"))

    rerun = run_cli(spec)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    pages = [int(r.args["page"]) for r in requests_to(api, "/users")]
    assert pages[before] == resume_at  # the rerun starts at the first uncommitted page
    assert all(p >= resume_at for p in pages[before:])

    with duckdb.connect(str(tmp_path / "sink.duckdb"), read_only=True) as con:
        loaded = [r[0] for r in con.sql("SELECT id FROM users").fetchall()]
    assert sorted(loaded) == [u["id"] for u in USERS]  # none lost, none twice
    requested = collections.Counter(pages)
    assert all(requested[p] == 1 for p in range(1, resume_at)), requested
