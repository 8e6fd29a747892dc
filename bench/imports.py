"""Delivery imports: rows/s for a contractor's 10,000-row CSV, first import and re-import, on both stores.

    .venv/bin/python -m bench.imports [--rows 10000] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

import argparse
import base64
import os
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

from api.imports import read_rows
from api.settings import Settings
from domain.actor import Actor
from api.backend import open_backend
from domain.application import LastMeter
from domain.client import id_number_check_digit
from domain.clock import today

ADMIN = Actor("bench", "admin")
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()  # this run's own: its stores are thrown away


def scenario(app: LastMeter, rows: int) -> tuple[uuid.UUID, bytes]:
    first17 = "35050219800101123"
    client = app.register_client(ADMIN, None, name="bench", id_number=first17 + id_number_check_digit(first17),
                                 phone="13800000000", org_unit="350502")
    case = app.open_case(ADMIN, None, client_id=client.id, org_unit="350502", kind="home_care", need="bench")
    day = today()
    contract = app.create_contract(ADMIN, None, provider="ngo-bench", service_kind="home_care", unit="hour",
                                   unit_price="10.00", budget="100000000.00", starts_on=day - timedelta(days=30),
                                   ends_on=day + timedelta(days=30), org_units=["350502"])
    app.refer_case(ADMIN, None, case.id, None, contract.id)
    lines = ["案件编号,服务日期,数量,报告编号"] + [f"{case.id},{day},1,R-{n:06d}" for n in range(rows)]
    return contract.id, ("\n".join(lines) + "\n").encode()


def measure(label: str, settings: Settings, rows: int) -> list[tuple[str, float]]:
    backend = open_backend(settings)  # personal data sealed, as the server stores it
    app = backend.lastmeter
    try:
        contract_id, content = scenario(app, rows)
        figures = []
        for attempt in ("first import", "same file again"):
            started = time.perf_counter()
            _, results = app.import_deliveries(ADMIN, None, contract_id, read_rows(content, "deliveries.csv"))
            elapsed = time.perf_counter() - started
            expected = "recorded" if attempt == "first import" else "duplicate"
            assert all(r.result == expected for r in results), attempt
            figures.append((f"{label}: {attempt}", rows / elapsed))
        return figures
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        figures += measure("SQLite", Settings(database_url=f"sqlite:///{Path(tmp) / 'bench.db'}", master_key=MASTER_KEY), args.rows)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        figures += measure("PostgreSQL", Settings(database_url=args.postgres, postgres_schema=schema, master_key=MASTER_KEY), args.rows)
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"delivery import, {args.rows:,} rows")
    for label, rate in figures:
        print(f"  {label:<32} {rate:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
