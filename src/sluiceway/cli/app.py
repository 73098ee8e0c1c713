"""The ``sluiceway`` command: run, validate, connectors, schema, state, dlq, delta.

Every failure ends as one clear line on stderr and a documented exit code
(:class:`ExitCode`); a traceback is printed only with ``--log-level debug``.
stdout carries only what a command is asked for (the schema, ``--json`` output,
``validate``'s summary); progress, logs, summaries and errors go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from sluiceway.cli._common import (
    ExitCode,
    LogFormatOption,
    LogLevelOption,
    MetricsOption,
    QuietOption,
    SpecPath,
    err_console,
    execute,
    exit_code_for,
    fail,
    out_console,
    say_error,
    setup,
    setup_run_logging,
)
from sluiceway.cli.delta import delta_app
from sluiceway.cli.dlq import dlq_app
from sluiceway.cli.render import RunProgress, connectors_table, state_tables
from sluiceway.config.build import (
    build_alerts,
    build_pipeline,
    locate,
    run_thresholds,
    state_store,
)
from sluiceway.config.loader import load_spec
from sluiceway.config.spec import spec_json_schema
from sluiceway.core.pipeline import new_run_id
from sluiceway.core.state import PipelineState
from sluiceway.observability.logging import LogSubscriber

__all__ = ["ExitCode", "app", "exit_code_for"]

# The names this module had before the helpers moved to ``_common`` (kept for callers).
_err_console, _out_console, _say_error, _fail, _setup = (
    err_console,
    out_console,
    say_error,
    fail,
    setup,
)

app = typer.Typer(
    name="sluiceway",
    help="Data pipelines that account for every row: run, validate and inspect them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"sluiceway {version('sluiceway')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Data pipelines that account for every row: run, validate and inspect them."""


state_app = typer.Typer(help="Inspect or reset a pipeline's checkpoint.", no_args_is_help=True)
app.add_typer(state_app, name="state")
app.add_typer(dlq_app, name="dlq")
app.add_typer(delta_app, name="delta")


@app.command()
def run(
    spec_path: SpecPath,
    *,
    metrics_json: MetricsOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="stop after about this many rows read")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="extract, transform and validate, but write nothing (no sink, DLQ or state "
            "writes); report what would be written and dead-lettered",
        ),
    ] = False,
    dq_report: Annotated[
        Path | None,
        typer.Option(
            "--dq-report",
            help="write an HTML data-quality report of the run here (also when it fails)",
        ),
    ] = None,
    log_format: LogFormatOption = None,
    log_level: LogLevelOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run a pipeline: progress while it runs, a summary when it ends."""
    err = err_console()
    debug = log_level == "debug"
    try:
        settings, registry, show, debug = setup_run_logging(err, log_level, log_format, quiet=quiet)
        spec, base_dir = load_spec(spec_path, registry)
        places = locate(spec, base_dir, settings, registry)
        progress = RunProgress(err, spec.name, enabled=show, dry_run=dry_run)
        pipeline = build_pipeline(
            spec,
            base_dir=base_dir,
            registry=registry,
            hooks=[LogSubscriber(), progress],
            limit=limit,
            settings=settings,
            dry_run=dry_run,
        )
    except Exception as exc:
        raise fail(err, exc, debug=debug) from None
    execute(
        pipeline,
        lambda: pipeline.run(new_run_id()),
        console=err,
        progress=progress,
        places=places,
        metrics_json=metrics_json,
        quiet=quiet,
        debug=debug,
        dq_report=dq_report,
    )


# -- validate, connectors, schema -------------------------------------------------------


@app.command()
def validate(spec_path: SpecPath) -> None:
    """Check a spec without touching any system: YAML, variables, fields, plugin types."""
    err = err_console()
    try:
        settings, registry = setup()
        spec, base_dir = load_spec(spec_path, registry)
    except Exception as exc:
        raise fail(err, exc) from None
    places = locate(spec, base_dir, settings, registry)
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column("key", style="dim")
    table.add_column("value")
    table.add_row("name", spec.name)
    table.add_row("source", spec.source.type)
    table.add_row("transforms", ", ".join(t.type for t in spec.transforms) or "-")
    table.add_row("validators", ", ".join(v.type for v in spec.validators) or "-")
    table.add_row("sink", spec.sink.type)
    table.add_row("engine", spec.engine)
    table.add_row("dlq", str(places.dlq))
    table.add_row("state", str(places.state))
    alerts = [f"{a.channel.describe()} on {', '.join(sorted(a.on))}" for a in build_alerts(spec)]
    table.add_row("alerts", Text("; ".join(alerts) or "-"))
    limits = run_thresholds(spec).limits()
    table.add_row("thresholds", ", ".join(f"{k} {v:g}" for k, v in limits.items()) or "-")
    out = out_console()
    out.print(Text(f"{spec_path} is valid", style="green"), soft_wrap=True)
    out.print(table)


@app.command()
def connectors() -> None:
    """List the registered source, transform, validator and sink types."""
    err = err_console()
    try:
        _, registry = setup()
    except Exception as exc:
        raise fail(err, exc) from None
    out_console().print(connectors_table(registry))


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline specs (for editor completion)."""
    err = err_console()
    try:
        _, registry = setup()
    except Exception as exc:
        raise fail(err, exc) from None
    typer.echo(json.dumps(spec_json_schema(registry), indent=2))


# -- state ------------------------------------------------------------------------------


@state_app.command("show")
def state_show(
    spec_path: SpecPath,
    *,
    as_json: Annotated[bool, typer.Option("--json", help="print the state as JSON")] = False,
) -> None:
    """Show committed positions, pending intents, the next seq and the last run."""
    err = err_console()
    try:
        settings, registry = setup()
        spec, base_dir = load_spec(spec_path, registry)
        store = state_store(spec, base_dir, settings, registry)
        current, version = store.read()
    except Exception as exc:
        raise fail(err, exc) from None
    if as_json:
        doc = {"path": store.describe(), "version": version, "state": current.to_json()}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    out_console().print(state_tables(current, version, store.describe()))


@state_app.command("reset")
def state_reset(
    spec_path: SpecPath,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="really delete the state")] = False,
) -> None:
    """Delete the pipeline's state: the next run starts from the beginning of the source."""
    err = err_console()
    try:
        settings, registry = setup()
        spec, base_dir = load_spec(spec_path, registry)
        store = state_store(spec, base_dir, settings, registry)
    except Exception as exc:
        raise fail(err, exc) from None
    if not yes:
        say_error(
            err,
            f"this deletes {store.describe()} (committed positions and pending intents); "
            "pass --yes to confirm",
        )
        raise typer.Exit(ExitCode.CONFIG_ERROR)
    try:
        with store.lock("state-reset"):
            current, _ = store.read()
            existed = store.reset()
            if existed and current.next_seq:
                # Batch numbers never repeat: sinks that key on them (Delta txn, ledgers)
                # would otherwise take new batches for ones they already hold.
                store.commit(PipelineState(pipeline=spec.name, next_seq=current.next_seq), 0)
    except Exception as exc:
        raise fail(err, exc) from None
    where = store.describe()
    message = f"deleted {where}" if existed else f"no state at {where}; nothing to reset"
    err.print(Text(message), soft_wrap=True)
