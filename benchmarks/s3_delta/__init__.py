"""S3 Parquet → Delta on S3 with one transform: sluiceway vs the write_deltalake floor vs dlt."""
