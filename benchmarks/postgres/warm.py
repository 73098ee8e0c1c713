"""Import what the contenders import, so the bytecode cache is warm before timing."""

import adbc_driver_manager  # noqa: F401
import adbc_driver_postgresql  # noqa: F401
import duckdb  # noqa: F401
import pandas  # noqa: F401
import polars  # noqa: F401
import psycopg  # noqa: F401
import pyarrow.parquet  # noqa: F401
import sqlalchemy  # noqa: F401

import sluiceway.cli.app
import sluiceway.connectors.files
import sluiceway.connectors.postgres  # noqa: F401

try:
    import dlt  # noqa: F401
    from dlt.sources.sql_database import sql_table  # noqa: F401
except ImportError:  # dlt is a dev dependency
    pass
