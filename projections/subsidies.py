"""The liaison view: who was assignee of which open case when, and who recorded which visit.

A spell runs from an assignment (or a reopening) to the next assignment or
the case's closure; a case counts as handled in every month one of its
spells touches. Visits count in the month they took place (Asia/Shanghai).
"""

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from domain.case import ServiceCase
from projections.store import Tx, prefixed
from projections.timefmt import micros
from projections.view import Table, View


class LiaisonView(View):
    folds = ServiceCase
    name = "liaisons"
    tables = (
        Table("liaison_cases", "case_id TEXT PRIMARY KEY, org_unit TEXT NOT NULL, assignee TEXT, closed INTEGER NOT NULL"),
        Table("liaison_spells", "case_id TEXT NOT NULL, assignee TEXT NOT NULL, org_unit TEXT NOT NULL, "
              "started_at BIGINT NOT NULL, ended_at BIGINT",
              indexes=("started_at", "ended_at"), lookups=("case_id, ended_at",)),
        Table("liaison_visits", "position BIGINT PRIMARY KEY, case_id TEXT NOT NULL, org_unit TEXT NOT NULL, "
              "visitor TEXT NOT NULL, at BIGINT NOT NULL", indexes=("at",)),
    )

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        touched = {e.originator_id for _, e in events if isinstance(e, ServiceCase.CaseEvent)}
        _Batch(self, self._load(tx, touched), events).write(tx)

    def fold(self, events: Sequence[tuple[int, Any]]) -> Callable[[Tx], None]:
        return _Batch(self, None, events).write

    def _load(self, tx: Tx, ids: set[UUID]) -> dict[UUID, dict]:
        rows = tx.select_in(f"SELECT case_id, org_unit, assignee, closed FROM {self.table('liaison_cases')} "
                            "WHERE case_id IN ({})", [str(i) for i in ids])
        return {UUID(case_id): {"org_unit": org_unit, "assignee": assignee, "closed": bool(closed),
                                "spell": "stored" if assignee and not closed else None}
                for case_id, org_unit, assignee, closed in rows}


class _Batch:
    """One batch's changes, gathered in memory and written with a few statements."""

    def __init__(self, view: LiaisonView, stored: dict[UUID, dict] | None, events: Sequence[tuple[int, Any]]):
        """`stored`: the batch's cases as stored before it; None when none of them is (a rebuild's fold)."""
        self.view, self.fresh = view, stored is None
        self.cases: dict[UUID, dict] = stored or {}
        self.new_spells: list[list] = []  # [case_id, assignee, org_unit, started_at, ended_at]
        self.ended: list[tuple[int, str]] = []  # (ended_at, case_id) of spells stored earlier
        self.visits: list[tuple] = []
        for position, event in events:
            self.apply(position, event)

    def apply(self, position: int, event: Any) -> None:
        at = micros(event.timestamp)
        if isinstance(event, ServiceCase.CaseOpened):
            self.cases[event.originator_id] = {"org_unit": event.org_unit, "assignee": None, "closed": False,
                                               "spell": None}
            return
        case = self.cases.get(event.originator_id)
        if case is None:
            return
        if isinstance(event, ServiceCase.CaseAssigned):
            self._end_spell(event.originator_id, case, at)
            case["assignee"] = event.assignee
            self._start_spell(event.originator_id, case, at)
        elif _closes(event):
            self._end_spell(event.originator_id, case, at)
            case["closed"] = True
        elif isinstance(event, ServiceCase.CaseReopened):
            case["closed"] = False
            self._start_spell(event.originator_id, case, at)
        elif isinstance(event, ServiceCase.VisitRecorded):
            visited = micros(datetime.fromisoformat(event.visited_at))
            self.visits.append((position, str(event.originator_id), case["org_unit"], event.actor["user"], visited))

    def _start_spell(self, case_id: UUID, case: dict, at: int) -> None:
        if case["assignee"] and not case["closed"]:
            spell = [str(case_id), case["assignee"], case["org_unit"], at, None]
            self.new_spells.append(spell)
            case["spell"] = spell

    def _end_spell(self, case_id: UUID, case: dict, at: int) -> None:
        if case["spell"] == "stored":
            self.ended.append((at, str(case_id)))
        elif case["spell"] is not None:
            case["spell"][4] = at
        case["spell"] = None

    def write(self, tx: Tx) -> None:
        t = self.view.table
        tx.executemany(f"UPDATE {t('liaison_spells')} SET ended_at=? WHERE case_id=? AND ended_at IS NULL", self.ended)
        tx.insert(t("liaison_spells"), ("case_id", "assignee", "org_unit", "started_at", "ended_at"),
                  [tuple(s) for s in self.new_spells])
        tx.insert(t("liaison_visits"), ("position", "case_id", "org_unit", "visitor", "at"), self.visits)
        cases = [(str(i), c["org_unit"], c["assignee"], int(c["closed"])) for i, c in self.cases.items()]
        if self.fresh:
            tx.insert(t("liaison_cases"), ("case_id", "org_unit", "assignee", "closed"), cases)
            return
        tx.executemany(f"INSERT INTO {t('liaison_cases')} VALUES (?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE "
                       "SET assignee=excluded.assignee, closed=excluded.closed", cases)


def _closes(event: Any) -> bool:
    if isinstance(event, ServiceCase.StepTaken):
        return event.outcome is not None
    return isinstance(event, ServiceCase.CaseClosed)


def liaison_work(tx: Tx, start: datetime, end: datetime, now: datetime | None = None) -> dict[str, tuple[int, int]]:
    """{liaison: (cases handled, visits recorded)} for [start, end), wherever in the city: a subsidy
    is paid on all of a liaison's work, whoever asks (a scope picks only whom: liaisons_in)."""
    handled = _cases_handled(tx, start, end, None, now)
    if not handled:
        return {}
    visits = dict(tx.execute(
        "SELECT visitor, COUNT(*) FROM view_liaison_visits WHERE at >= ? AND at < ? GROUP BY visitor",
        [micros(start), micros(end)]).fetchall())
    return {liaison: (cases, visits.get(liaison, 0)) for liaison, cases in handled.items()}


def liaisons_in(tx: Tx, start: datetime, end: datetime, prefix: str | None) -> set[str]:
    """The liaisons who handled a case within an org-unit prefix in [start, end)."""
    return set(_cases_handled(tx, start, end, prefix))


def _cases_handled(tx: Tx, start: datetime, end: datetime, prefix: str | None,
                   now: datetime | None = None) -> dict[str, int]:
    """{liaison: cases handled}. A spell still open has lasted until `now`: it counts for no month
    that has not begun."""
    if start > (now or datetime.now(timezone.utc)):
        return {}
    scope, params = _scope(prefix)
    return dict(tx.execute(
        "SELECT assignee, COUNT(DISTINCT case_id) FROM view_liaison_spells "
        f"WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?) {scope} GROUP BY assignee",
        [micros(end), micros(start), *params]).fetchall())


def _scope(prefix: str | None) -> tuple[str, list]:
    clause, params = prefixed("org_unit", prefix) if prefix else ("", [])
    return (f"AND {clause}" if clause else ""), params
