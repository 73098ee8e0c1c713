"""``sluiceway delta optimize|vacuum`` on local and S3 tables, by spec or by location."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from tests.integration.delta.support import read_delta_log
from tests.integration.s3.support import MotoServer
from typer.testing import CliRunner

from sluiceway.cli.delta import delta_app

runner = CliRunner()


def small_files(uri: str, count: int = 5, **options: str) -> None:
    for i in range(count):
        write_deltalake(uri, pa.table({"id": [i]}), mode="append", storage_options=options or None)


def test_optimize_then_vacuum_a_local_table(tmp_path: Path) -> None:
    table = str(tmp_path / "t")
    small_files(table)

    result = runner.invoke(delta_app, ["optimize", table, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["numFilesRemoved"] == 5
    assert len(DeltaTable(table).file_uris()) == 1

    listed = runner.invoke(
        delta_app, ["vacuum", table, "--retention-hours", "0", "--no-enforce-retention", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.output)["files"]) == 5
    assert len(list((tmp_path / "t").glob("*.parquet"))) == 6  # a dry run deletes nothing

    applied = runner.invoke(
        delta_app, ["vacuum", table, "--retention-hours", "0", "--no-enforce-retention", "--apply"]
    )
    assert applied.exit_code == 0, applied.output
    assert "deleted 5 file(s)" in applied.output
    assert len(list((tmp_path / "t").glob("*.parquet"))) == 1
    assert sorted(read_delta_log(table).column("id").to_pylist()) == list(range(5))


def test_a_short_retention_is_refused_unless_asked(tmp_path: Path) -> None:
    table = str(tmp_path / "t")
    small_files(table, 1)
    result = runner.invoke(delta_app, ["vacuum", table, "--retention-hours", "0"])
    assert result.exit_code == 1
    assert "error:" in result.output and "retention" in result.output.lower()


def test_the_target_can_be_a_spec_whose_sink_is_on_s3(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{bucket}/lake/t"
    small_files(uri, 3, **moto.options().delta_storage_options())
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: lake
            source: {{type: sequence}}
            sink: {{type: delta, uri: "{uri}", endpoint_url: "{moto.url}"}}
            """
        )
    )

    result = runner.invoke(delta_app, ["optimize", str(spec)])

    assert result.exit_code == 0, result.output
    assert "files removed: 3, files added: 1" in result.output
    by_uri = runner.invoke(delta_app, ["vacuum", uri, "--endpoint-url", moto.url, "--json"])
    assert by_uri.exit_code == 0, by_uri.output
    assert json.loads(by_uri.output)["files"] == []  # removed files are younger than 7 days


def test_a_spec_without_a_delta_sink_is_a_usage_error(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        "version: 1\nname: x\nsource: {type: sequence}\nsink: {type: parquet, path: out}\n"
    )
    result = runner.invoke(delta_app, ["optimize", str(spec)])
    assert result.exit_code == 2
    assert "not 'delta'" in result.output
    missing = runner.invoke(delta_app, ["optimize", str(tmp_path / "nothing-here")])
    assert missing.exit_code == 2 and "no Delta table" in missing.output
