"""The REST source: endpoints read page by page, each page a batch, each endpoint a partition.

Partitions: every top-level endpoint is one source partition (named after it);
a child endpoint (``/users/{id}/orders``) has one partition per parent record
(``orders/id=7``). A partition's position says which page comes next::

    {"walk": 3, "next": {"page": 5}, "since": "2024-05-01T…", "cursor": "2024-05-02T…"}

``next`` is None once the last page was read. A *walk* is one pass over every
partition: a run resumes the walk a crashed run left unfinished (at the very page
it was loading: a pending intent re-fetches exactly that page), and starts a new
walk when the last one finished — reading everything again, or with
``incremental`` only what changed since the highest ``field`` value seen.

Concurrency without losing determinism: batches are emitted strictly in
partition order and, within a partition, in page order; requests merely run
ahead on a thread pool (``concurrency`` at a time). Page-number and offset pages
are computed ahead for the partition being emitted (speculative pages past the
last are discarded); the next few partitions get their first page fetched
meanwhile. Positions depend only on pages, never on which request finished first.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from sluiceway.connectors.rest._config import EndpointConfig, RestSourceConfig, placeholders
from sluiceway.connectors.rest._http import HttpClient, Response
from sluiceway.connectors.rest._pages import Pager, records_at, records_to_arrow
from sluiceway.core.batch import META_POSITION, Batch, PartitionSpan
from sluiceway.core.dlq import reject_table
from sluiceway.core.stages import BaseExtractor, SourceContext
from sluiceway.core.state import Intent
from sluiceway.engines.cast import checked_cast
from sluiceway.engines.types import parse_type

__all__ = ["RestExtractor"]

_log = structlog.get_logger("sluiceway.connectors.rest")

_RAW_EXCERPT = 2000
#: Malformed pages in a row after which a page-number/offset walk gives up.
_MAX_BROKEN = 3


@dataclass(frozen=True, slots=True)
class _Partition:
    name: str
    endpoint: EndpointConfig
    pager: Pager
    path: str
    ctx: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Walk:
    """Where one partition's pass stands: the page to fetch next and the incremental values."""

    partition: _Partition
    page: dict[str, Any] | None
    since: Any
    cursor: Any
    pages: int = 0
    broken: int = 0
    ahead: deque[tuple[dict[str, Any], Future[Response]]] = field(default_factory=deque)


def _position(walk: int, page: dict[str, Any] | None, w: _Walk) -> dict[str, Any]:
    out: dict[str, Any] = {"walk": walk, "next": page, "since": w.since, "cursor": w.cursor}
    if w.partition.ctx:
        out["ctx"] = dict(w.partition.ctx)
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class RestExtractor(BaseExtractor[dict[str, Any]]):
    """Reads the declared endpoints of a REST API, one page per batch."""

    type_name = "rest"

    def __init__(self, config: RestSourceConfig) -> None:
        super().__init__(10_000)
        self.config = config
        self.endpoints = {e.name: e for e in config.endpoints}
        self.pagers = {e.name: Pager(e.paginate) for e in config.endpoints}
        self.types = {
            e.name: {n: parse_type(t) for n, t in (e.schema_ or {}).items()}
            for e in config.endpoints
        }
        self.http: HttpClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.walk = 1

    # -- lifecycle --------------------------------------------------------------------

    def open(self, context: SourceContext) -> None:
        super().open(context)
        cfg = self.config
        self.http = HttpClient(
            base_url=cfg.base_url,
            headers=cfg.headers,
            auth=cfg.auth,
            timeout=cfg.timeout,
            concurrency=cfg.concurrency,
            retry=cfg.retry,
            verify=cfg.verify_tls,
        )
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="sluiceway-rest")
        self.walk = self._current_walk()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self.http is not None:
            self.http.close()
            self.http = None

    def _current_walk(self) -> int:
        """The walk to resume (one with an unfinished partition) or the next one."""
        walks = [p for p in self.context.positions.values() if isinstance(p, dict) and "walk" in p]
        if not walks:
            return 1
        latest = max(int(p["walk"]) for p in walks)
        unfinished = any(int(p["walk"]) == latest and p.get("next") is not None for p in walks)
        return latest if unfinished else latest + 1

    # -- partitions -------------------------------------------------------------------

    def _partitions(self) -> Iterator[_Partition]:
        """Every partition in a fixed order: endpoints as declared, children by parent record."""
        for endpoint in self.config.endpoints:
            if not endpoint.emit:
                continue
            pager = self.pagers[endpoint.name]
            if endpoint.parent is None:
                yield _Partition(endpoint.name, endpoint, pager, endpoint.path)
                continue
            holes = placeholders(endpoint.path)
            for record in self._parent_records(self.endpoints[endpoint.parent]):
                missing = [h for h in holes if record.get(h) is None]
                if missing:
                    _log.warning(
                        "rest_parent_record_skipped", endpoint=endpoint.name, missing=missing
                    )
                    continue
                ctx = {h: record[h] for h in holes}
                ctx.update({f: record.get(f) for f in endpoint.parent_fields})
                key = ",".join(f"{h}={record[h]}" for h in holes)
                path = endpoint.path.format(**{h: record[h] for h in holes})
                yield _Partition(f"{endpoint.name}/{key}", endpoint, pager, path, ctx)

    def _parent_records(self, parent: EndpointConfig) -> Iterator[dict[str, Any]]:
        """Every record of a parent endpoint, all pages, read only to list children."""
        pager = self.pagers[parent.name]
        page: dict[str, Any] | None = pager.first()
        count = 0
        while page is not None:
            response = self._fetch(parent, parent.path, pager, page, None)
            body = self._json(response)
            if body is None:
                return
            records = records_at(body, parent.records)
            yield from records
            count += 1
            if self.config.max_pages is not None and count >= self.config.max_pages:
                return
            page = pager.next(page, response, body, len(records))

    def _start(self, partition: _Partition) -> _Walk | None:
        """Where a partition starts in this walk; None if this walk already finished it."""
        position = self.context.positions.get(partition.name)
        incremental = partition.endpoint.incremental
        if isinstance(position, dict) and int(position.get("walk", 0)) == self.walk:
            page = position.get("next")
            if page is None:
                return None
            return _Walk(partition, dict(page), position.get("since"), position.get("cursor"))
        since = None
        if incremental is not None:
            previous = position.get("cursor") if isinstance(position, dict) else None
            since = previous if previous is not None else incremental.initial
        return _Walk(partition, partition.pager.first(), since, since)

    # -- requests ---------------------------------------------------------------------

    def _fetch(
        self,
        endpoint: EndpointConfig,
        path: str,
        pager: Pager,
        page: dict[str, Any],
        since: Any,
    ) -> Response:
        assert self.http is not None
        url, params = pager.request(path, page)
        query: dict[str, Any] = {}
        if "url" not in page:
            query.update(self.config.params)
            query.update(endpoint.params)
            incremental = endpoint.incremental
            if incremental is not None and incremental.param and since is not None:
                query[incremental.param] = since
        query.update(params)
        return self.http.get(url, query, method=endpoint.method, json_body=endpoint.json_body)

    def _submit(self, walk: _Walk, page: dict[str, Any]) -> None:
        assert self._pool is not None
        p = walk.partition
        future = self._pool.submit(self._fetch, p.endpoint, p.path, p.pager, page, walk.since)
        walk.ahead.append((page, future))

    def _fill(self, walk: _Walk, depth: int) -> None:
        """Keep up to ``depth`` requests of a walk in flight (one for sequential styles)."""
        if walk.page is None:
            return
        if not walk.ahead:
            self._submit(walk, walk.page)
        pager = walk.partition.pager
        if pager.sequential:
            return
        max_pages = self.config.max_pages
        while len(walk.ahead) < depth:
            page = pager.ahead(walk.ahead[-1][0], 1)
            if max_pages is not None and walk.pages + len(walk.ahead) >= max_pages:
                return
            self._submit(walk, page)

    # -- extraction -------------------------------------------------------------------

    def extract(self) -> Iterator[Batch]:
        depth = self.config.concurrency
        partitions = self._partitions()
        window: deque[_Walk] = deque()
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < depth:
                    partition = next(partitions, None)
                    if partition is None:
                        exhausted = True
                        break
                    walk = self._start(partition)
                    if walk is not None:
                        self._fill(walk, 1)
                        window.append(walk)
                if not window:
                    return
                head = window[0]
                self._fill(head, depth)
                if not head.ahead:
                    window.popleft()
                    continue
                page, future = head.ahead.popleft()
                response = future.result()
                batch, following = self._batch(head, page, response)
                head.pages += 1
                if self.config.max_pages is not None and head.pages >= self.config.max_pages:
                    following = None
                if following is None or (head.ahead and head.ahead[0][0] != following):
                    for _, pending in head.ahead:
                        pending.cancel()
                    head.ahead.clear()
                head.page = following
                yield batch
                if following is None:
                    window.popleft()
                if self.context.stop.is_set():
                    return
        finally:
            for walk in window:
                for _, pending in walk.ahead:
                    pending.cancel()

    # -- pages to batches -------------------------------------------------------------

    def _json(self, response: Response) -> Any:
        try:
            return json.loads(response.body)
        except ValueError:
            return None

    def _batch(
        self, walk: _Walk, page: dict[str, Any], response: Response
    ) -> tuple[Batch, dict[str, Any] | None]:
        """The batch of one page and the page after it (None after the last)."""
        p = walk.partition
        endpoint = p.endpoint
        start = _position(self.walk, page, walk)
        assert self.http is not None
        url = self.http.redact(response.url)
        try:
            body = json.loads(response.body)
        except ValueError as exc:
            # The page cannot be read: its body goes to the DLQ. Page-number and offset
            # styles go on with the next page (up to _MAX_BROKEN in a row); sequential
            # ones cannot know it and end here, leaving the position on this page for
            # the next run to retry.
            walk.broken += 1
            following: dict[str, Any] | None = None
            if not p.pager.sequential and walk.broken < _MAX_BROKEN:
                following = p.pager.ahead(page, 1)
            end = _position(self.walk, following, walk)
            if p.pager.sequential:
                end = dict(start)
            rejected = reject_table(
                [
                    {
                        "partition": p.name,
                        "position": _canonical(page),
                        "raw": response.body[:_RAW_EXCERPT].decode("utf-8", "replace"),
                        "error_type": "DecodeError",
                        "error_message": f"{endpoint.method} {url}: invalid JSON: {exc}",
                    }
                ]
            )
            span = PartitionSpan(start, end, 0)
            return Batch.from_source(pa.table({}), {p.name: span}, rejected=rejected), following
        walk.broken = 0
        records = records_at(body, endpoint.records)
        following = p.pager.next(page, response, body, len(records))
        table, kept, rejects = self._table(walk, page, records)
        end = _position(self.walk, following, walk)
        span = PartitionSpan(start, end, table.num_rows)
        rejected = reject_table(rejects) if rejects else None
        positions = pa.table({META_POSITION: [f"{_canonical(page)}#{i}" for i in kept]})
        return (
            Batch.from_source(table, {p.name: span}, meta=positions, rejected=rejected),
            following,
        )

    def _table(
        self, walk: _Walk, page: dict[str, Any], records: list[dict[str, Any]]
    ) -> tuple[pa.Table, list[int], list[dict[str, Any]]]:
        """Records → Arrow: declared types checked, incremental filter, context columns."""
        p = walk.partition
        endpoint = p.endpoint
        table = records_to_arrow(records)
        index = list(range(len(records)))
        rejects: list[dict[str, Any]] = []
        types = self.types[endpoint.name]
        if types and table.num_rows:
            for name, dtype in types.items():
                if name not in table.column_names:
                    table = table.append_column(name, pa.nulls(table.num_rows, dtype))
            result = checked_cast(table, types)
            for failure in result.failures:
                rejects.append(
                    {
                        "partition": p.name,
                        "position": f"{_canonical(page)}#{failure.row}",
                        "raw": json.dumps(records[failure.row], default=str)[:_RAW_EXCERPT],
                        "error_type": "CastError",
                        "error_message": failure.message,
                        "column": failure.column,
                        "value": failure.value,
                    }
                )
            bad = set(result.bad_rows)
            index = [i for i in index if i not in bad]
            table = result.table
        incremental = endpoint.incremental
        if incremental is not None and table.num_rows:
            column = incremental.field
            if column not in table.column_names:
                raise_missing(endpoint.name, column)
            values = table.column(column)
            if incremental.param is None and walk.since is not None:
                keep = pc.fill_null(
                    pc.greater(values, pa.scalar(walk.since).cast(values.type)), False
                )
                index = [i for i, k in zip(index, keep.to_pylist(), strict=True) if k]
                table = table.filter(keep)
                values = table.column(column)
            top = pc.max(values).as_py()
            if top is not None:
                top = top.isoformat() if hasattr(top, "isoformat") else top
                if walk.cursor is None or top > walk.cursor:
                    walk.cursor = top
        if self.config.endpoint_column:
            table = _set(
                table,
                self.config.endpoint_column,
                pa.array([endpoint.name] * table.num_rows, pa.string()),
            )
        for source, target in endpoint.parent_fields.items():
            value = p.ctx.get(source)
            table = _set(table, target, pa.array([value] * table.num_rows))
        return table, index, rejects

    # -- replay -----------------------------------------------------------------------

    def replay(self, intent: Intent) -> Batch | None:
        """Fetch again exactly the page the intent covered; None if it changed since."""
        if len(intent.positions) != 1:
            return None
        ((name, span),) = intent.positions.items()
        start = span.start
        if not isinstance(start, dict) or start.get("next") is None:
            return None
        endpoint = self.endpoints.get(name.split("/", 1)[0])
        if endpoint is None:
            return None
        ctx = dict(start.get("ctx") or {})
        holes = placeholders(endpoint.path)
        try:
            path = endpoint.path.format(**{h: ctx[h] for h in holes})
        except KeyError:
            return None
        partition = _Partition(name, endpoint, self.pagers[endpoint.name], path, ctx)
        walk = _Walk(partition, dict(start["next"]), start.get("since"), start.get("cursor"))
        saved, self.walk = self.walk, int(start.get("walk", self.walk))
        try:
            page = dict(start["next"])
            response = self._fetch(endpoint, path, partition.pager, page, walk.since)
            batch, _ = self._batch(walk, page, response)
        finally:
            self.walk = saved
        replayed = batch.positions[name]
        if _canonical(replayed.end) != _canonical(span.end) or replayed.rows != span.rows:
            _log.warning("rest_replay_mismatch", partition=name, seq=intent.seq)
            return None
        return batch


def raise_missing(endpoint: str, column: str) -> None:
    from sluiceway.core.errors import SourceError

    raise SourceError(f"endpoint {endpoint!r}: incremental field {column!r} is not in the records")


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
