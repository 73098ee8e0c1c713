"""PostgreSQL plugins as a user meets them in a spec: options, mistakes, secrets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr

from sluiceway.config import build_pipeline, load_spec
from sluiceway.config.loader import SpecError
from sluiceway.connectors.postgres import (
    PostgresConnection,
    PostgresExtractor,
    PostgresLoader,
    PostgresStateStore,
)

SLUICEWAY = str(Path(sys.executable).parent / "sluiceway")
SECRET = "hunter2-very-secret"


def write(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(textwrap.dedent(body))
    return spec


def test_a_spec_builds_source_sink_and_state(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        f"""
        version: 1
        name: orders
        source:
          type: postgres
          dsn: "postgresql://loader:{SECRET}@db.internal:6543/orders?sslmode=require"
          table: public.orders
          incremental: {{cursor: updated_at, lag: 5m}}
          partitions: 4
          sslrootcert: certs/ca.pem
          adbc_driver: drivers/libadbc_driver_postgresql.so
        sink:
          type: postgres
          adbc_driver: adbc_driver_postgresql
          host: warehouse
          password: {SECRET}
          dbname: dw
          table: analytics.orders
          mode: merge
          keys: [id]
          order_by: updated_at
        state: {{uri: "postgresql://state:{SECRET}@statedb/ops"}}
        """,
    )
    loaded, base = load_spec(spec)
    pipeline = build_pipeline(loaded, base_dir=base)
    source, sink, state = pipeline.extractor, pipeline.loader, pipeline.state
    assert isinstance(source, PostgresExtractor)
    assert (source.cursor, source.lag, source.partitions) == ("updated_at", 300.0, 4)
    assert source.connection.sslrootcert == str(tmp_path / "certs" / "ca.pem")
    # A driver path is relative to the spec file; a name is left to the driver manager.
    assert source.connection.adbc_driver == str(
        tmp_path / "drivers" / "libadbc_driver_postgresql.so"
    )
    assert isinstance(sink, PostgresLoader)
    assert sink.connection.adbc_driver == "adbc_driver_postgresql"
    assert (sink.mode, sink.keys, sink.order_by) == ("merge", ["id"], "updated_at")
    assert isinstance(state, PostgresStateStore)
    described = " ".join(
        [str(source.describe()), str(sink.describe()), state.describe(), repr(loaded)]
    )
    assert SECRET not in described
    assert "postgresql://loader@db.internal:6543/orders" in described
    assert state.describe().startswith("postgresql://state@statedb/ops table sluiceway_state")


def test_an_empty_adbc_driver_means_the_packaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``adbc_driver: ${VAR:-}`` lets an image set the driver for every spec, or not."""
    body = """
        version: 1
        name: orders
        source: {type: postgres, table: t, adbc_driver: "${ADBC_DRIVER:-}"}
        sink: {type: parquet, path: out}
        """
    monkeypatch.delenv("ADBC_DRIVER", raising=False)
    loaded, base = load_spec(write(tmp_path, body))
    pipeline = build_pipeline(loaded, base_dir=base)
    assert isinstance(pipeline.extractor, PostgresExtractor)
    assert pipeline.extractor.connection.adbc_driver is None
    monkeypatch.setenv("ADBC_DRIVER", "/opt/adbc/libadbc_driver_postgresql.so")
    loaded, base = load_spec(write(tmp_path, body))
    pipeline = build_pipeline(loaded, base_dir=base)
    assert isinstance(pipeline.extractor, PostgresExtractor)
    assert pipeline.extractor.connection.adbc_driver == "/opt/adbc/libadbc_driver_postgresql.so"


@pytest.mark.parametrize(
    ("source", "sink", "message"),
    [
        (
            "{type: postgres, table: a, query: SELECT 1}",
            "{type: parquet, path: out}",
            "exactly one of table or query",
        ),
        ("{type: postgres}", "{type: parquet, path: out}", "exactly one of table or query"),
        ("{type: postgres, table: a.b.c}", "{type: parquet, path: out}", "'schema.table'"),
        (
            "{type: postgres, table: a, partition_by: id}",
            "{type: parquet, path: out}",
            "partitions > 1",
        ),
        (
            "{type: postgres, table: a, types: {x: nope}}",
            "{type: parquet, path: out}",
            "unknown type 'nope'",
        ),
        (
            "{type: postgres, table: a, incremental: {cursor: u, lag: soon}}",
            "{type: parquet, path: out}",
            "invalid duration",
        ),
        ("{type: postgres, table: a}", "{type: postgres, table: t, mode: merge}", "needs keys"),
        (
            "{type: postgres, table: a}",
            "{type: postgres, table: t, keys: [id]}",
            "only apply to mode 'merge'",
        ),
        (
            "{type: postgres, table: a}",
            "{type: postgres, table: _sluiceway_ledger}",
            "sluiceway's own",
        ),
        ("{type: postgres, table: a}", "{type: postgres, table: t, sslmode: sometimes}", "sslmode"),
    ],
)
def test_mistakes_are_reported_with_their_place(
    tmp_path: Path, source: str, sink: str, message: str
) -> None:
    spec = write(
        tmp_path,
        f"""
        version: 1
        name: bad
        source: {source}
        sink: {sink}
        """,
    )
    with pytest.raises(SpecError, match=message) as info:
        load_spec(spec)
    assert "pipeline.yaml:" in str(info.value)


def test_validate_never_prints_the_password(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        f"""
        version: 1
        name: secretive
        source: {{type: postgres, dsn: "host=h password={SECRET} dbname=d", table: t}}
        sink: {{type: postgres, password: {SECRET}, table: t2, mode: mergee}}
        """,
    )
    done = subprocess.run(
        [SLUICEWAY, "validate", str(spec)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "mode" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_connection_never_describes_its_secrets() -> None:
    connection = PostgresConnection(
        dsn=SecretStr(f"postgresql://u:{SECRET}@h:5/db"), password=SecretStr(SECRET)
    )
    assert connection.describe() == "postgresql://u@h:5/db"
    assert SECRET not in repr(connection)
    assert f"password={SECRET}" in connection.conninfo()  # only libpq sees it
