"""Built-in transforms on their own: sql, python, select, rename, cast."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from pydantic import ValidationError

from sluiceway.core import ROW_ID, ConfigError, DataError
from sluiceway.core.stages import Routed
from sluiceway.engines.transforms import (
    CAST_TRANSFORM,
    PYTHON_TRANSFORM,
    RENAME_TRANSFORM,
    SELECT_TRANSFORM,
    SQL_TRANSFORM,
    CastTransformer,
    PythonTransformer,
    RenameTransformer,
    SelectTransformer,
    SQLTransformer,
)
from sluiceway.plugins import BuildContext, Plugin, default_registry


def batch(**columns: list[object]) -> pa.Table:
    """A table as the runner hands it to a transform: with the hidden row id."""
    table = pa.table(columns)
    return table.append_column(ROW_ID, pa.array(range(table.num_rows), type=pa.int64()))


def build(plugin: Plugin, spec: dict[str, object], base_dir: Path | None = None) -> object:
    config = plugin.config.model_validate(spec)
    return plugin.build(config, BuildContext(pipeline="p", base_dir=base_dir or Path.cwd()))


def write_module(folder: Path, source: str) -> str:
    """A uniquely named module in ``folder`` (Python caches modules by name)."""
    name = f"user_{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(source)
    return name


# -- registry ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "plugin"),
    [
        ("sql", SQL_TRANSFORM),
        ("python", PYTHON_TRANSFORM),
        ("select", SELECT_TRANSFORM),
        ("rename", RENAME_TRANSFORM),
        ("cast", CAST_TRANSFORM),
    ],
)
def test_entry_points_resolve_each_type_to_its_plugin(type_, plugin):
    assert default_registry().get("transform", type_) is plugin


# -- sql ------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_sql_sees_the_batch_with_its_row_id(engine):
    sql = SQLTransformer("SELECT *, x * 2 AS y FROM batch WHERE x > 1", engine=engine)
    sql.open()
    try:
        out = sql.transform(batch(x=[1, 2, 3], s=["a", "b", None]))
    finally:
        sql.close()
    assert out.column("y").to_pylist() == [4, 6]
    assert out.column(ROW_ID).to_pylist() == [1, 2]
    assert out.column("s").to_pylist() == ["b", None]


def test_sql_defaults_to_duckdb_whatever_the_pipeline_engine():
    sql = build(SQL_TRANSFORM, {"type": "sql", "query": "SELECT * FROM batch"})
    assert isinstance(sql, SQLTransformer)
    assert sql.engine == "duckdb"
    assert sql.name == "sql"
    config = SQL_TRANSFORM.config.model_validate({"type": "sql", "query": "SELECT 1"})
    polars_pipeline = SQL_TRANSFORM.build(config, BuildContext(pipeline="p", engine="polars"))
    assert polars_pipeline.engine == "duckdb"
    explicit = build(SQL_TRANSFORM, {"type": "sql", "query": "SELECT 1", "engine": "polars"})
    assert explicit.engine == "polars"


def test_sql_connection_is_opened_with_limited_threads_and_closed():
    sql = SQLTransformer(
        "SELECT *, current_setting('threads') AS threads FROM batch", threads=1, name="t"
    )
    sql.open()
    out = sql.transform(batch(x=[1]))
    assert out.column("threads").to_pylist() == [1]
    sql.close()
    assert sql._con is None
    sql.close()  # closing twice is harmless


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELEC * FROM batch", "syntax error"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("CREATE TABLE t AS SELECT * FROM batch", "CREATE"),
    ],
)
def test_sql_that_is_not_one_query_is_a_config_error_at_build(query, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        build(SQL_TRANSFORM, {"type": "sql", "name": "enrich", "query": query})
    assert "'enrich'" in str(info.value)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT nope FROM batch", "nope"),
        ("SELECT no_such_fn(x) FROM batch", "no_such_fn"),
        ("SELECT * FROM other", "other"),
    ],
)
def test_sql_unknown_names_are_config_errors_naming_the_transform(engine, query, expected):
    sql = SQLTransformer(query, engine=engine, name="enrich")
    with pytest.raises(ConfigError, match=expected) as info:
        sql.transform(batch(x=[1]))
    sql.close()
    assert "sql transform 'enrich'" in str(info.value)


def test_polars_sql_syntax_error_is_a_config_error():
    sql = SQLTransformer("SELEC x FROM batch", engine="polars", name="enrich")
    with pytest.raises(ConfigError, match="enrich"):
        sql.transform(batch(x=[1]))


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_sql_value_errors_are_data_errors(engine):
    sql = SQLTransformer("SELECT CAST(s AS INTEGER) AS n FROM batch", engine=engine, name="e")
    with pytest.raises(DataError) as info:
        sql.transform(batch(s=["1", "x"]))
    sql.close()
    assert not isinstance(info.value, ConfigError)
    assert "'e'" in str(info.value)
    assert "x" in str(info.value)


def test_sql_keeps_working_after_a_data_error():
    sql = SQLTransformer("SELECT *, CAST(s AS INTEGER) AS n FROM batch")
    sql.open()
    with pytest.raises(DataError):
        sql.transform(batch(s=["x"]))
    out = sql.transform(batch(s=["7"]))
    sql.close()
    assert out.column("n").to_pylist() == [7]


# -- python ---------------------------------------------------------------------------


def test_python_function_next_to_the_spec_gets_polars_and_args(tmp_path):
    module = write_module(
        tmp_path,
        "import polars as pl\n"
        "def scale(df, factor, column='x'):\n"
        "    assert isinstance(df, pl.DataFrame)\n"
        "    return df.with_columns((pl.col(column) * factor).alias('scaled'))\n",
    )
    fn = build(
        PYTHON_TRANSFORM,
        {"type": "python", "function": f"{module}:scale", "args": {"factor": 10}},
        base_dir=tmp_path,
    )
    assert isinstance(fn, PythonTransformer)
    assert fn.name == "python"
    out = fn.transform(batch(x=[1, 2]))
    assert out.column("scaled").to_pylist() == [10, 20]
    assert out.column(ROW_ID).to_pylist() == [0, 1]


@pytest.mark.parametrize(
    ("frame", "kind"), [("pandas", pd.DataFrame), ("arrow", pa.Table), ("records", list)]
)
def test_python_function_gets_the_frame_it_asks_for(frame, kind):
    seen: list[type] = []

    def double(data, *, by):
        seen.append(type(data))
        if frame == "pandas":
            return data.assign(x=data["x"] * by)
        if frame == "arrow":
            return data.set_column(0, "x", pa.array([v * by for v in data["x"].to_pylist()]))
        return [{**row, "x": row["x"] * by} for row in data]

    fn = PythonTransformer(double, frame=frame, args={"by": 3})
    out = fn.transform(batch(x=[1, 2]))
    assert issubclass(seen[0], kind)
    assert out.column("x").to_pylist() == [3, 6]


@pytest.mark.parametrize(
    ("ref", "source", "expected"),
    [
        ("no_such_module_xyz:fn", None, "module 'no_such_module_xyz' not found"),
        ("{m}:missing", "def other(df):\n    return df\n", "has no attribute 'missing'"),
        ("{m}:VALUE", "VALUE = 3\n", "not a callable"),
        ("{m}:fn", "import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
        ("{m}:fn", "raise RuntimeError('broken module')\n", "broken module"),
        ("not a reference", None, "package.module:function"),
    ],
)
def test_python_function_that_cannot_be_loaded_is_a_config_error(tmp_path, ref, source, expected):
    if source is not None:
        ref = ref.format(m=write_module(tmp_path, source))
    with pytest.raises(ConfigError, match=expected) as info:
        build(PYTHON_TRANSFORM, {"type": "python", "function": ref}, base_dir=tmp_path)
    assert ref in str(info.value)


def test_python_column_typo_is_a_config_error_but_other_errors_are_data():
    def typo(df):
        return df.with_columns(pl.col("amout") * 2)

    def bad_value(df):
        raise ValueError("bad row")

    with pytest.raises(ConfigError, match="amout") as info:
        PythonTransformer(typo, name="enrich").transform(batch(amount=[1]))
    assert "'enrich'" in str(info.value)
    with pytest.raises(ValueError, match="bad row"):
        PythonTransformer(bad_value).transform(batch(amount=[1]))


def test_python_function_returning_something_else_is_a_config_error():
    fn = PythonTransformer(lambda df: None, name="broken")
    with pytest.raises(ConfigError, match="returned NoneType"):
        fn.transform(batch(x=[1]))


def test_python_function_may_route_rows_itself():
    def refuse_negatives(table):
        bad = pa.compute.less(table["x"], 0)
        return Routed(
            data=table.filter(pa.compute.invert(bad)),
            rejected=table.filter(bad),
            error_type="Negative",
            error_message="x < 0",
        )

    out = PythonTransformer(refuse_negatives, frame="arrow").transform(batch(x=[1, -1]))
    assert isinstance(out, Routed)
    assert out.rejected.column(ROW_ID).to_pylist() == [1]


# -- select / rename ------------------------------------------------------------------


def test_select_keeps_columns_in_order_and_the_row_id():
    out = SelectTransformer(["c", "a"]).transform(batch(a=[1], b=[2], c=[3]))
    assert out.column_names == ["c", "a", ROW_ID]


def test_select_unknown_column_is_a_config_error():
    select = build(SELECT_TRANSFORM, {"type": "select", "name": "pick", "columns": ["a", "nope"]})
    with pytest.raises(ConfigError, match=r"unknown column.*nope") as info:
        select.transform(batch(a=[1]))
    assert "'pick'" in str(info.value)


def test_select_and_rename_refuse_hidden_columns_in_the_spec():
    with pytest.raises(ValidationError, match="reserved"):
        SELECT_TRANSFORM.config.model_validate({"type": "select", "columns": [ROW_ID]})
    with pytest.raises(ValidationError, match="reserved"):
        RENAME_TRANSFORM.config.model_validate({"type": "rename", "columns": {"a": ROW_ID}})


def test_rename_renames_in_place():
    rename = build(RENAME_TRANSFORM, {"type": "rename", "columns": {"a": "alpha"}})
    out = rename.transform(batch(a=[1], b=[2]))
    assert out.column_names == ["alpha", "b", ROW_ID]


def test_rename_unknown_or_clashing_column_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown column.*nope"):
        RenameTransformer({"nope": "x"}, name="r").transform(batch(a=[1]))
    with pytest.raises(ConfigError, match="two columns named b"):
        RenameTransformer({"a": "b"}, name="r").transform(batch(a=[1], b=[2]))


# -- cast -----------------------------------------------------------------------------


def test_cast_converts_when_every_value_fits():
    cast = build(CAST_TRANSFORM, {"type": "cast", "columns": {"n": "int32", "d": "decimal(6,2)"}})
    out = cast.transform(batch(n=["1", None], d=["1.5", "2"]))
    assert out.schema.field("n").type == pa.int32()
    assert out.column("n").to_pylist() == [1, None]
    assert out.column("d").to_pylist() == [Decimal("1.50"), Decimal("2.00")]
    assert out.column(ROW_ID).to_pylist() == [0, 1]


def test_cast_routes_rows_that_do_not_fit_and_never_nulls_them():
    cast = CastTransformer({"n": "int64", "day": "date"})
    table = batch(n=["1", "x", "3", "4"], day=["2024-01-01", "2024-01-02", "2024-13-01", None])
    out = cast.transform(table)
    assert isinstance(out, Routed)
    assert out.data.column("n").to_pylist() == [1, 4]
    assert out.data.column(ROW_ID).to_pylist() == [0, 3]
    assert out.rejected.column(ROW_ID).to_pylist() == [1, 2]
    # rejected rows are as they entered the transform
    assert out.rejected.column("n").to_pylist() == ["x", "3"]
    assert out.error_type == "CastError"
    assert out.column == ["n", "day"]
    assert out.value == ["x", "2024-13-01"]
    assert "does not fit int64" in out.error_message[0]


def test_cast_unknown_column_or_type_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown column.*nope"):
        CastTransformer({"nope": "int64"}, name="c").transform(batch(a=[1]))
    with pytest.raises(ConfigError, match="unknown type 'integr'"):
        CastTransformer({"a": "integr"}, name="c")
    with pytest.raises(ValidationError, match="unknown type"):
        CAST_TRANSFORM.config.model_validate({"type": "cast", "columns": {"a": "integr"}})
