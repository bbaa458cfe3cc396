#!/usr/bin/env python3
"""A batch peer for `ingest`: DuckDB (PyPI `duckdb`) computes positions from
a generated .jsonl file, the way a quant would for a one-off answer.

The query: the highest version of each trade id is live, a live CANCEL
removes the trade, and each position's quantity is the signed sum (BUY +,
SELL -). No lots, no P&L, no exact gate (malformed lines are skipped by
DuckDB's reader, not classified), so it does less than `deltabook book`:
it is a reference point for raw speed, not an equivalent.

Usage: duckdb_positions.py FILE.jsonl [--threads N]
Prints one line: `lines seconds positions`.
"""

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        import duckdb
    except ImportError:
        print("duckdb is not installed (pip install duckdb==2.0.0)", file=sys.stderr)
        return 3
    with open(args.file, "rb") as f:
        lines = sum(1 for _ in f)
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    started = time.perf_counter()
    positions = con.execute(
        """
        WITH events AS (
            SELECT trade_id,
                   coalesce(TRY_CAST(version AS BIGINT), 1) AS version,
                   coalesce(action, 'NEW') AS action,
                   account_id || '_' || book_id || '_' || security_id AS position_key,
                   side,
                   TRY_CAST(quantity AS DECIMAL(38, 8)) AS quantity
            FROM read_json(?, format = 'newline_delimited', ignore_errors = true,
                           columns = {trade_id: 'VARCHAR', version: 'VARCHAR', action: 'VARCHAR',
                                      account_id: 'VARCHAR', book_id: 'VARCHAR',
                                      security_id: 'VARCHAR', side: 'VARCHAR',
                                      quantity: 'VARCHAR'})
            WHERE trade_id IS NOT NULL
        ),
        live AS (
            SELECT * FROM events
            QUALIFY row_number() OVER (PARTITION BY trade_id ORDER BY version DESC) = 1
        )
        SELECT position_key,
               sum(CASE WHEN side = 'BUY' THEN quantity ELSE -quantity END) AS quantity
        FROM live
        WHERE action <> 'CANCEL'
        GROUP BY position_key
        """,
        [args.file],
    ).fetchall()
    seconds = time.perf_counter() - started
    print(f"{lines} {seconds:.4f} {len(positions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
