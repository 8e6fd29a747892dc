"""A scope is an org-unit prefix, asked of the views as a range of codes: the same units on either
store, whatever collation the database was created with."""

import sqlite3

import psycopg
import pytest

from api.access import NOTHING
from projections.store import prefixed

CODES = ["350500", "350502", "3505020", "350582", "350582008", "350582008009", "350582009", "350582009001",
         "35058201", "350582010", "350599", "3506", "999", "9991"]
PREFIXES = CODES + ["9", "35058200", "350509", NOTHING]


def found(rows, prefix: str) -> bool:
    return {code for (code,) in rows} == {code for code in CODES if code.startswith(prefix)}


@pytest.mark.parametrize("collation", ["C", "und-x-icu", "zh-x-icu"])
def test_a_scope_finds_its_units_whatever_the_collation_of_postgresql(postgres, collation):
    """Linguistic collations put ':' before the digits: a range ending in the code after '9' found nothing."""
    with psycopg.connect(postgres, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_collation WHERE collname = %s", (collation,)).fetchone():
            pytest.skip(f"this PostgreSQL has no collation {collation}")
        conn.execute(f'CREATE TEMP TABLE units (code TEXT COLLATE "{collation}")')
        conn.cursor().executemany("INSERT INTO units VALUES (%s)", [(code,) for code in CODES])
        for prefix in PREFIXES:
            clause, params = prefixed("code", prefix)
            assert found(conn.execute(f"SELECT code FROM units WHERE {clause.replace('?', '%s')}", params), prefix), prefix


def test_a_scope_finds_its_units_on_sqlite():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE units (code TEXT)")
    conn.executemany("INSERT INTO units VALUES (?)", [(code,) for code in CODES])
    for prefix in PREFIXES:
        clause, params = prefixed("code", prefix)
        assert found(conn.execute(f"SELECT code FROM units WHERE {clause}", params), prefix), prefix
