"""``sluiceway delta optimize|vacuum``: maintenance of a Delta table a pipeline writes.

``TARGET`` is a pipeline spec whose sink is ``type: delta`` (its ``uri`` and
connection options are used) or a table location (a local path or ``s3://…``,
with ``--endpoint-url`` / ``--region`` for S3-compatible stores; credentials come
from the AWS chain). ``optimize`` compacts small files (``--z-order`` to cluster);
``vacuum`` lists the files no longer referenced and older than the retention, and
deletes them only with ``--apply``. What a command reports goes to stdout (``--json``
for machines); errors are one ``error:`` line on stderr with exit code 2 (bad
target or options) or 1 (the table could not be maintained).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from sluiceway.core.errors import ConfigError
from sluiceway.observability.logging import redact

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["delta_app", "open_target"]

delta_app = typer.Typer(
    help="Maintain Delta tables: compact small files, delete unreferenced ones.",
    no_args_is_help=True,
)

Target = Annotated[
    str,
    typer.Argument(
        metavar="TARGET", help="a pipeline spec with a delta sink, or a table path / s3:// URI"
    ),
]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3-compatible endpoint (TARGET is a URI)")
]
RegionOption = Annotated[str | None, typer.Option("--region", help="AWS region (TARGET is a URI)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(exc: BaseException) -> typer.Exit:
    for line in str(redact(str(exc) or type(exc).__name__)).splitlines() or [""]:
        _err().print(Text("error: ", style="bold red") + Text(line), soft_wrap=True, markup=False)
    return typer.Exit(2 if isinstance(exc, ConfigError) else 1)


def _is_spec(target: str) -> bool:
    return target.lower().endswith((".yaml", ".yml")) and Path(target).is_file()


def open_target(
    target: str, *, endpoint_url: str | None = None, region: str | None = None
) -> DeltaTable:
    """The Delta table a spec's sink writes, or the one at a location."""
    from sluiceway.connectors.delta import DeltaLoader, DeltaSinkConfig, build_loader
    from sluiceway.connectors.delta._errors import translate
    from sluiceway.connectors.s3 import S3Options
    from sluiceway.plugins import BuildContext, require

    require("deltalake", extra="delta", what="sluiceway delta")
    if _is_spec(target):
        from sluiceway.config.build import registry_with
        from sluiceway.config.loader import load_spec
        from sluiceway.config.settings import load_settings

        registry = registry_with(load_settings().plugin_refs)
        spec, base_dir = load_spec(Path(target), registry)
        if not isinstance(spec.sink, DeltaSinkConfig):
            raise ConfigError(f"{target}: the sink is type {spec.sink.type!r}, not 'delta'")
        if endpoint_url or region:
            raise ConfigError("--endpoint-url and --region apply to a table URI, not a spec")
        loader = build_loader(spec.sink, BuildContext(pipeline=spec.name, base_dir=base_dir))
    else:
        loader = DeltaLoader(target, options=S3Options(endpoint_url=endpoint_url, region=region))
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(loader.uri, storage_options=loader.storage_options)
    except TableNotFoundError as exc:
        raise ConfigError(f"no Delta table at {loader.uri}") from exc
    except Exception as exc:
        raise translate(exc, f"open delta table {loader.uri}") from exc


def _print(data: Any, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    for line in lines:
        typer.echo(line)


@delta_app.command()
def optimize(
    target: Target,
    *,
    z_order: Annotated[
        list[str] | None, typer.Option("--z-order", help="cluster by this column (repeatable)")
    ] = None,
    target_size: Annotated[
        int | None, typer.Option("--target-size", min=1, help="bytes per file after compaction")
    ] = None,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compact small files into larger ones (optionally Z-ordered)."""
    from sluiceway.connectors.delta import optimize_table

    try:
        table = open_target(target, endpoint_url=endpoint_url, region=region)
        metrics = optimize_table(table, z_order=z_order or (), target_size=target_size)
    except Exception as exc:
        raise _fail(exc) from None
    _print(
        metrics,
        as_json,
        [
            f"optimized {table.table_uri} (version {table.version()})",
            f"files removed: {metrics.get('numFilesRemoved', 0)}, "
            f"files added: {metrics.get('numFilesAdded', 0)}",
        ],
    )


@delta_app.command()
def vacuum(
    target: Target,
    *,
    retention_hours: Annotated[
        int | None,
        typer.Option("--retention-hours", min=0, help="default: the table's (7 days)"),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="delete the files (default: only list them)")
    ] = False,
    enforce_retention: Annotated[
        bool,
        typer.Option(
            "--enforce-retention/--no-enforce-retention",
            help="refuse a retention shorter than the table's",
        ),
    ] = True,
    endpoint_url: EndpointOption = None,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """List (or with --apply delete) files no longer referenced by the table."""
    from sluiceway.connectors.delta import vacuum_table

    try:
        table = open_target(target, endpoint_url=endpoint_url, region=region)
        files = vacuum_table(
            table,
            retention_hours=retention_hours,
            dry_run=not apply,
            enforce_retention=enforce_retention,
        )
    except Exception as exc:
        raise _fail(exc) from None
    verb = "deleted" if apply else "would delete (pass --apply)"
    _print(
        {"table": table.table_uri, "applied": apply, "files": files},
        as_json,
        [f"{verb} {len(files)} file(s) of {table.table_uri}", *files],
    )
