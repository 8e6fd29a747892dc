"""A group commit's events inserted on PostgreSQL in one round trip, with the library's table lock.

The library takes an EXCLUSIVE lock on the events table for every insert, so that positions commit
in the order they are issued and a reader never passes a position that can still commit; then it
inserts, fetches the positions and commits, in several round trips and a pipeline's worth of
Python per transaction. Here a function in the database takes the same lock and does the same
insert in one statement, which commits when it ends: the lock is held for one round trip, and the
writer thread spends a fraction of the CPU. It also notifies `channel(recorder)` (delivered at the
commit), so that a projector waiting for new events wakes at once instead of at its next poll.
"""

import hashlib
from collections.abc import Sequence

import psycopg
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier, Literal

from domain.storage.groupcommit import Insert

FUNCTION = "lastmeter_insert_events"
_CREATING = 0x1A57_3E7F  # the advisory lock held while the function is (re)created

_CREATE = """
CREATE OR REPLACE FUNCTION {schema}.{function}(ids uuid[], versions bigint[], topics text[], states bytea[])
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE;
    RETURN QUERY INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states) RETURNING notification_id;
    PERFORM pg_notify({channel}, '');
END $$
"""


def insert_for(recorder: ApplicationRecorder) -> Insert:
    """How a group commit inserts into this store: on PostgreSQL one round trip per batch; elsewhere
    (SQLite: one writer anyway) the library's insert."""
    return LockedInsert(recorder) if isinstance(recorder, PostgresApplicationRecorder) else recorder.insert_events


def channel(recorder: PostgresApplicationRecorder) -> str:
    """The notification channel of an events table: a digest of its name, so that it stays within
    PostgreSQL's 63 bytes whatever the schema is called."""
    table = f"{recorder.datastore.schema}.{recorder.events_table_name}"
    return "lastmeter_" + hashlib.sha256(table.encode()).hexdigest()[:32]


class LockedInsert:
    def __init__(self, recorder: PostgresApplicationRecorder):
        self.datastore = recorder.datastore
        names = {"schema": Identifier(self.datastore.schema), "function": Identifier(FUNCTION),
                 "table": Identifier(recorder.events_table_name)}
        self._create = SQL(_CREATE).format(channel=Literal(channel(recorder)), **names)
        # Rendered once: psycopg builds a composed query's text again on every execute.
        self._call = SQL("SELECT position FROM {schema}.{function}(%s::uuid[], %s::bigint[], %s::text[], "
                         "%s::bytea[]) AS inserted(position)").format(**names).as_string()
        self._created = False

    def __call__(self, events: Sequence[StoredEvent]) -> list[int]:
        """Inserts the events in one transaction; their positions, in order. A version already
        stored fails the whole insert with IntegrityError, as the library's insert does."""
        try:
            with self.datastore.get_connection() as conn:
                if not self._created:
                    self._create_function(conn)
                rows = conn.execute(self._call, ([e.originator_id for e in events],
                                                 [e.originator_version for e in events],
                                                 [e.topic for e in events], [e.state for e in events]),
                                    prepare=True).fetchall()
        except psycopg.IntegrityError as error:
            raise IntegrityError(str(error)) from error
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise OperationalError(str(error)) from error
        return [row["position"] for row in rows]

    def _create_function(self, conn: psycopg.Connection) -> None:
        with conn.transaction():  # processes starting together take turns
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATING,))
            conn.execute(self._create)
        self._created = True
