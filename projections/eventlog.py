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


def by_aggregate(recorder: object, upto: int, topic_prefix: str, chunk: int = 10_000) -> Iterator[list[Notification]]:
    """The stored events up to position `upto` whose topic starts with `topic_prefix`, aggregate by
    aggregate, each aggregate's in version order: chunks of at most `chunk`, one query each (keyset
    paging on the events table's primary key, so no transaction stays open between chunks)."""
    after: tuple | None = None
    while True:
        chunk_rows = _chunk_by_aggregate(recorder, upto, topic_prefix, after, chunk)
        if not chunk_rows:
            return
        yield chunk_rows
        last = chunk_rows[-1]
        after = (last.originator_id, last.originator_version)


def _chunk_by_aggregate(recorder: object, upto: int, topic_prefix: str, after: tuple | None,
                        limit: int) -> list[Notification]:
    if isinstance(recorder, SQLiteApplicationRecorder):
        keyset, params = ("AND (originator_id, originator_version) > (?, ?) ", [after[0].hex, after[1]]) if after \
            else ("", [])
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {recorder.events_table_name} "
                f"WHERE rowid <= ? AND topic LIKE ? {keyset}ORDER BY originator_id, originator_version LIMIT ?",
                [upto, topic_prefix + "%", *params, limit])
            return [Notification(id=r["rowid"], originator_id=recorder.convert_originator_id(r["originator_id"]),
                                 originator_version=r["originator_version"], topic=r["topic"], state=r["state"])
                    for r in cursor.fetchall()]
    if isinstance(recorder, PostgresApplicationRecorder):
        keyset, params = (SQL("AND (originator_id, originator_version) > (%s, %s) "), list(after)) if after \
            else (SQL(""), [])
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id <= %s AND topic LIKE %s {}ORDER BY originator_id, originator_version LIMIT %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name), keyset)
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [upto, topic_prefix + "%", *params, limit])
            return [Notification(id=r["notification_id"], originator_id=r["originator_id"],
                                 originator_version=r["originator_version"], topic=r["topic"], state=bytes(r["state"]))
                    for r in cursor.fetchall()]
    raise TypeError(f"unsupported recorder {type(recorder).__name__}")
