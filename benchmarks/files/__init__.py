"""Files benchmark: Parquet in → SQL transform → two validators → Parquet out."""
