"""Authentication styles, rate limits, server errors, client errors and malformed
pages, against a real HTTP server."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from tests.integration.rest.support import (
    USERS,
    dead_letters,
    json_response,
    page_of,
    requests_to,
    run_source,
)
from werkzeug import Request, Response

from sluiceway.core import RunFailedError

FAST_RETRY = {"attempts": 4, "initial_delay": 0.01, "max_delay": 0.05}


def users_config(api: HTTPServer, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": api.url_for("/"),
        "retry": FAST_RETRY,
        "endpoints": [{"name": "users", "path": "/users", "paginate": {"type": "page_number"}}],
        **extra,
    }


def guarded(check) -> Any:  # type: ignore[no-untyped-def]
    """A /users handler serving pages only to requests that pass ``check``."""

    def handler(request: Request) -> Response:
        if not check(request):
            return json_response({"error": "unauthorized"}, status=401)
        return json_response(page_of(USERS, request))

    return handler


def test_bearer_token(api: HTTPServer, tmp_path: Path) -> None:
    api.expect_request("/users").respond_with_handler(
        guarded(lambda r: r.headers.get("Authorization") == "Bearer s3cret")
    )
    loader, _ = run_source(users_config(api, auth={"type": "bearer", "token": "s3cret"}), tmp_path)
    assert len(loader.rows) == 250


def test_api_key_in_a_header(api: HTTPServer, tmp_path: Path) -> None:
    api.expect_request("/users").respond_with_handler(
        guarded(lambda r: r.headers.get("X-Token") == "k3y")
    )
    auth = {"type": "api_key", "name": "X-Token", "value": "k3y"}
    loader, _ = run_source(users_config(api, auth=auth), tmp_path)
    assert len(loader.rows) == 250


def test_api_key_in_the_query_is_redacted_from_errors(api: HTTPServer, tmp_path: Path) -> None:
    api.expect_request("/users").respond_with_handler(
        guarded(lambda r: r.args.get("apikey") == "k3y-value")
    )
    auth = {"type": "api_key", "name": "apikey", "value": "k3y-value", "in": "query"}
    loader, _ = run_source(users_config(api, auth=auth), tmp_path / "ok")
    assert len(loader.rows) == 250

    api.expect_request("/missing").respond_with_json({"error": "no such thing"}, status=404)
    config = users_config(api, auth=auth)
    config["endpoints"] = [{"name": "missing", "path": "/missing"}]
    with pytest.raises(RunFailedError) as failed:
        run_source(config, tmp_path / "missing")
    message = str(failed.value)
    assert "HTTP 404" in message and "/missing" in message and "no such thing" in message
    assert "k3y-value" not in message and "apikey=***" in message


def test_basic_auth(api: HTTPServer, tmp_path: Path) -> None:
    expected = "Basic " + base64.b64encode(b"ann:pa55").decode()
    api.expect_request("/users").respond_with_handler(
        guarded(lambda r: r.headers.get("Authorization") == expected)
    )
    auth = {"type": "basic", "username": "ann", "password": "pa55"}
    loader, _ = run_source(users_config(api, auth=auth), tmp_path)
    assert len(loader.rows) == 250


def test_oauth2_client_credentials_refreshes_an_expired_token(
    api: HTTPServer, tmp_path: Path
) -> None:
    issued: list[str] = []

    def token(request: Request) -> Response:
        form = request.form
        assert form["grant_type"] == "client_credentials"
        assert (form["client_id"], form["client_secret"]) == ("app", "shh")
        assert form["scope"] == "read:users"
        issued.append(f"tok{len(issued)}")
        return json_response({"access_token": issued[-1], "expires_in": 3600})

    def users(request: Request) -> Response:
        # The first token is revoked by the server after page 1: a 401 must refresh it.
        if request.headers.get("Authorization") != f"Bearer {issued[-1]}" or (
            issued[-1] == "tok0" and request.args.get("page") == "2"
        ):
            return json_response({"error": "expired"}, status=401)
        return json_response(page_of(USERS, request))

    api.expect_request("/oauth/token", method="POST").respond_with_handler(token)
    api.expect_request("/users").respond_with_handler(users)
    auth = {
        "type": "oauth2",
        "token_url": api.url_for("/oauth/token"),
        "client_id": "app",
        "client_secret": "shh",
        "scopes": ["read:users"],
    }
    loader, _ = run_source(users_config(api, auth=auth), tmp_path)
    assert len(loader.rows) == 250
    assert issued == ["tok0", "tok1"]


def test_wrong_credentials_fail_clearly(api: HTTPServer, tmp_path: Path) -> None:
    api.expect_request("/users").respond_with_handler(guarded(lambda r: False))
    with pytest.raises(RunFailedError, match=r"HTTP 401 .*/users.*check the credentials"):
        run_source(users_config(api, auth={"type": "bearer", "token": "nope"}), tmp_path)


def test_429_waits_for_retry_after(api: HTTPServer, tmp_path: Path) -> None:
    calls: list[float] = []

    def handler(request: Request) -> Response:
        calls.append(time.monotonic())
        if len(calls) == 2:
            return json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        return json_response(page_of(USERS, request))

    api.expect_request("/users").respond_with_handler(handler)
    loader, _ = run_source(users_config(api), tmp_path)
    assert len(loader.rows) == 250
    assert calls[2] - calls[1] >= 0.95  # honoured Retry-After, not the 10 ms backoff
    assert [r.args["page"] for r in requests_to(api, "/users")] == ["1", "2", "2", "3", "4"]


def test_a_burst_of_5xx_is_retried_and_persistent_errors_stop_the_run(
    api: HTTPServer, tmp_path: Path
) -> None:
    failures = {"left": 3}

    def flaky(request: Request) -> Response:
        if request.args.get("page") == "2" and failures["left"]:
            failures["left"] -= 1
            return Response("upstream down", status=503)
        return json_response(page_of(USERS, request))

    api.expect_request("/users").respond_with_handler(flaky)
    loader, _ = run_source(users_config(api), tmp_path / "flaky")
    assert len(loader.rows) == 250

    api.expect_request("/broken").respond_with_data("boom", status=500)
    config = users_config(api)
    config["endpoints"] = [{"name": "broken", "path": "/broken"}]
    with pytest.raises(
        RunFailedError, match=r"gave up after 4 attempt\(s\): HTTP 500 from .*/broken"
    ):
        run_source(config, tmp_path / "broken")
    assert len(requests_to(api, "/broken")) == 4


def test_malformed_json_is_dead_lettered_with_url_and_body(api: HTTPServer, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        if request.args.get("page") == "2":
            return Response("<html>maintenance</html>", content_type="text/html")
        return json_response(page_of(USERS, request))

    api.expect_request("/users").respond_with_handler(handler)
    loader, metrics = run_source(users_config(api), tmp_path)
    assert [r["id"] for r in loader.rows] == [u["id"] for u in USERS if not 101 <= u["id"] <= 200]
    (letter,) = dead_letters(tmp_path)
    assert letter["error_type"] == "DecodeError"
    assert "/users?page=2" in letter["error_message"]
    assert letter["raw"] == "<html>maintenance</html>"
    assert letter["partition"] == "users"
    assert metrics.balanced and metrics.dead_lettered == 1


def test_declared_types_dead_letter_misfits(api: HTTPServer, tmp_path: Path) -> None:
    rows = [{"id": 1, "amount": "10.5"}, {"id": 2, "amount": "lots"}, {"id": 3, "amount": 7}]
    api.expect_request("/pay").respond_with_json({"rows": rows})
    loader, _ = run_source(
        {
            "base_url": api.url_for("/"),
            "endpoints": [
                {
                    "name": "pay",
                    "path": "/pay",
                    "records": "rows",
                    "schema": {"id": "int64", "amount": "float64"},
                }
            ],
        },
        tmp_path,
    )
    assert [(r["id"], r["amount"]) for r in loader.rows] == [(1, 10.5), (3, 7.0)]
    (letter,) = dead_letters(tmp_path)
    assert (letter["error_type"], letter["column"], letter["value"]) == (
        "CastError",
        "amount",
        "lots",
    )
