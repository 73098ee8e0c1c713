"""Create the benchmark's source table once per row count.

``python -m benchmarks.postgres.data ROWS``

``bench_src_<rows>``: bigint key, timestamptz, text, numeric(12,2), double, int,
boolean, nullable text and jsonb — about 150 bytes a row on disk (5M rows ≈ 740 MB).
Vacuumed and analysed after loading, so no contender pays for hint bits.
"""

from __future__ import annotations

import sys

import psycopg
from psycopg import sql

from benchmarks.postgres.job import DSN, source_table

GENERATE = """
CREATE TABLE {table} AS
SELECT g::bigint AS id,
       timestamptz '2024-01-01' + g * interval '1 second' AS updated_at,
       'customer-' || (g % 100000) AS name,
       round((g % 1000000) / 100.0, 2)::numeric(12, 2) AS amount,
       (g % 1000) / 7.0::double precision AS score,
       (g % 100000)::int AS qty,
       (g % 3 = 0) AS flag,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g END AS note,
       jsonb_build_object('k', g % 10, 'tag', 'x' || (g % 7)) AS attrs
FROM generate_series(1, {rows}) AS g
"""


def ensure_database(dsn: str) -> None:
    keys = psycopg.conninfo.conninfo_to_dict(dsn)
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as con:
        if not con.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [keys["dbname"]]
        ).fetchone():
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(keys["dbname"]))))


def main(rows: int) -> None:
    ensure_database(DSN)
    table = sql.Identifier(source_table(rows))
    with psycopg.connect(DSN, autocommit=True) as con:
        exists = con.execute("SELECT to_regclass(%s) IS NOT NULL", [source_table(rows)]).fetchone()
        if exists and exists[0]:
            count = con.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
            if count and count[0] == rows:
                return
            con.execute(sql.SQL("DROP TABLE {}").format(table))
        con.execute(sql.SQL(GENERATE).format(table=table, rows=sql.Literal(rows)))
        con.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(table))
        con.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(table))
        con.execute("CHECKPOINT")


if __name__ == "__main__":
    main(int(sys.argv[1]))
