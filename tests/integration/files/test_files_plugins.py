"""The file types as a user declares them: entry points, spec validation, a YAML pipeline."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluiceway.config import SpecError, build_pipeline, load_spec
from sluiceway.connectors.files import (
    CSV_SINK,
    CSV_SOURCE,
    JSONL_SINK,
    JSONL_SOURCE,
    PARQUET_SINK,
    PARQUET_SOURCE,
    CsvExtractor,
    CsvExtractorConfig,
)
from sluiceway.core import read_dead_letters
from sluiceway.plugins import BuildContext, Registry


def test_every_file_type_is_published_through_entry_points() -> None:
    registry = Registry()

    assert registry.get("source", "csv") is CSV_SOURCE
    assert registry.get("source", "jsonl") is JSONL_SOURCE
    assert registry.get("source", "parquet") is PARQUET_SOURCE
    assert registry.get("sink", "parquet") is PARQUET_SINK
    assert registry.get("sink", "csv") is CSV_SINK
    assert registry.get("sink", "jsonl") is JSONL_SINK


def test_build_resolves_paths_against_the_spec_folder(tmp_path: Path) -> None:
    config = CsvExtractorConfig.model_validate(
        {"type": "csv", "path": "data/*.csv", "schema": {"id": "int64"}, "batch_size": 10}
    )

    stage = CSV_SOURCE.build(config, BuildContext(pipeline="p", base_dir=tmp_path))

    assert isinstance(stage, CsvExtractor)
    assert stage.path == str(tmp_path / "data" / "*.csv")
    assert stage.batch_size == 10
    assert stage.schema["id"] == pa.int64()


def test_an_unknown_type_name_in_schema_is_refused_naming_the_column() -> None:
    with pytest.raises(ValueError, match="amount"):
        CsvExtractorConfig.model_validate({"path": "x.csv", "schema": {"amount": "money"}})


def test_a_yaml_pipeline_from_csv_to_parquet(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders.csv").write_text(
        "id,amount\n1,10.5\n2,oops\n3,7\n4\n", encoding="utf-8"
    )
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(
        "version: 1\n"
        "name: orders\n"
        "source:\n"
        "  type: csv\n"
        "  path: in/*.csv\n"
        "  schema: {amount: double}\n"
        "sink:\n"
        "  type: parquet\n"
        "  path: out\n"
        "home: state\n",
        encoding="utf-8",
    )

    spec, base = load_spec(spec_file)
    metrics = build_pipeline(spec, base_dir=base).run()

    assert pq.read_table(tmp_path / "out").to_pylist() == [
        {"id": 1, "amount": 10.5},
        {"id": 3, "amount": 7.0},
    ]
    dead = read_dead_letters(tmp_path / "state" / "dlq" / "orders").to_pylist()
    assert sorted((d["line"], d["error_type"]) for d in dead) == [
        (3, "CastError"),
        (5, "DecodeError"),
    ]
    assert (metrics.read, metrics.written, metrics.dead_lettered) == (4, 2, 2)


def test_a_misspelt_option_is_a_spec_error(tmp_path: Path) -> None:
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(
        "version: 1\nname: p\nsource: {type: csv, path: a.csv, delimeter: ';'}\n"
        "sink: {type: parquet, path: out}\n",
        encoding="utf-8",
    )

    with pytest.raises(SpecError, match="delimeter"):
        load_spec(spec_file)
