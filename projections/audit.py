"""The audit view: every event of every aggregate, searchable by case, actor and time.

It keeps each event's facts but never its personal values: auditors read
those, where allowed, from the event store itself.
"""

import json
from collections.abc import Sequence
from typing import Any

from projections.store import Tx
from projections.timefmt import micros
from projections.view import Table, View

_META = ("originator_id", "originator_version", "originator_topic", "timestamp", "actor", "personal")
COLUMNS = ("position", "at", "aggregate_id", "aggregate_type", "version", "type", "actor_user", "actor_role", "data")


class AuditView(View):
    name = "audit"
    tables = (
        Table(
            "audit_events",
            "position BIGINT PRIMARY KEY, at BIGINT NOT NULL, aggregate_id TEXT NOT NULL, "
            "aggregate_type TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL, "
            "actor_user TEXT, actor_role TEXT, data TEXT NOT NULL",
            indexes=("aggregate_id, position", "actor_user, position", "at, position"),
        ),
    )

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        tx.insert(self.table("audit_events"), COLUMNS, [_row(position, event) for position, event in events])


def _row(position: int, event: Any) -> tuple:
    kind, _, name = type(event).__qualname__.rpartition(".")
    actor = getattr(event, "actor", None) or {}
    facts = {k: v for k, v in vars(event).items() if k not in _META}
    return (position, micros(event.timestamp), str(event.originator_id), kind, event.originator_version, name,
            actor.get("user"), actor.get("role"), json.dumps(facts, ensure_ascii=False, default=str))


def search(tx: Tx, after: int, limit: int, aggregate_id: str | None = None, actor: str | None = None,
           start: int | None = None, end: int | None = None) -> list[dict]:
    """Events after position `after`, oldest first, matching every filter given."""
    clauses, params = ["position > ?"], [after]
    for clause, value in (("aggregate_id = ?", aggregate_id), ("actor_user = ?", actor),
                          ("at >= ?", start), ("at < ?", end)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    rows = tx.execute(
        f"SELECT {', '.join(COLUMNS)} FROM view_audit_events WHERE {' AND '.join(clauses)} ORDER BY position LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [dict(zip(COLUMNS, r)) for r in rows]
