"""What the CLI shows people: run progress and summary, state, connector and DLQ tables.

Everything here renders with Rich and reads plain data (metrics, state, plugins); no
command logic. Text from specs and errors is printed with markup off, so a
``transforms[0]`` in a message is shown as written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.progress import (
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from sluiceway.config.build import Locations
from sluiceway.core.events import EventKind, StageEvent
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.core.replay import SKIP_REASONS
from sluiceway.core.state import PipelineState
from sluiceway.observability.alerts import ALERT_EVENTS
from sluiceway.plugins import KINDS, Registry

__all__ = [
    "RunProgress",
    "connectors_table",
    "dlq_table",
    "state_tables",
    "summary",
]


def _n(value: int) -> str:
    return f"{value:,}"


def _rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "-"


class _RateColumn(ProgressColumn):
    """Rows read per second over the whole run so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        return Text(_rate(task.completed, elapsed), style="cyan")


class RunProgress:
    """A live display on stderr fed by stage events: rows read, rows/s, dead letters.

    Use as a context manager around ``pipeline.run()`` and pass the instance as a
    pipeline hook. It also keeps the metrics of the last run event, so a caller can
    report them when the run was aborted.
    """

    def __init__(
        self, console: Console, pipeline: str, *, enabled: bool = True, dry_run: bool = False
    ) -> None:
        self.enabled = enabled
        self.metrics: PipelineMetrics | None = None
        self._read = 0
        self._written = 0
        self._dlq = 0
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[read]} read"),
            _RateColumn(),
            TextColumn("{task.fields[written]} written"),
            TextColumn("[red]{task.fields[dlq]} dead-lettered"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        label = f"{pipeline} (DRY RUN)" if dry_run else pipeline
        self._task: TaskID = self._progress.add_task(
            label, total=None, read="0", written="0", dlq="0"
        )

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def __call__(self, event: StageEvent) -> None:
        if event.kind in (EventKind.RUN_FINISHED, EventKind.RUN_FAILED):
            metrics = event.attrs.get("metrics")
            if isinstance(metrics, PipelineMetrics):
                self.metrics = metrics
            return
        if event.kind in (EventKind.BATCH_EXTRACTED, EventKind.ROWS_REPLAYED):
            self._read += event.rows_out
        elif event.kind is EventKind.BATCH_LOADED and event.error is None:
            self._written += event.rows_out
        elif event.kind is EventKind.ROWS_DEAD_LETTERED:
            self._dlq += event.rows_in
        else:
            return
        if self.enabled:
            self._progress.update(
                self._task,
                completed=self._read,
                read=_n(self._read),
                written=_n(self._written),
                dlq=_n(self._dlq),
            )


def _thresholds(m: PipelineMetrics) -> Text | None:
    if not m.thresholds:
        return None
    parts: list[str] = []
    ratio = m.thresholds.get("max_dead_letter_ratio")
    if ratio is not None:
        parts.append(f"dead-letter ratio {m.dead_letter_ratio:.2%} (max {ratio:.2%})")
    rows = m.thresholds.get("max_dead_letter_rows")
    if rows is not None:
        parts.append(f"dead-lettered rows {_n(m.dead_lettered)} (max {_n(int(rows))})")
    if m.threshold_crossed:
        return Text("thresholds CROSSED: " + " · ".join(parts), style="bold red")
    return Text("thresholds ok: " + " · ".join(parts), style="green")


def _failing_checks(m: PipelineMetrics) -> Table | None:
    """Validation checks that failed during the run, worst first, with sample values."""
    failing = sorted((s for s in m.rules.values() if s.failed), key=lambda s: -s.failed)
    if not failing:
        return None
    table = Table(title="failing checks", title_justify="left", box=None, padding=(0, 2))
    table.add_column("check", overflow="fold")
    table.add_column("tool")
    table.add_column("on_fail")
    table.add_column("failed", justify="right")
    table.add_column("of", justify="right")
    table.add_column("e.g.", overflow="fold")
    for s in failing:
        unit = "rows" if s.row_level else "batches"
        table.add_row(
            Text(f"{s.validator}:{s.rule}"),
            s.tool,
            s.on_fail,
            _n(s.failed),
            f"{_n(s.checked)} {unit}",
            Text(", ".join(repr(v) for v in s.sample[:3])),
        )
    return table


def summary(metrics: PipelineMetrics, places: Locations | None = None) -> Group:
    """The end-of-run summary a person reads at a glance.

    Row accounting (read, replayed, transform effects, dead letters per ``stage:rule``,
    written), thresholds, time and rows/s per stage, throughput, whether the books
    balance and where the DLQ and state are. A dry run is labelled as such and says
    what *would* have been written and dead-lettered.
    """
    m = metrics
    dry = m.dry_run
    status = {"succeeded": "[green]succeeded[/]", "failed": "[red]failed[/]"}.get(
        m.status, m.status
    )
    title = Text()
    if dry:
        title += Text("DRY RUN (nothing written) · ", style="bold yellow")
    title += (
        Text(m.pipeline, style="bold")
        + Text(f" · run {m.run_id} · ")
        + Text.from_markup(status)
        + Text(f" in {m.duration:.2f} s")
    )
    would = "would be " if dry else ""

    rows = Table(show_header=False, box=None, padding=(0, 2))
    rows.add_column("what")
    rows.add_column("rows", justify="right")
    rows.add_row("read", _n(m.read))
    if m.replayed or m.replay_skipped:
        rows.add_row("replayed from the DLQ", _n(m.replayed))
        for reason, count in sorted(m.replay_skipped.items()):
            label = SKIP_REASONS.get(reason, reason)
            rows.add_row(
                Text(f"  not replayed: {label}", style="dim"), Text(_n(count), style="dim")
            )
    rows.add_row("expanded by transforms", _n(m.expanded))
    rows.add_row("filtered by transforms", _n(m.filtered))
    dl_style = "red" if m.dead_lettered else ""
    rows.add_row(
        Text(f"{would}dead-lettered", style=dl_style), Text(_n(m.dead_lettered), style=dl_style)
    )
    for stage_rule, count in sorted(m.dead_lettered_by.items()):
        rows.add_row(Text(f"  {stage_rule}", style="dim"), Text(_n(count), style="dim"))
    rows.add_row(f"{would}written", _n(m.written))
    if not dry:
        rows.add_row("skipped (already committed)", _n(m.skipped_committed))
    rows.add_row("validation warnings", _n(m.warned))
    if not dry:
        rows.add_row("load retries", _n(m.retries))
    rows.add_row(
        "batches", _n(m.batches) + (f" ({m.replayed_batches} replayed)" * bool(m.replayed_batches))
    )
    rows.add_row("throughput", _rate(m.read + m.replayed, m.duration))

    stages = Table(title="time per stage", title_justify="left", box=None, padding=(0, 2))
    stages.add_column("stage")
    stages.add_column("rows", justify="right")
    stages.add_column("seconds", justify="right")
    stages.add_column("rows/s", justify="right")
    for stage, seconds in m.stage_seconds.items():
        count = m.stage_rows.get(stage, 0)
        rate = _rate(count, seconds).split()[0] if count else "-"
        stages.add_row(Text(stage), _n(count), f"{seconds:.3f}", rate)

    terms = "read + replayed + expanded" if m.replayed else "read + expanded"
    balance = (
        Text(f"books balance: {terms} = written + dead-lettered + filtered + skipped")
        if m.balanced
        else Text("books do NOT balance: " + m.balance_message(), style="bold red")
    )
    parts: list[Any] = [title, rows]
    limits = _thresholds(m)
    if limits is not None:
        parts.append(limits)
    checks = _failing_checks(m)
    if checks is not None:
        parts.append(checks)
    parts += [stages, balance]
    if places is not None:
        if dry:
            where = Text("dead letters: ", style="dim") + Text(
                f"none written (would go to {places.dlq})"
            )
        else:
            where = Text("dead letters: ", style="dim") + Text(str(places.dlq))
            if m.dead_lettered:
                where.stylize("red", 0, 13)
        parts.append(where)
        state = f"not committed (dry run) {places.state}" if dry else str(places.state)
        parts.append(Text("state: ", style="dim") + Text(state))
    return Group(*parts)


def connectors_table(registry: Registry) -> Group:
    """Every registered type per kind, with its summary and optional extra; broken entries."""
    table = Table(title="registered types", title_justify="left")
    table.add_column("kind")
    table.add_column("type", style="bold")
    table.add_column("summary")
    table.add_column("extra")
    for kind in KINDS:
        for plugin in registry.plugins(kind):
            extra = f"pip install 'sluiceway[{plugin.extra}]'" if plugin.extra else "-"
            table.add_row(kind, Text(plugin.type), Text(plugin.summary or ""), Text(extra))
    alerts = Table(title="alert types (spec section alerts:)", title_justify="left")
    alerts.add_column("type", style="bold")
    alerts.add_column("summary")
    alerts.add_column("extra")
    alerts.add_row(
        "webhook",
        "POST to a URL: Slack incoming-webhook message (format: slack) or JSON (format: json)",
        "-",
    )
    alerts.add_row("log", "an 'alert' log line", "-")
    events = Text("alerts fire on: " + ", ".join(ALERT_EVENTS), style="dim")
    parts: list[Any] = [table, alerts, events]
    broken = registry.broken
    if broken:
        failed = Table(title="entry points that failed to load", title_justify="left")
        failed.add_column("kind")
        failed.add_column("type", style="bold")
        failed.add_column("error", style="red")
        for (kind, type_), error in sorted(broken.items()):
            failed.add_row(kind, Text(type_), Text(error))
        parts.append(failed)
    return Group(*parts)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _when(timestamp: Any) -> str:
    if isinstance(timestamp, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    return str(timestamp)


def state_tables(state: PipelineState, version: int, where: str) -> Group:
    """A pipeline's checkpoint: positions, pending intents, next seq and the last run."""
    head = Table(show_header=False, box=None, padding=(0, 2))
    head.add_column("key", style="dim")
    head.add_column("value")
    head.add_row("pipeline", Text(state.pipeline))
    head.add_row("state file", Text(where))
    head.add_row("version", str(version) if version else "0 (never committed)")
    head.add_row("next seq", str(state.next_seq))
    parts: list[Any] = [head]

    positions = Table(title="committed positions", title_justify="left")
    positions.add_column("partition")
    positions.add_column("position")
    for partition, position in sorted(state.positions.items()):
        positions.add_row(Text(partition), Text(_json(position)))
    if not state.positions:
        positions.add_row("-", "nothing committed yet")
    parts.append(positions)

    intents = Table(title="pending intents (replayed by the next run)", title_justify="left")
    intents.add_column("seq", justify="right")
    intents.add_column("positions")
    intents.add_column("upper bound")
    intents.add_column("run")
    for intent in state.intents:
        spans = {k: v.to_json() for k, v in intent.positions.items()}
        intents.add_row(
            str(intent.seq),
            Text(_json(spans)),
            Text(_json(intent.upper_bound)),
            Text(intent.run_id),
        )
    if not state.intents:
        intents.add_row("-", "none", "", "")
    parts.append(intents)

    last: Mapping[str, Any] = state.last_run or {}
    if last:
        run = Table(title="last successful run", title_justify="left", show_header=False)
        run.add_column("key", style="dim")
        run.add_column("value")
        for key, value in last.items():
            run.add_row(Text(key), Text(_when(value) if key.endswith("_at") else str(value)))
        parts.append(run)
    return Group(*parts)


def _where(entry: Mapping[str, Any]) -> str:
    """``orders.csv:12`` (file name and line) or ``partition@position``."""
    partition = str(entry.get("partition") or "")
    name = partition.rstrip("/").rsplit("/", 1)[-1] if "/" in partition else partition
    if entry.get("line") is not None:
        return f"{name}:{entry['line']}" if name else f"line {entry['line']}"
    position = entry.get("position") or ""
    return f"{name}@{position}" if name else str(position)


def _clip(value: Any, limit: int) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dlq_table(
    entries: Sequence[Mapping[str, Any]], *, total: int, where: str, replayed: bool
) -> Group:
    """DLQ entries (oldest first): where they came from, why they failed, whether replayed.

    ``total`` is how many entries matched the filters (``entries`` may be the newest
    few of them); ``replayed`` adds the column saying which a replay already put back.
    ``--json`` shows every field, including the run id and the full row.
    """
    table = Table(title=f"dead letters in {where}", title_justify="left", expand=True)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("failed at", overflow="fold", max_width=30)
    table.add_column("source", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("error", overflow="ellipsis", ratio=1, min_width=24)
    if replayed:
        table.add_column("replayed", no_wrap=True)
    for e in entries:
        failed_at = Text(_clip(e.get("stage"), 60))
        if e.get("rule"):
            failed_at += Text("\n" + _clip(e.get("rule"), 60), style="cyan")
        error = _clip(f"{e.get('error_type')}: {e.get('error_message')}", 160)
        if e.get("value") is not None:
            error += f" (value {_clip(e.get('value'), 40)!r})"
        row: list[Text] = [
            Text(str(e.get("seq"))),
            failed_at,
            Text(_clip(_where(e), 60)),
            Text(error),
        ]
        if replayed:
            if e.get("replayed"):
                row.append(Text("yes", style="green"))
            elif e.get("refailed"):
                row.append(Text("failed again", style="yellow"))
            else:
                row.append(Text("-"))
        table.add_row(*row)
    counts: dict[str, int] = {}
    for e in entries:
        key = f"{e.get('stage')}:{e['rule']}" if e.get("rule") else str(e.get("stage"))
        counts[key] = counts.get(key, 0) + 1
    shown = f"{len(entries):,} of {total:,} (the newest)" if len(entries) < total else f"{total:,}"
    footer = Text(f"{shown} entries shown", style="dim")
    if counts:
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
        footer += Text(f"; by stage:rule: {by}", style="dim")
    return Group(table, footer)
