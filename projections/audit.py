"""The audit view: every event of every aggregate, searchable by case, actor and time.

It keeps each event's facts but never its personal values: auditors read
those, where allowed, from the event store itself. The view copies a batch
from the events table in one statement, inside the database: the facts are
the stored state less its metadata and its sealed personal values, still in
the library's transcoding (`facts()` turns them into plain JSON values).
This needs the stored state to be the transcoder's plain JSON: lastmeter
seals personal values itself and sets no library compressor or cipher.
"""

import json
from collections.abc import Sequence
from typing import Any

import orjson
from eventsourcing.persistence import Transcoder

from domain.case import MADE_PERSONAL
from projections.store import Tx
from projections.view import Table, View

_AS_TEXT = orjson.OPT_PASSTHROUGH_DATETIME  # moments to default=str too, as the json module writes them

COLUMNS = ("position", "at", "aggregate_id", "aggregate_type", "version", "type", "actor_user", "actor_role", "data")
# Besides: the case (or client) an event of another aggregate is about, so that a search by case finds
# who was shown it and what was billed for it; the delivery an event is about (a contract's, or a
# read of why it was rejected), so that what followed a delivery reported for the case is found with it;
# and the person whose values an event holds or showed someone, so that a search by a client's id
# answers who was shown their data, wherever it was read.
ABOUT = ("subject", "delivery", "person")
# Besides originator id and version, kept apart; a receipt's request fingerprint is no one's business.
NOT_FACTS = ("originator_topic", "timestamp", "actor", "personal", "request_hash", "class_version")
# Values that events of an older version kept as plain facts, before they were declared personal: left
# out as personal values are (the events themselves are never rewritten).
WITHHELD = {**{event: [("facts", name) for name in names] for event, names in MADE_PERSONAL.items()},
            "DeliveryRejected": [("reason",)]}


def _withheld(dialect: str, event_type: str) -> str:
    """The state `s` less WITHHELD's values for the event's type, as a SQL expression."""
    cases = []
    for event, paths in WITHHELD.items():
        if dialect == "postgres":
            less = "s" + "".join(f" #- '{{{{{','.join(path)}}}}}'" for path in paths)  # braces for .format
        else:
            less = "json_remove(s, " + ", ".join("'$." + ".".join(path) + "'" for path in paths) + ")"
        cases.append(f"WHEN '{event}' THEN {less}")
    return f"(CASE {event_type} {' '.join(cases)} ELSE s END)"


def _about(dialect: str, event_type: str) -> str:
    """The ABOUT columns from the state `s`, as SQL expressions: ids of cases and clients as the view
    writes ids (with dashes), those of deliveries in the store's hex (they are only compared)."""
    if dialect == "postgres":
        field, hex_id = "s ->> '{}'".format, "s -> '{}' ->> '_data_'".format

        def dashed(key: str) -> str:
            return f"({hex_id(key)})::uuid::text"
    else:
        field, hex_id = "json_extract(s, '$.{}')".format, "json_extract(s, '$.{}._data_')".format

        def dashed(key: str) -> str:
            return _dashed(hex_id(key))
    read = f"{event_type} = 'PersonalDataRead'"
    subject = (f"CASE WHEN {read} AND {field('resource')} <> 'delivery' THEN {dashed('resource_id')} "
               f"WHEN {event_type} = 'DeliveryReported' THEN {dashed('case_id')} END")
    delivery = (f"CASE WHEN {read} AND {field('resource')} = 'delivery' THEN {hex_id('resource_id')} "
                f"ELSE {hex_id('delivery_id')} END")
    # The person an event names, or whose key seals its personal values (a case's opening names its client)
    sealed_for = "s -> 'personal' ->> 'person'" if dialect == "postgres" else "json_extract(s, '$.personal.person')"
    return f"{subject}, {delivery}, coalesce({dashed('person')}, {sealed_for})"


def _dashed(hex_id: str) -> str:
    """SQLite: a UUID's 32 hex digits (as the store keeps ids) with the dashes of its text form."""
    return (f"lower(substr({hex_id}, 1, 8) || '-' || substr({hex_id}, 9, 4) || '-' || substr({hex_id}, 13, 4) "
            f"|| '-' || substr({hex_id}, 17, 4) || '-' || substr({hex_id}, 21))")


# From each stored event: its type's qualified name (the topic's part after ':'), split at its last dot
# into the aggregate's class and the event's; the moment in whole microseconds since the epoch.
_POSTGRES = f"""
INSERT INTO {{table}} ({", ".join(COLUMNS + ABOUT)})
SELECT notification_id,
       (extract(epoch FROM (s -> 'timestamp' ->> '_data_')::timestamptz) * 1000000)::bigint,
       originator_id::text, coalesce(substring(q FROM '^(.*)\\.[^.]*$'), ''), originator_version,
       substring(q FROM '[^.]*$'), s -> 'actor' ->> 'user', s -> 'actor' ->> 'role',
       ({_withheld("postgres", "substring(q FROM '[^.]*$')")} - ARRAY[{", ".join(f"'{key}'" for key in NOT_FACTS)}])::text,
       {_about("postgres", "substring(q FROM '[^.]*$')")}
FROM (SELECT notification_id, originator_id, originator_version, split_part(topic, ':', 2) AS q,
             convert_from(state, 'UTF8')::jsonb AS s
      FROM {{events}} WHERE notification_id BETWEEN %s AND %s
      OFFSET 0) AS e  -- not flattened into the outer query, which would parse each state once per use
"""
_SQLITE = f"""
INSERT INTO {{table}} ({", ".join(COLUMNS + ABOUT)})
SELECT rowid,
       -- the whole seconds from the moment without its fraction (strftime would round .9995 up)
       CAST(strftime('%s', CASE WHEN substr(t, 20, 1) = '.' THEN substr(t, 1, 19) || substr(t, 27) ELSE t END)
            AS INTEGER) * 1000000
           + CASE WHEN substr(t, 20, 1) = '.' THEN CAST(substr(t, 21, 6) AS INTEGER) ELSE 0 END,
       {_dashed("h")},
       CASE WHEN k = '' THEN '' ELSE substr(k, 1, length(k) - 1) END, originator_version, substr(q, length(k) + 1),
       json_extract(s, '$.actor.user'), json_extract(s, '$.actor.role'),
       json_remove({_withheld("sqlite", "substr(q, length(k) + 1)")}, {", ".join(f"'$.{key}'" for key in NOT_FACTS)}),
       {_about("sqlite", "substr(q, length(k) + 1)")}
FROM (SELECT rowid, originator_version, originator_id AS h, q, rtrim(q, replace(q, '.', '')) AS k, s,
             json_extract(s, '$.timestamp._data_') AS t
      FROM (SELECT rowid, originator_id, originator_version, substr(topic, instr(topic, ':') + 1) AS q,
                   CAST(state AS TEXT) AS s
            FROM {{events}} WHERE rowid BETWEEN ? AND ?))
"""

# Each delivery a statement listed (a contract's DeliveriesStated lists many), so that a search by case
# finds the statement that billed the deliveries reported for it.
_STATED_POSTGRES = """
INSERT INTO {table} (position, delivery)
SELECT notification_id, d ->> '_data_'
FROM {events}, jsonb_array_elements(convert_from(state, 'UTF8')::jsonb -> 'deliveries') AS d
WHERE notification_id BETWEEN %s AND %s AND topic LIKE '%%:Contract.DeliveriesStated'
"""
_STATED_SQLITE = """
INSERT INTO {table} (position, delivery)
SELECT e.rowid, json_extract(d.value, '$._data_')
FROM {events} AS e, json_each(CAST(e.state AS TEXT), '$.deliveries') AS d
WHERE e.rowid BETWEEN ? AND ? AND e.topic LIKE '%:Contract.DeliveriesStated'
"""


class AuditView(View):
    name = "audit"
    # 8: the person whose key seals an event's personal values, where it names no person (a case's opening);
    # 7: a read of why a delivery was rejected is about that delivery (a read of a case, its history or
    # a client, about the case or client);
    # 6: the case or client an event is about, and the delivery (searched by case);
    # 5: no class versions, nor the values older events kept before they were declared personal;
    # 4: no request fingerprints among the facts; 3: on SQLite, `at` no longer a second late for a fraction of .9995 and more;
    # 2: facts in the library's transcoding, copied by the database (1: re-encoded in Python)
    revision = 8
    rules = repr(sorted(WITHHELD.items()))  # the values withheld (2026-12-08: the counsellor matched too)
    stored = True  # nothing decoded: the batch is copied from the events table by the database
    tables = (
        Table(
            "audit_events",
            "position BIGINT PRIMARY KEY, at BIGINT NOT NULL, aggregate_id TEXT NOT NULL, "
            "aggregate_type TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL, "
            "actor_user TEXT, actor_role TEXT, data TEXT NOT NULL, subject TEXT, delivery TEXT, person TEXT",
            indexes=("aggregate_id, position", "actor_user, position", "at, position",
                     "subject, position WHERE subject IS NOT NULL", "delivery WHERE delivery IS NOT NULL",
                     "person, position WHERE person IS NOT NULL"),
        ),
        Table("audit_stated", "position BIGINT NOT NULL, delivery TEXT NOT NULL", indexes=("delivery",)),
    )

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        """The batch is every event between its first and last position (a batch is a stretch of the log)."""
        stretch = (events[0][0], events[-1][0])
        for name, statements in (("audit_events", (_POSTGRES, _SQLITE)), ("audit_stated", (_STATED_POSTGRES, _STATED_SQLITE))):
            statement = statements[0] if tx.postgres else statements[1]
            tx.execute(statement.format(table=self.table(name), events=self.events_table), stretch)


def facts(transcoder: Transcoder, data: str) -> dict[str, Any]:
    """An audit row's facts as plain JSON values (ids, moments and amounts as their text, as str()
    writes them). By orjson: a page of 100 rows in a third of the json module's time; what orjson
    refuses (an integer beyond 64 bits) goes the json module's way, to the same values. (A NaN,
    which no store keeps in JSON, would be null where the json module wrote NaN.)"""
    decoded = transcoder.decode(data.encode())
    try:
        return orjson.loads(orjson.dumps(decoded, default=str, option=_AS_TEXT))
    except TypeError:
        return json.loads(json.dumps(decoded, ensure_ascii=False, default=str))


def version_at(tx: Tx, aggregate_id: str, at: int) -> int:
    """The aggregate's last version at moment `at` (micros), as far as the view has come: a guess,
    for the log to confirm (the view may be behind it)."""
    row = tx.execute("SELECT MAX(version) FROM view_audit_events WHERE aggregate_id = ? AND at <= ?",
                     (aggregate_id, at)).fetchone()
    return row[0] or 0


# An aggregate's own events, the events about it, those about the deliveries reported for it, the
# statements that listed those, and (for a client) the events about the person.
_REPORTED = "SELECT delivery FROM view_audit_events WHERE subject = ? AND type = 'DeliveryReported'"
_ABOUT = ("aggregate_id = ?", "subject = ?", f"delivery IN ({_REPORTED})",
          f"position IN (SELECT position FROM view_audit_stated WHERE delivery IN ({_REPORTED}))", "person = ?")


def search(tx: Tx, after: int, limit: int, aggregate_id: str | None = None, actor: str | None = None,
           start: int | None = None, end: int | None = None) -> list[dict]:
    """Events after position `after`, oldest first, matching every filter given; `aggregate_id`: the
    aggregate's events and those about it (a read of a case shown to someone, a delivery billed for
    it, its review and the statement that listed it; for a client, every read of their values and every
    event sealed with their key). Each of those five is its own index's ordered scan, its first `limit` taken
    before they are merged: as one OR, PostgreSQL walked the whole log in position order instead."""
    clauses, params = ["position > ?"], [after]
    for clause, value in (("actor_user = ?", actor), ("at >= ?", start), ("at < ?", end)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = " AND ".join(clauses)
    if aggregate_id is None:
        chosen, chosen_params = where, params
    else:
        firsts = " UNION ALL ".join(
            f"SELECT position FROM (SELECT position FROM view_audit_events WHERE {about} AND {where} "
            f"ORDER BY position LIMIT ?) AS about_{i}" for i, about in enumerate(_ABOUT))
        chosen, chosen_params = f"position IN ({firsts})", [p for _ in _ABOUT for p in (aggregate_id, *params, limit)]
    rows = tx.execute(
        f"SELECT {', '.join(COLUMNS)} FROM view_audit_events WHERE {chosen} ORDER BY position LIMIT ?",
        [*chosen_params, limit],
    ).fetchall()
    return [dict(zip(COLUMNS, r)) for r in rows]
