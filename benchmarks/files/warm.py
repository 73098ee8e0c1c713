"""Import what the contenders import, so the bytecode cache is warm before timing."""

import duckdb  # noqa: F401
import pandas  # noqa: F401
import polars  # noqa: F401
import pyarrow.dataset
import pyarrow.parquet  # noqa: F401

import sluiceway.cli.app
import sluiceway.connectors.duckdb
import sluiceway.connectors.files
import sluiceway.engines.transforms
import sluiceway.quality.expectations  # noqa: F401
