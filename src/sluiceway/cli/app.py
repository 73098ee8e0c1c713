"""The ``sluiceway`` command: run, validate, connectors, schema, state.

Every failure ends as one clear line on stderr and a documented exit code
(:class:`ExitCode`); a traceback is printed only with ``--log-level debug``.
stdout carries only what a command is asked for (the schema, ``--json`` output,
``validate``'s summary); progress, logs, summaries and errors go to stderr.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sluiceway.cli.render import RunProgress, connectors_table, state_tables, summary
from sluiceway.config.build import build_pipeline, locate, registry_with, state_store
from sluiceway.config.loader import load_spec
from sluiceway.config.settings import LogFormat, LogLevel, Settings, load_settings
from sluiceway.config.spec import spec_json_schema
from sluiceway.core.errors import (
    AccountingError,
    ConfigError,
    RunLockedError,
    ValidationFailedError,
)
from sluiceway.core.metrics import PipelineMetrics
from sluiceway.core.pipeline import Pipeline, RunFailedError, new_run_id
from sluiceway.observability.logging import LogSubscriber, configure_logging, redact
from sluiceway.plugins import Registry

__all__ = ["ExitCode", "app", "exit_code_for"]


class ExitCode(enum.IntEnum):
    """What the process exit status means (documented in docs/reference.md)."""

    OK = 0
    RUN_FAILED = 1
    CONFIG_ERROR = 2
    ACCOUNTING_ERROR = 3
    VALIDATION_FAILED = 4
    LOCKED = 5
    INTERRUPTED = 130  # 128 + SIGINT; SIGTERM gives 143


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error a command ended with."""
    if isinstance(exc, RunFailedError):
        exc = exc.cause
    if isinstance(exc, ConfigError):
        return ExitCode.CONFIG_ERROR
    if isinstance(exc, AccountingError):
        return ExitCode.ACCOUNTING_ERROR
    if isinstance(exc, ValidationFailedError):
        return ExitCode.VALIDATION_FAILED
    if isinstance(exc, RunLockedError):
        return ExitCode.LOCKED
    return ExitCode.RUN_FAILED


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

SpecPath = Annotated[Path, typer.Argument(metavar="PIPELINE.yaml", help="the pipeline spec")]


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def _out_console() -> Console:
    return Console(highlight=False)


def _say_error(console: Console, message: str) -> None:
    """Each line of ``message`` as one ``error:`` line, never wrapped or interpreted."""
    for line in str(redact(message)).splitlines() or [""]:
        console.print(Text("error: ", style="bold red") + Text(line), soft_wrap=True, markup=False)


def _fail(console: Console, exc: BaseException, *, debug: bool | None = None) -> typer.Exit:
    """Print ``exc`` as error lines (a traceback too when debugging); the Exit to raise."""
    if debug is None:
        debug = os.environ.get("SLUICEWAY_LOG_LEVEL", "").strip().lower() == "debug"
    if debug:
        console.print(Text("".join(traceback.format_exception(exc))), soft_wrap=True, markup=False)
    message = str(exc.cause if isinstance(exc, RunFailedError) else exc)
    _say_error(console, message or type(exc).__name__)
    return typer.Exit(exit_code_for(exc))


def _setup() -> tuple[Settings, Registry]:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings, registry_with(settings.plugin_refs)


# -- run --------------------------------------------------------------------------------


class _Signals:
    """First SIGINT/SIGTERM: finish the batch in flight, commit, stop. Second: abort."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            self.pipeline.request_stop()
            # os.write: no Python-level lock a signal handler could deadlock on.
            os.write(
                2,
                f"\nsluiceway: {signal.Signals(signum).name} received, finishing the batch in "
                "flight and committing; send it again to abort\n".encode(),
            )
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for number, previous in self._previous.items():
                signal.signal(number, previous)


def _write_metrics(path: Path | None, metrics: PipelineMetrics | None, console: Console) -> None:
    if path is None or metrics is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics.to_dict(), indent=2, default=str) + "\n")
    except OSError as exc:
        _say_error(console, f"cannot write metrics to {path}: {exc.strerror or exc}")


@app.command()
def run(
    spec_path: SpecPath,
    *,
    metrics_json: Annotated[
        Path | None,
        typer.Option(
            "--metrics-json", help="write the run's metrics as JSON here (also on failure)"
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="stop after about this many rows read")
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="auto: console on a terminal, JSON lines otherwise"),
    ] = None,
    log_level: Annotated[LogLevel | None, typer.Option("--log-level")] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="no progress, no summary, only warnings")
    ] = False,
) -> None:
    """Run a pipeline: progress while it runs, a summary when it ends."""
    err = _err_console()
    debug = log_level == "debug"
    try:
        settings = load_settings()
        debug = debug or (log_level is None and settings.log_level == "debug")
        show = err.is_terminal and not quiet
        level = log_level or settings.log_level
        if log_level is None and "log_level" not in settings.model_fields_set and (quiet or show):
            # The progress display shows what info lines would; warnings still appear.
            level = "warning"
        configure_logging(level, log_format or settings.log_format)
        registry = registry_with(settings.plugin_refs)
        spec, base_dir = load_spec(spec_path, registry)
        places = locate(spec, base_dir, settings, registry)
        progress = RunProgress(err, spec.name, enabled=show)
        pipeline = build_pipeline(
            spec,
            base_dir=base_dir,
            registry=registry,
            hooks=[LogSubscriber(), progress],
            limit=limit,
            settings=settings,
        )
    except Exception as exc:
        raise _fail(err, exc, debug=debug) from None

    signals = _Signals(pipeline)
    metrics: PipelineMetrics | None = None
    failure: BaseException | None = None
    try:
        with signals.installed(), progress:
            metrics = pipeline.run(new_run_id())
    except RunFailedError as exc:
        metrics, failure = exc.metrics, exc
    except KeyboardInterrupt as exc:
        metrics, failure = progress.metrics, exc
    except Exception as exc:  # a bug below the runner's own error handling
        metrics, failure = progress.metrics, exc

    _write_metrics(metrics_json, metrics, err)
    if metrics is not None and not quiet:
        err.print(summary(metrics, places))
    if isinstance(failure, KeyboardInterrupt):
        signum = signals.received or signal.SIGINT
        _say_error(
            err, f"aborted by {signal.Signals(signum).name}; the batch in flight was not committed"
        )
        raise typer.Exit(128 + signum)
    if failure is not None:
        raise _fail(err, failure, debug=debug)
    if signals.received is not None:
        err.print(
            Text(
                f"stopped by {signal.Signals(signals.received).name} after committing "
                "the batch in flight; the next run resumes from there",
                style="yellow",
            ),
            soft_wrap=True,
        )
        raise typer.Exit(128 + signals.received)


# -- validate, connectors, schema -------------------------------------------------------


@app.command()
def validate(spec_path: SpecPath) -> None:
    """Check a spec without touching any system: YAML, variables, fields, plugin types."""
    err = _err_console()
    try:
        settings, registry = _setup()
        spec, base_dir = load_spec(spec_path, registry)
    except Exception as exc:
        raise _fail(err, exc) from None
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
    out = _out_console()
    out.print(Text(f"{spec_path} is valid", style="green"), soft_wrap=True)
    out.print(table)


@app.command()
def connectors() -> None:
    """List the registered source, transform, validator and sink types."""
    err = _err_console()
    try:
        _, registry = _setup()
    except Exception as exc:
        raise _fail(err, exc) from None
    _out_console().print(connectors_table(registry))


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline specs (for editor completion)."""
    err = _err_console()
    try:
        _, registry = _setup()
    except Exception as exc:
        raise _fail(err, exc) from None
    typer.echo(json.dumps(spec_json_schema(registry), indent=2))


# -- state ------------------------------------------------------------------------------


@state_app.command("show")
def state_show(
    spec_path: SpecPath,
    *,
    as_json: Annotated[bool, typer.Option("--json", help="print the state as JSON")] = False,
) -> None:
    """Show committed positions, pending intents, the next seq and the last run."""
    err = _err_console()
    try:
        settings, registry = _setup()
        spec, base_dir = load_spec(spec_path, registry)
        store = state_store(spec, base_dir, settings, registry)
        current, version = store.read()
    except Exception as exc:
        raise _fail(err, exc) from None
    if as_json:
        doc = {"path": store.describe(), "version": version, "state": current.to_json()}
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    _out_console().print(state_tables(current, version, store.describe()))


@state_app.command("reset")
def state_reset(
    spec_path: SpecPath,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="really delete the state")] = False,
) -> None:
    """Delete the pipeline's state: the next run starts from the beginning of the source."""
    err = _err_console()
    try:
        settings, registry = _setup()
        spec, base_dir = load_spec(spec_path, registry)
        store = state_store(spec, base_dir, settings, registry)
    except Exception as exc:
        raise _fail(err, exc) from None
    if not yes:
        _say_error(
            err,
            f"this deletes {store.describe()} (committed positions and pending intents); "
            "pass --yes to confirm",
        )
        raise typer.Exit(ExitCode.CONFIG_ERROR)
    try:
        with store.lock("state-reset"):
            existed = store.reset()
    except Exception as exc:
        raise _fail(err, exc) from None
    where = store.describe()
    message = f"deleted {where}" if existed else f"no state at {where}; nothing to reset"
    err.print(Text(message), soft_wrap=True)
