"""The case view: one row per case, for lists, filters and workload.

Rows are the case aggregate's own state: a batch loads the rows it touches,
turns each back into a ServiceCase, lets the events mutate it exactly as the
write side does, and writes the rows back in one statement. So the view can
never disagree with the aggregate about stages, due dates or holds.
"""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from domain.case import CLOSED, ServiceCase
from projections.store import Tx, prefixed
from projections.timefmt import from_micros, micros
from projections.view import Table, View

COLUMNS = ("id", "version", "kind", "client_id", "org_unit", "stage", "status", "outcome", "assignee",
           "service_mode", "priority", "opened_by", "opened_at", "updated_at", "due_at", "held_at",
           "closed_at", "reopens_to", "notes", "visits", "opened_position", "providers")
CASE_EVENTS = (ServiceCase.CaseOpened, ServiceCase.CaseEvent)


class CaseView(View):
    folds = ServiceCase
    name = "cases"
    tables = (
        Table(
            "cases",
            "id TEXT PRIMARY KEY, version BIGINT NOT NULL, kind TEXT NOT NULL, client_id TEXT NOT NULL, "
            "org_unit TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, outcome TEXT, assignee TEXT, "
            "service_mode TEXT, priority TEXT NOT NULL, opened_by TEXT NOT NULL, opened_at BIGINT NOT NULL, "
            "updated_at BIGINT NOT NULL, due_at BIGINT, held_at BIGINT, closed_at BIGINT, reopens_to TEXT, "
            "notes BIGINT NOT NULL, visits BIGINT NOT NULL, opened_position BIGINT NOT NULL, providers TEXT NOT NULL",
            indexes=("org_unit, opened_position", "assignee, opened_position", "client_id, opened_position",
                     "opened_position",
                     "status, due_at", "closed_at",
                     # the workload reads only these two (small) parts of the table, from the index alone
                     "org_unit, assignee, kind, status, due_at WHERE status <> 'closed'",
                     "closed_at, org_unit, assignee, kind WHERE status = 'closed'"),
        ),
        # Every unit a case was ever opened in: the workload by unit has a row for each, zeros and all.
        Table("case_units", "org_unit TEXT PRIMARY KEY"),
    )

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        batch = [(p, e) for p, e in events if isinstance(e, CASE_EVENTS)]
        if not batch:
            return
        created = {e.originator_id for _, e in batch if isinstance(e, ServiceCase.CaseOpened)}
        rows = _folded(batch, self._load(tx, {e.originator_id for _, e in batch} - created))
        updates = ", ".join(f"{c}=excluded.{c}" for c in COLUMNS[1:])
        tx.executemany(
            f"INSERT INTO {self.table('cases')} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            rows,
        )
        self._add_units(tx, {e.org_unit for _, e in batch if isinstance(e, ServiceCase.CaseOpened)})

    def fold(self, events: Sequence[tuple[int, Any]]) -> Callable[[Tx], None]:
        rows = _folded([(p, e) for p, e in events if isinstance(e, CASE_EVENTS)], {})
        units = {row[COLUMNS.index("org_unit")] for row in rows}

        def write(tx: Tx) -> None:
            tx.insert(self.table("cases"), COLUMNS, rows)
            self._add_units(tx, units)

        return write

    def _add_units(self, tx: Tx, units: set[str]) -> None:
        tx.executemany(f"INSERT INTO {self.table('case_units')} (org_unit) VALUES (?) ON CONFLICT (org_unit) DO NOTHING",
                       [(unit,) for unit in sorted(units)])  # sorted: two writers take their rows' locks in one order

    def _load(self, tx: Tx, ids: set[UUID]) -> dict[UUID, tuple[ServiceCase, dict]]:
        found = tx.select_in(f"SELECT {', '.join(COLUMNS)} FROM {self.table('cases')} WHERE id IN ({{}})",
                             [str(i) for i in ids])
        rows = [_case(dict(zip(COLUMNS, values))) for values in found]
        return {case.id: (case, extra) for case, extra in rows}


def _folded(batch: Sequence[tuple[int, Any]], rows: dict[UUID, tuple[ServiceCase, dict]]) -> list[tuple]:
    """The rows of the cases a batch touches, after it: `rows` holds those stored before it."""
    for position, event in batch:
        rows[event.originator_id] = _applied(event, position, rows.get(event.originator_id))
    return [_row(case, extra) for case, extra in rows.values()]


def _applied(event: Any, position: int, row: tuple[ServiceCase, dict] | None) -> tuple[ServiceCase, dict]:
    if row is None:
        return event.mutate(None), {"closed_at": None, "opened_position": position}
    case, extra = row
    was_closed = case.status == CLOSED
    event.mutate(case)
    if case.status == CLOSED and not was_closed:
        extra["closed_at"] = event.timestamp
    elif case.status != CLOSED:
        extra["closed_at"] = None
    return case, extra


def _row(case: ServiceCase, extra: dict) -> tuple:
    return (
        str(case.id), case.version, case.kind, str(case.client_id), case.org_unit, case.stage, case.status,
        case.outcome, case.assignee, case.service_mode, case.priority, case.opened_by, micros(case.created_on),
        micros(case.modified_on), micros(case.due_at), micros(case.held_at), micros(extra["closed_at"]),
        case.reopens_to, case.notes, case.visits, extra["opened_position"],
        "".join(f"|{contract}={provider}" for contract, provider in sorted(case.referrals.items())) + "|",
    )


def _case(row: dict) -> tuple[ServiceCase, dict]:
    """A ServiceCase with the state a row keeps (no personal values: the view has none)."""
    case = object.__new__(ServiceCase)
    case.__dict__.update(
        _id=UUID(row["id"]), _version=row["version"], _created_on=from_micros(row["opened_at"]),
        _modified_on=from_micros(row["updated_at"]), _pending_events=[], kind=row["kind"],
        client_id=UUID(row["client_id"]), org_unit=row["org_unit"], service_mode=row["service_mode"],
        priority=row["priority"], opened_by=row["opened_by"], assignee=row["assignee"], status=row["status"],
        outcome=row["outcome"], details={}, need=None, personal={}, notes=row["notes"], visits=row["visits"],
        referrals=dict(p.split("=", 1) for p in row["providers"].split("|") if p), referred_on={},
        held_at=from_micros(row["held_at"]), reopens_to=row["reopens_to"], stage=row["stage"],
        due_at=from_micros(row["due_at"]),
    )
    return case, {"closed_at": from_micros(row["closed_at"]), "opened_position": row["opened_position"]}


# -- queries ---------------------------------------------------------------

# What a case list shows of each case; the rows read carry the position that keys their paging too.
LISTED = ("id", "kind", "client_id", "org_unit", "stage", "status", "outcome", "assignee", "version",
          "opened_at", "updated_at", "due_at", "priority")
_READ = (*LISTED, "opened_position")


def list_cases(tx: Tx, where: "Where", limit: int, before: int | None) -> list[dict]:
    """A page of cases, newest first, keyed on the position that opened each."""
    clauses, params = where.sql(tx.postgres)
    if before is not None:
        clauses.append("opened_position < ?")
        params.append(before)
    sql = f"SELECT {', '.join(_READ)} FROM view_cases"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY opened_position DESC LIMIT ?"
    rows = tx.execute(sql, [*params, limit]).fetchall()
    return [dict(zip(_READ, r)) for r in rows]


def org_units_of(tx: Tx, case_ids: Sequence[str]) -> dict[str, str]:
    """The org unit of each case the view holds, by id."""
    return dict(tx.select_in("SELECT id, org_unit FROM view_cases WHERE id IN ({})", case_ids))


class Where:
    """Filters of the case list and workload, in SQL both stores understand."""

    def __init__(self, now: datetime, prefix: str | None = None, provider: str | None = None,
                 overdue: bool | None = None, unassigned: bool | None = None, active: bool = False, **equal: Any):
        """`active`: open or on hold, what the workload counts as open; `equal`: columns and the value
        each must have (None: any)."""
        self.now = now
        self.prefix = prefix
        self.provider = provider
        self.overdue, self.unassigned, self.active = overdue, unassigned, active
        self.equal = {k: v for k, v in equal.items() if v is not None}

    def sql(self, postgres: bool) -> tuple[list[str], list[Any]]:
        clauses, params = [], []
        if self.prefix:
            clause, values = prefixed("org_unit", self.prefix)
            clauses.append(clause)
            params += values
        if self.provider:  # exact, case and all: SQLite's LIKE would let provider NGOA list ngoA's cases
            clauses.append(f"{'strpos' if postgres else 'instr'}(providers, ?) > 0")
            params.append(f"={self.provider}|")
        for column, value in self.equal.items():
            clauses.append(f"{column} = ?")
            params.append(value)
        if self.unassigned is not None:
            clauses.append(f"assignee IS {'' if self.unassigned else 'NOT '}NULL")
        if self.active:
            clauses.append("status <> 'closed'")
        if self.overdue is not None:
            test = "status = 'open' AND due_at < ?"
            clauses.append(test if self.overdue else f"NOT ({test})")
            params.append(micros(self.now))
        return clauses, params


WORKLOAD_KEYS = ("assignee", "org_unit", "kind")  # the columns a workload may be by (one goes into its SQL)


def workload(tx: Tx, by: str, where: Where, month_start: datetime) -> list[tuple]:
    """(key, open, overdue, due_soon, closed_this_month) for each value of the `by` column.

    Only cases not closed and cases closed this month count, so the two are read apart, each from a
    partial index that holds just them (a city's old closed cases, most of the table, are never
    touched), and counted together in one aggregate (COUNT of a column is a BIGINT count, where
    PostgreSQL would sum integers as NUMERIC). A key whose figures would all be zero has no row,
    but for a unit any case was opened in (by its prefix alone: the workload takes no other filter).
    """
    if by not in WORKLOAD_KEYS:
        raise ValueError(f"no workload by {by!r}")
    clauses, params = where.sql(tx.postgres)
    scope = "".join(f" AND {c}" for c in clauses)
    now, soon = micros(where.now), micros(where.now + timedelta(days=7))
    rows = tx.execute(
        "SELECT figure_key, COUNT(pending), COUNT(overdue), COUNT(due_soon), COUNT(closed) FROM ("
        f"SELECT {by} AS figure_key, 1 AS pending, CASE WHEN status = 'open' AND due_at < ? THEN 1 END AS overdue, "
        "CASE WHEN status = 'open' AND due_at >= ? AND due_at < ? THEN 1 END AS due_soon, NULL AS closed "
        f"FROM view_cases WHERE status <> 'closed'{scope} "
        f"UNION ALL SELECT {by}, NULL, NULL, NULL, 1 FROM view_cases "
        f"WHERE status = 'closed' AND closed_at >= ?{scope}"
        ") figures GROUP BY figure_key",
        [now, now, soon, *params, micros(month_start), *params]).fetchall()
    if by != "org_unit":
        return rows
    counted = {row[0] for row in rows}
    return rows + [(unit, 0, 0, 0, 0) for unit in units_with_cases(tx, where.prefix) if unit not in counted]


def units_with_cases(tx: Tx, prefix: str | None) -> list[str]:
    """The units any case was opened in, under `prefix` (None: every one)."""
    clause, params = prefixed("org_unit", prefix) if prefix else ("1 = 1", [])
    return [row[0] for row in tx.execute(f"SELECT org_unit FROM view_case_units WHERE {clause}", params).fetchall()]
