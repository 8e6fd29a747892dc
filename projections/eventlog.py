"""Questions about the event log that the library's recorders do not answer."""

from collections.abc import Iterator
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier


def position_of(recorder: object, originator_id: UUID, version: int) -> int | None:
    """The log position (notification id) of one aggregate event."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid FROM {recorder.events_table_name} "
                "WHERE originator_id=? AND originator_version=?",
                (originator_id.hex, version),
            )
            row = cursor.fetchone()
            return None if row is None else row[0]
    if isinstance(recorder, PostgresApplicationRecorder):
        statement = SQL(
            "SELECT notification_id FROM {}.{} WHERE originator_id=%s AND originator_version=%s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (originator_id, version))
            row = cursor.fetchone()
            return None if row is None else row["notification_id"]
    raise TypeError(f"unsupported recorder {type(recorder).__name__}")


def unchained(recorder: object, upto: int) -> int | None:
    """The lowest position of a stored event that a hash chain over positions 1 to `upto` cannot vouch
    for, yet the application would read: one at position 0 or below (positions begin at 1, so no
    link ever covers it), or, on SQLite, one up to `upto` whose aggregate id is not spelled as the
    library writes it (32 lowercase hex digits), or whose state is not bytes. SQLite keeps the id as
    text and reads an aggregate's events by that exact text, while a link covers the id as parsed: a
    row re-spelled drops out of its aggregate with its link intact, and another can take its place
    below position 1. A state edited as text (SQL's replace() gives text) is no event the library
    can read, whatever its link says."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT MIN(rowid) FROM {recorder.events_table_name} WHERE rowid < 1 OR (rowid <= ? AND "
                "(typeof(originator_id) <> 'text' OR length(originator_id) <> 32 "
                "OR originator_id GLOB '*[^0-9a-f]*' OR typeof(state) <> 'blob'))", (upto,))
            return cursor.fetchone()[0]
    if isinstance(recorder, PostgresApplicationRecorder):  # a uuid column: one spelling
        statement = SQL("SELECT MIN(notification_id) AS lowest FROM {}.{} WHERE notification_id < 1").format(
            Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement)
            return cursor.fetchone()["lowest"]
    raise TypeError(f"unsupported recorder {type(recorder).__name__}")


def by_aggregate(recorder: object, upto: int, topic_prefix: str, chunk: int = 10_000) -> Iterator[list[Notification]]:
    """The stored events up to position `upto` whose topic starts with `topic_prefix`, aggregate by
    aggregate, each aggregate's in version order, in chunks of whole aggregates: about `chunk` events
    each (more when one aggregate has more), one query each (keyset paging on the events table's
    primary key, so no transaction stays open between chunks)."""
    after: tuple | None = None
    while rows := _chunk_by_aggregate(recorder, upto, topic_prefix, after, chunk):
        if len(rows) == chunk:  # the last aggregate may go on: leave it whole to the next chunk
            last = rows[-1].originator_id
            cut = next(i for i, n in enumerate(rows) if n.originator_id == last)
            if cut:
                rows = rows[:cut]
            else:  # one aggregate filled the chunk: the rest of it comes too
                while more := _chunk_by_aggregate(recorder, upto, topic_prefix, _key(rows[-1]), chunk, last):
                    rows += more
        yield rows
        after = _key(rows[-1])


def _key(event: Notification) -> tuple:
    return event.originator_id, event.originator_version


def _chunk_by_aggregate(recorder: object, upto: int, topic_prefix: str, after: tuple | None,
                        limit: int, only: UUID | None = None) -> list[Notification]:
    """A chunk after the key `after`; `only`: of that one aggregate."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        keyset, params = ("AND (originator_id, originator_version) > (?, ?) ", [after[0].hex, after[1]]) if after \
            else ("", [])
        if only is not None:
            keyset, params = keyset + "AND originator_id = ? ", [*params, only.hex]
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {recorder.events_table_name} "
                f"WHERE rowid <= ? AND substr(topic, 1, ?) = ? {keyset}"
                "ORDER BY originator_id, originator_version LIMIT ?",
                [upto, len(topic_prefix), topic_prefix, *params, limit])
            return [Notification(id=r["rowid"], originator_id=recorder.convert_originator_id(r["originator_id"]),
                                 originator_version=r["originator_version"], topic=r["topic"], state=r["state"])
                    for r in cursor.fetchall()]
    if isinstance(recorder, PostgresApplicationRecorder):
        keyset, params = (SQL("AND (originator_id, originator_version) > (%s, %s) "), list(after)) if after \
            else (SQL(""), [])
        if only is not None:
            keyset, params = keyset + SQL("AND originator_id = %s "), [*params, only]
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id <= %s AND topic LIKE %s {}ORDER BY originator_id, originator_version LIMIT %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name), keyset)
        with recorder.datastore.transaction(commit=False) as cursor:
            # LIKE, not an expression on topic: the planner's estimate for LIKE keeps the keyset on the
            # primary key's index; for left(topic, n) = ... it sorts the whole table for every chunk.
            pattern = topic_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            cursor.execute(statement, [upto, pattern, *params, limit])
            return [Notification(id=r["notification_id"], originator_id=r["originator_id"],
                                 originator_version=r["originator_version"], topic=r["topic"], state=bytes(r["state"]))
                    for r in cursor.fetchall()]
    raise TypeError(f"unsupported recorder {type(recorder).__name__}")
