"""Schemas and suites the tests load by ``module:attribute``, as users do."""

from __future__ import annotations

from typing import Any

import pandera.pandas as pdp
import pandera.polars as pa
import polars as pl
from tests.integration.quality.support import EMAIL, STATUSES


class Order(pa.DataFrameModel):
    """The five typical checks, Polars flavour (a duplicate fails at every occurrence)."""

    id: int = pa.Field(nullable=False, unique=True)
    amount: float = pa.Field(in_range={"min_value": 0, "max_value": 1000})
    email: str = pa.Field(str_matches=EMAIL)
    status: str = pa.Field(isin=STATUSES)


class PandasOrder(pdp.DataFrameModel):
    """The same checks, pandas flavour (an int column with a null is float64 in pandas)."""

    id: float = pdp.Field(nullable=False, unique=True)
    amount: float = pdp.Field(in_range={"min_value": 0, "max_value": 1000})
    email: str = pdp.Field(str_matches=EMAIL)
    status: str = pdp.Field(isin=STATUSES)


class Shipment(pa.DataFrameModel):
    """Coerces text to int: rows that do not convert fail ``qty.coerce_dtype`` alone."""

    ref: str
    qty: int = pa.Field(ge=0)

    class Config:
        coerce = True


class Totals(pa.DataFrameModel):
    """A dataframe-wide check returning one boolean: batch-level."""

    amount: float

    @pa.dataframe_check
    @classmethod
    def small_total(cls, data: Any) -> bool:
        return bool(data.lazyframe.select(pl.col("amount").sum()).collect().item() < 40)


def orders_suite() -> Any:
    """The five typical checks as a Great Expectations suite built in code."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(
        name="orders",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToBeBetween(column="amount", min_value=0, max_value=1000),
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=STATUSES),
        ],
    )
