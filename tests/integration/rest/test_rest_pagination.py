"""Every pagination style, concurrency, record selection, parent/child and incremental
reads, against a real HTTP server: each record exactly once, in page order."""

from __future__ import annotations

from pathlib import Path

from pytest_httpserver import HTTPServer
from tests.integration.rest.support import (
    USERS,
    json_response,
    page_of,
    requests_to,
    run_source,
)
from werkzeug import Request, Response


def ids(loader) -> list[int]:  # type: ignore[no-untyped-def]
    return [row["id"] for row in loader.rows]


def test_page_number_pages_until_total_pages(api: HTTPServer, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        return json_response(
            {"data": {"items": page_of(USERS, request)}, "meta": {"total_pages": 3}}
        )

    api.expect_request("/users").respond_with_handler(handler)
    loader, metrics = run_source(
        {
            "base_url": api.url_for("/"),
            "endpoints": [
                {
                    "name": "users",
                    "path": "/users",
                    "records": "data.items",
                    "paginate": {"type": "page_number", "total_pages": "meta.total_pages"},
                }
            ],
        },
        tmp_path,
    )
    assert ids(loader) == [u["id"] for u in USERS]
    assert [r.args["page"] for r in requests_to(api, "/users")] == ["1", "2", "3"]
    assert loader.rows[0]["_endpoint"] == "users"
    assert metrics.read == metrics.written == 250


def test_offset_limit_stops_at_a_short_page(api: HTTPServer, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        offset, limit = int(request.args["offset"]), int(request.args["limit"])
        return json_response(USERS[offset : offset + limit])

    api.expect_request("/users").respond_with_handler(handler)
    loader, _ = run_source(
        {
            "base_url": api.url_for("/"),
            "endpoints": [
                {"name": "users", "path": "/users", "paginate": {"type": "offset", "limit": 100}}
            ],
        },
        tmp_path,
    )
    assert ids(loader) == [u["id"] for u in USERS]
    assert [r.args["offset"] for r in requests_to(api, "/users")] == ["0", "100", "200"]


def test_cursor_in_body(api: HTTPServer, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        start = int(request.args.get("cursor", "0"))
        chunk = USERS[start : start + 100]
        following = str(start + 100) if start + 100 < len(USERS) else None
        return json_response({"items": chunk, "meta": {"next": following}})

    api.expect_request("/users").respond_with_handler(handler)
    loader, _ = run_source(
        {
            "base_url": api.url_for("/"),
            "endpoints": [
                {
                    "name": "users",
                    "path": "/users",
                    "records": "items",
                    "paginate": {"type": "cursor", "param": "cursor", "path": "meta.next"},
                }
            ],
        },
        tmp_path,
    )
    assert ids(loader) == [u["id"] for u in USERS]
    assert len(requests_to(api, "/users")) == 3


def test_next_url_in_body_relative(api: HTTPServer, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        after = int(request.args.get("after", "0"))
        chunk = USERS[after : after + 100]
        following = f"/v2/people?after={after + 100}" if after + 100 < len(USERS) else None
        return json_response({"results": chunk, "links": {"next": following}})

    api.expect_request("/v2/people").respond_with_handler(handler)
    loader, _ = run_source(
        {
            "base_url": api.url_for("/v2"),
            "endpoints": [
                {
                    "name": "people",
                    "path": "/people",
                    "records": "results",
                    "paginate": {"type": "next_url", "path": "links.next"},
                }
            ],
        },
        tmp_path,
    )
    assert ids(loader) == [u["id"] for u in USERS]


def test_link_header(api: HTTPServer, tmp_path: Path) -> None:
    def handler(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        headers = {}
        if page < 3:
            headers["Link"] = (
                f'<{api.url_for("/users")}?page={page + 1}>; rel="next", '
                f'<{api.url_for("/users")}?page=3>; rel="last"'
            )
        return json_response(page_of(USERS, request), headers=headers)

    api.expect_request("/users").respond_with_handler(handler)
    loader, _ = run_source(
        {
            "base_url": api.url_for("/"),
            "endpoints": [{"name": "users", "path": "/users", "paginate": {"type": "link_header"}}],
        },
        tmp_path,
    )
    assert ids(loader) == [u["id"] for u in USERS]


def test_concurrent_pages_keep_page_order_and_drop_pages_past_the_end(
    api: HTTPServer, tmp_path: Path
) -> None:
    def handler(request: Request) -> Response:
        return json_response(page_of(USERS, request, size=20))

    api.expect_request("/users").respond_with_handler(handler)
    config = {
        "base_url": api.url_for("/"),
        "concurrency": 4,
        "endpoints": [
            {
                "name": "users",
                "path": "/users",
                "paginate": {"type": "page_number", "size_param": "per_page", "size": 20},
            }
        ],
    }
    loader, metrics = run_source(config, tmp_path / "a")
    assert ids(loader) == [u["id"] for u in USERS]
    assert metrics.batches == 13  # 12 full pages and the short 13th
    pages = sorted(int(r.args["page"]) for r in requests_to(api, "/users"))
    assert pages[:13] == list(range(1, 14))
    assert len(pages) <= 13 + 4  # speculative requests past the end are bounded


def test_parent_child_endpoints(api: HTTPServer, tmp_path: Path) -> None:
    users = USERS[:5]

    def list_users(request: Request) -> Response:
        page = int(request.args.get("page", "1"))
        return json_response({"users": users[(page - 1) * 3 : page * 3]})

    api.expect_request("/users").respond_with_handler(list_users)
    for user in users:
        orders = [{"order": f"{user['id']}-{k}", "amount": k * 10} for k in range(user["id"] % 3)]
        api.expect_request(f"/users/{user['id']}/orders").respond_with_json({"orders": orders})
    loader, _ = run_source(
        {
            "base_url": api.url_for("/"),
            "concurrency": 3,
            "endpoints": [
                {
                    "name": "users",
                    "path": "/users",
                    "records": "users",
                    "emit": False,
                    "paginate": {"type": "page_number", "size": 3},
                },
                {
                    "name": "orders",
                    "path": "/users/{id}/orders",
                    "parent": "users",
                    "parent_fields": {"id": "user_id"},
                    "records": "orders",
                },
            ],
        },
        tmp_path,
    )
    assert [(r["user_id"], r["order"]) for r in loader.rows] == [
        (u["id"], f"{u['id']}-{k}") for u in users for k in range(u["id"] % 3)
    ]
    assert {r["_endpoint"] for r in loader.rows} == {"orders"}
    partitions = [name for batch in loader.batches for name in batch.positions]
    assert partitions[0] == "orders/id=1"


def test_incremental_by_query_parameter(api: HTTPServer, tmp_path: Path) -> None:
    state = {"rows": USERS[:100]}

    def handler(request: Request) -> Response:
        since = request.args.get("updated_since", "")
        return json_response([u for u in state["rows"] if u["updated_at"] > since])

    api.expect_request("/users").respond_with_handler(handler)
    config = {
        "base_url": api.url_for("/"),
        "endpoints": [
            {
                "name": "users",
                "path": "/users",
                "incremental": {"field": "updated_at", "param": "updated_since"},
            }
        ],
    }
    first, _ = run_source(config, tmp_path)
    assert len(first.rows) == 100
    state["rows"] = [*USERS[:100], {"id": 999, "name": "new", "updated_at": "2024-02-01"}]
    second, _ = run_source(config, tmp_path)
    assert ids(second) == [999]
    since = [r.args.get("updated_since") for r in requests_to(api, "/users")]
    assert since == [None, "2024-01-28"]


def test_incremental_by_field_filters_what_was_seen(api: HTTPServer, tmp_path: Path) -> None:
    rows = [{"id": i, "seq": i} for i in range(1, 11)]
    api.expect_request("/events").respond_with_handler(lambda _r: json_response(rows))
    config = {
        "base_url": api.url_for("/"),
        "endpoints": [{"name": "events", "path": "/events", "incremental": {"field": "seq"}}],
    }
    first, _ = run_source(config, tmp_path)
    rows.extend({"id": i, "seq": i} for i in range(11, 14))
    second, _ = run_source(config, tmp_path)
    assert ids(first) == list(range(1, 11))
    assert ids(second) == [11, 12, 13]
