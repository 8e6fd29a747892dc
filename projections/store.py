"""The views' own connection to the store: SQLite or PostgreSQL, one small interface.

Views live in the same database as the events, so a view's rows and its
position commit in one transaction. SQL is written once, with `?`
placeholders and types both stores understand; PostgreSQL gets `%s`.
Writers serialise on the database write lock (SQLite: BEGIN IMMEDIATE) or on
their projection's tracking row (PostgreSQL: SELECT ... FOR UPDATE).
"""

import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool


def prefixed(column: str, prefix: str) -> tuple[str, list[str]]:
    """`column`, a code of digits, starts with the digits `prefix`: a range an index serves (LIKE may
    not). Its end is the next code of the prefix's length, in digits alone (350582009 → 35058201),
    which every collation orders as the C locale does; a character after '9' (':') is ordered before
    the digits by linguistic ones, ICU's and glibc's, and the range was empty."""
    rest = prefix.rstrip("9")
    if not rest:  # all nines: nothing of digits comes after them
        return f"{column} >= ?", [prefix]
    last = rest[-1]  # not a digit only in a prefix no code has (access.NOTHING): its range holds none
    after = str(int(last) + 1) if last in "012345678" else chr(ord(last) + 1)
    return f"{column} >= ? AND {column} < ?", [prefix, rest[:-1] + after]


SETUP_LOCK = 0x1A57_3E7E  # the advisory lock id held while creating tables
REBUILD_LOCK = 0x1A57_4EB1  # held, with the schema's hash, by the one rebuild at a time
LEAD_LOCK = 0x1A57_1EAD  # held, with the schema's hash, by the one projector following the log
LEAD_POLL = 1.0  # seconds between a waiting projector's asks for the lead
PURGE_WAIT = 3.0  # seconds a purge waits for readers in its way before it is left to the next
SQLITE_BUSY_TIMEOUT = 30  # seconds a SQLite statement waits for the write lock
CONNECT_TIMEOUT = 10  # seconds a first connection to PostgreSQL may take before the store is said unreachable
UPGRADES = "upgrades_done"  # the names of the one-off passes (ViewStore.once) this store has had


class Tx:
    """One transaction's cursor, speaking `?` SQL on either store."""

    def __init__(self, cursor: Any, postgres: bool):
        self._cursor = cursor
        self._postgres = postgres

    @property
    def postgres(self) -> bool:
        return self._postgres

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self._postgres else statement

    def execute(self, statement: str, params: Sequence[Any] = ()) -> "Tx":
        self._cursor.execute(self._sql(statement), params)
        return self

    def columns(self, table: str) -> list[str]:
        """The names of a table's columns, as the table stands (an upgrade may have added some)."""
        self._cursor.execute(f"SELECT * FROM {table} LIMIT 0")
        return [column[0] for column in self._cursor.description]

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]], chunk: int = 1000) -> None:
        # In chunks: psycopg pipelines executemany, and a very long pipeline can stall on full buffers.
        for start in range(0, len(rows), chunk):
            self._cursor.executemany(self._sql(statement), rows[start:start + chunk])

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Appends rows: with COPY on PostgreSQL (several times faster than INSERTs), else INSERTs."""
        if not rows:
            return
        if not self._postgres:
            self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             rows)
            return
        with self._cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def select_in(self, statement: str, keys: Sequence[Any], chunk: int = 500) -> list[tuple]:
        """Every row of `statement`, whose `IN ({})` is filled with the keys, a chunk at a time."""
        rows: list[tuple] = []
        keys = list(keys)
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            rows += self.execute(statement.format(", ".join("?" * len(part))), part).fetchall()
        return rows

    def fetchall(self) -> list[tuple]:
        return self._cursor.fetchall()

    def fetchone(self) -> tuple | None:
        return self._cursor.fetchone()


# Whether any snapshot that may not see the deletions of transaction %s is held, or may yet be taken:
# a session's (a standby's feedback included) whose snapshot or transaction is that old, a prepared
# transaction's, a replication slot's. Taken after, a snapshot sees them: VACUUM then removes the rows.
# Sessions and prepared transactions of other databases are not asked: VACUUM of a table keeps rows
# only for those of its own database (and for processes of none, such as a standby's sender).
_OLDER_SNAPSHOTS = """
WITH deleter AS (SELECT age(%s::text::xid) AS age)
SELECT EXISTS (SELECT 1 FROM pg_stat_activity, deleter WHERE pid <> pg_backend_pid()
                  AND (datid IS NULL OR datname = current_database())
                  AND (age(backend_xmin) >= deleter.age OR age(backend_xid) >= deleter.age))
    OR EXISTS (SELECT 1 FROM pg_prepared_xacts, deleter WHERE database = current_database()
                  AND age(transaction) >= deleter.age)
    OR EXISTS (SELECT 1 FROM pg_replication_slots, deleter WHERE age(xmin) >= deleter.age)
"""


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """Makes the configured schema if it is not there yet (the tables in it are made at setup).
    Looked for first: a role that may not create schemas may still use one made for it."""
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
        return
    try:
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
    except psycopg.errors.UniqueViolation:
        pass  # another process starting at the same moment made it
    except psycopg.errors.InsufficientPrivilege as error:
        raise psycopg.errors.InsufficientPrivilege(
            f"the schema {schema} does not exist, and this role may not create it ({error})") from None


class ViewStore:
    """Connections for views, configured from the application's persistence settings."""

    def __init__(self, env: Mapping[str, str]):
        self.postgres = env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres"
        if self.postgres:
            schema = env.get("POSTGRES_SCHEMA") or "public"
            kwargs = {
                "dbname": env["POSTGRES_DBNAME"], "host": env["POSTGRES_HOST"],
                "port": env.get("POSTGRES_PORT", "5432"), "user": env["POSTGRES_USER"],
                "password": env.get("POSTGRES_PASSWORD", ""),
                # Custom plans: a generic plan cannot see a filter's values (org-unit ranges).
                "options": f"-c search_path={schema} -c idle_in_transaction_session_timeout=5s "
                           "-c plan_cache_mode=force_custom_plan",
            }
            # A store that cannot be reached is said at once, with PostgreSQL's reason: a pool retries
            # in silence for 30 s before it gives up, and then says only that it got no connection.
            with psycopg.connect(**kwargs, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
                ensure_schema(conn, schema)
            self._pool = ConnectionPool(kwargs=kwargs, min_size=1, max_size=int(env.get("POSTGRES_POOL_SIZE", "4")),
                                        # as long as the library's pool waits for a connection
                                        timeout=float(env.get("POSTGRES_CONNECT_TIMEOUT") or 30), open=True)
        else:
            self._path = env["SQLITE_DBNAME"]
            self._local = threading.local()

    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA secure_delete=ON")  # deleted rows (erased keys) are overwritten
            self._local.conn = conn
        return conn

    def write(self) -> AbstractContextManager[Tx]:
        """A transaction that commits on success and rolls back on any error."""
        return self._transaction("BEGIN IMMEDIATE", "COMMIT")

    def read(self) -> AbstractContextManager[Tx]:
        """A consistent read: one snapshot for every statement inside."""
        return self._transaction("BEGIN", "ROLLBACK")

    @contextmanager
    def _transaction(self, begin: str, end: str) -> Iterator[Tx]:
        """On SQLite `begin`, then `end` (ROLLBACK on any error); on PostgreSQL a transaction, committed
        on success (a read has written nothing to commit)."""
        if self.postgres:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield Tx(cursor, True)
            return
        conn = self._sqlite()
        conn.execute(begin)
        try:
            yield Tx(conn.cursor(), False)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute(end)

    def once(self, name: str, run: Callable[[], None]) -> None:
        """Runs `run` unless a run of that name finished in this store before: an upgrade's one pass
        over the log, say. One cut short runs again, so `run` must bear being run twice."""
        with self.write() as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {UPGRADES} (name TEXT PRIMARY KEY)")
            if tx.execute(f"SELECT 1 FROM {UPGRADES} WHERE name = ?", (name,)).fetchone():
                return
        run()
        with self.write() as tx:
            tx.execute(f"INSERT INTO {UPGRADES} (name) VALUES (?) ON CONFLICT DO NOTHING", (name,))

    @contextmanager
    def setup_lock(self) -> Iterator[None]:
        """Serialises schema setup between processes starting at once (several API workers)."""
        if not self.postgres:
            yield  # SQLite: each CREATE already runs under the database's write lock
            return
        with self._outside_transactions() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))

    @contextmanager
    def rebuilding(self) -> Iterator[bool]:
        """Whether this process is the only one rebuilding views in this store, for as long as it holds
        the context: a lock the database (PostgreSQL) or the kernel (on the SQLite store's file, apart
        from SQLite's own locks) releases however the process ends."""
        if self.postgres:
            with self._outside_transactions() as conn:
                lock = (REBUILD_LOCK,)
                alone = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", lock).fetchone()[0]
                try:
                    yield alone
                finally:
                    if alone:
                        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(current_schema()))", lock)
            return
        if self._path == ":memory:" or self._path.startswith("file:"):
            yield True  # no file, or one named in a URI: no other process reaches it by this path
            return
        with open(self._path, "rb") as store:
            try:
                fcntl.flock(store, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
            yield alone

    def writer_of(self, tx: Tx, table: str, key: str, value: Any) -> int | None:
        """PostgreSQL: the transaction that wrote the row of `table` whose `key` is `value` (its xmin),
        the one whose deletions `purge` is to remove."""
        if not tx.postgres:
            return None
        return int(tx.execute(f"SELECT xmin::text FROM {table} WHERE {key} = ?", (value,)).fetchone()[0])

    def purge(self, *tables: str, deleted_by: int | None = None) -> bool:
        """Leaves no copy of rows of `tables` deleted by transaction `deleted_by` (committed) in the
        database's files: on PostgreSQL the dead tuples (VACUUM); on SQLite, whose freed pages are
        overwritten (secure_delete), its WAL file. False while a reader may keep a copy, within
        PURGE_WAIT: a PostgreSQL snapshot older than the deletion (VACUUM keeps the old row for it;
        asked first, since one taken after sees the deletion), a session holding a page pinned (a
        plain VACUUM passes such a page by; one that freezes waits for it), a SQLite reader the
        checkpoint could not pass. Purging again once they have gone finishes the work.
        PostgreSQL's own write-ahead log keeps the old row until its segment is recycled, and WAL
        archives and replicas keep it as backups do (the README says what that means for erasure)."""
        if self.postgres:
            with self._outside_transactions() as conn:
                if deleted_by is not None and conn.execute(_OLDER_SNAPSHOTS, (deleted_by,)).fetchone()[0]:
                    return False
                conn.execute(f"SET statement_timeout = {int(PURGE_WAIT * 1000)}")
                try:
                    for table in tables:
                        conn.execute(f"VACUUM (FREEZE) {table}")
                except psycopg.errors.QueryCanceled:
                    return False
                finally:
                    conn.execute("RESET statement_timeout")
                return True
        conn = self._sqlite()
        conn.execute(f"PRAGMA busy_timeout = {int(PURGE_WAIT * 1000)}")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT * 1000}")
        return not busy

    def refresh_statistics(self, tables: Sequence[str]) -> None:
        """Fresh planner statistics (and no dead rows) for tables just built."""
        if self.postgres:
            with self._outside_transactions() as conn:
                for table in tables:
                    conn.execute(f"VACUUM (ANALYZE) {table}")
            return
        for table in tables:
            self._sqlite().execute(f"ANALYZE {table}")

    @contextmanager
    def _outside_transactions(self) -> Iterator[psycopg.Connection]:
        """A pooled PostgreSQL connection in autocommit (VACUUM, session locks), given back as it was."""
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False

    @contextmanager
    def leading(self, stop: Any, standing_by: Callable[[], Any] = lambda: None) -> Iterator[bool]:
        """Whether this process leads the projectors of this store, for as long as it holds the context:
        on PostgreSQL it waits, asking every LEAD_POLL seconds, until the projector that leads ends (its
        lock goes with its connection, however its process ends); False if `stop` is set first. Several
        projectors would all be correct (a batch is applied only where its position is unmoved), but
        each would read and decode every batch for one of them to write it. SQLite: always.
        `standing_by` is called each time the store has answered that another leads."""
        if not self.postgres:
            yield True
            return
        with psycopg.connect(autocommit=True, **self._pool.kwargs) as conn:
            lock = (LEAD_LOCK,)
            while not conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", lock).fetchone()[0]:
                standing_by()
                if stop.wait(LEAD_POLL):
                    yield False
                    return
            yield True

    @contextmanager
    def notified(self, channel: str) -> Iterator[Callable[[float], bool]]:
        """PostgreSQL only: `wait(timeout)`, which returns True as soon as `channel` is notified, or
        False after `timeout`; on a connection of its own, since a listening one must not be pooled."""
        with psycopg.connect(autocommit=True, **self._pool.kwargs) as conn:
            conn.execute(SQL("LISTEN {}").format(Identifier(channel)))
            yield lambda timeout: any(True for _ in conn.notifies(timeout=timeout, stop_after=1))

    def close(self) -> None:
        if self.postgres:
            self._pool.close()
