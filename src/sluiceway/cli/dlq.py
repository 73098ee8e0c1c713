"""``sluiceway dlq show`` and ``sluiceway dlq replay``: look at dead letters, put them back.

``show`` reads a pipeline's DLQ (or any local DLQ folder) and prints a table, or JSON
lines with ``--json``. ``replay`` rebuilds the dead-lettered rows and sends each
back into the pipeline at the stage where it failed (see
:mod:`sluiceway.core.replay`); the state remembers what was replayed, so replaying
again does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import typer

from sluiceway.cli._common import (
    LogFormatOption,
    LogLevelOption,
    MetricsOption,
    QuietOption,
    SpecPath,
    err_console,
    execute,
    fail,
    out_console,
    setup,
    setup_run_logging,
)
from sluiceway.cli.render import RunProgress, dlq_table
from sluiceway.config.build import build_pipeline, dead_letter_queue, locate, state_store
from sluiceway.config.loader import load_spec
from sluiceway.core.dlq import DeadLetterReader, read_dead_letters
from sluiceway.core.errors import ConfigError
from sluiceway.core.pipeline import new_run_id
from sluiceway.core.replay import ReplayLedger
from sluiceway.observability.logging import LogSubscriber

__all__ = ["DlqFilters", "dlq_app", "filter_entries"]

dlq_app = typer.Typer(
    help="Inspect dead-lettered rows and replay them into the pipeline.", no_args_is_help=True
)

StageOption = Annotated[
    str | None,
    typer.Option(
        "--stage",
        help="a stage (validate.0.expectations) or its start (validate, transform.1, load)",
    ),
]
RuleOption = Annotated[str | None, typer.Option("--rule", help="a validation rule, exactly")]
RunOption = Annotated[str | None, typer.Option("--run", help="a run id (or its start)")]
SeqOption = Annotated[int | None, typer.Option("--seq", help="a batch sequence number")]


class DlqFilters:
    """The ``--stage/--rule/--run/--seq`` selection of DLQ entries."""

    def __init__(
        self,
        stage: str | None = None,
        rule: str | None = None,
        run: str | None = None,
        seq: int | None = None,
    ) -> None:
        self.stage = stage
        self.rule = rule
        self.run = run
        self.seq = seq

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.stage, self.rule, self.run, self.seq))


def filter_entries(entries: pa.Table, filters: DlqFilters) -> pa.Table:
    """The entries matching every given filter (vectorised; order kept)."""
    mask = pa.array([True] * entries.num_rows, pa.bool_())
    if filters.stage is not None:
        stage = entries.column("stage")
        prefix = filters.stage.rstrip(".") + "."
        mask = pc.and_(mask, pc.or_(pc.equal(stage, filters.stage), pc.starts_with(stage, prefix)))
    if filters.rule is not None:
        mask = pc.and_(mask, pc.fill_null(pc.equal(entries.column("rule"), filters.rule), False))
    if filters.run is not None:
        mask = pc.and_(mask, pc.starts_with(entries.column("run_id"), filters.run))
    if filters.seq is not None:
        mask = pc.and_(mask, pc.equal(entries.column("seq"), filters.seq))
    return entries.filter(mask)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _read_target(target: Path) -> tuple[pa.Table, str, ReplayLedger | None]:
    """Entries, where they are, and the replay ledger (only when a spec was given)."""
    if target.is_dir():
        return read_dead_letters(target), str(target), None
    settings, registry = setup()
    spec, base_dir = load_spec(target, registry)
    dlq = dead_letter_queue(spec, base_dir, settings, registry)
    if not isinstance(dlq, DeadLetterReader):
        raise ConfigError(f"the DLQ {dlq.describe()} cannot be read back by this command")
    state, _ = state_store(spec, base_dir, settings, registry).read()
    return dlq.read(), dlq.describe(), ReplayLedger.from_state(state)


@dlq_app.command("show")
def show(
    target: Annotated[
        Path,
        typer.Argument(metavar="PIPELINE.yaml|DLQ_DIR", help="a pipeline spec or a DLQ folder"),
    ],
    *,
    stage: StageOption = None,
    rule: RuleOption = None,
    run: RunOption = None,
    seq: SeqOption = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="show at most this many (the newest); 0: all")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object per entry on stdout")
    ] = False,
) -> None:
    """Show dead-lettered rows: where they came from, the stage and rule, the error."""
    err = err_console()
    try:
        setup()
        if not target.exists():
            raise ConfigError(f"{target}: no such file or folder")
        entries, where, ledger = _read_target(target)
    except Exception as exc:
        raise fail(err, exc) from None
    matched = filter_entries(entries, DlqFilters(stage, rule, run, seq))
    total = matched.num_rows
    if limit and total > limit:
        matched = matched.slice(total - limit)
    rows: list[dict[str, Any]] = matched.to_pylist()
    if ledger is not None:
        for row in rows:
            row["replayed"] = ledger.done((row["dlq_id"], int(row["seq"])))
            row["refailed"] = ledger.refailed(str(row["run_id"]))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=_json_default, ensure_ascii=False))
        return
    out_console().print(dlq_table(rows, total=total, where=where, replayed=ledger is not None))


def _replay_note(metrics_skipped: Mapping[str, int], replayed: int) -> str:
    skipped = sum(metrics_skipped.values())
    return f"replayed {replayed:,} rows; {skipped:,} selected entries not replayed"


@dlq_app.command("replay")
def replay(
    spec_path: SpecPath,
    *,
    stage: StageOption = None,
    rule: RuleOption = None,
    run: RunOption = None,
    seq: SeqOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="route the rows again but write nothing (no sink, DLQ or state)"
        ),
    ] = False,
    refailed: Annotated[
        bool,
        typer.Option("--refailed", help="also replay rows that failed again in an earlier replay"),
    ] = False,
    metrics_json: MetricsOption = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
    quiet: QuietOption = False,
) -> None:
    """Put dead-lettered rows back into the pipeline at the stage where they failed.

    A row a validator refused is validated again (not transformed again); a row a
    transform refused re-enters at that transform; a row the sink refused is loaded
    again. Extract-stage rejects have no parsed row and are skipped. Replayed
    entries are remembered in the state: replaying again does nothing. Rows that
    fail again go to the DLQ again, as new entries of this replay's run; after
    another fix, --refailed replays those too.
    """
    err = err_console()
    debug = log_level == "debug"
    try:
        settings, registry, show_progress, debug = setup_run_logging(
            err, log_level, log_format, quiet=quiet
        )
        spec, base_dir = load_spec(spec_path, registry)
        places = locate(spec, base_dir, settings, registry)
        progress = RunProgress(err, spec.name, enabled=show_progress, dry_run=dry_run)
        pipeline = build_pipeline(
            spec,
            base_dir=base_dir,
            registry=registry,
            hooks=[LogSubscriber(), progress],
            settings=settings,
            dry_run=dry_run,
        )
        filters = DlqFilters(stage, rule, run, seq)
        selected: pa.Table | None = None
        if filters.any:
            if not isinstance(pipeline.dlq, DeadLetterReader):
                raise ConfigError(f"the DLQ {pipeline.dlq.describe()} cannot be read back")
            selected = filter_entries(pipeline.dlq.read(), filters)
    except Exception as exc:
        raise fail(err, exc, debug=debug) from None
    metrics = execute(
        pipeline,
        lambda: pipeline.replay_dead_letters(
            selected, run_id=new_run_id(), include_refailed=refailed
        ),
        console=err,
        progress=progress,
        places=places,
        metrics_json=metrics_json,
        quiet=quiet,
        debug=debug,
    )
    if metrics is not None and not quiet:
        err.print(_replay_note(metrics.replay_skipped, metrics.replayed), soft_wrap=True)
