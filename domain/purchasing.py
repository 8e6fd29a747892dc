"""Use cases of purchased services: contracts, referrals, deliveries, reviews, statements.

A mixin of the LastMeter application, kept apart so that each module has one job.
"""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple
from uuid import UUID

from domain.actor import Actor
from domain.case import CLOSED, ServiceCase
from domain.clock import local, read_day, today
from domain.commands import Idempotency, Outcome, Written, check_version
from domain.contract import Contract, Delivery, DuplicateDelivery, PaymentStatement, payable_in
from domain.errors import CommandRefused, InvalidInput, NotFound

_SLASHED = re.compile(r"([0-9]{4})/([0-9]{1,2})/([0-9]{1,2})")  # 2026/11/30, 2026/1/5


class Window(NamedTuple):
    """The days a delivery for a case may be on (see PurchasedServices._window)."""

    referred_on: date | None = None  # None: not referred to the contract
    closed_on: date | None = None  # None: not closed


UPGRADE = Actor("lastmeter-upgrade", "admin")  # who records what an upgrade finds the log lacks


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery as a contractor reports it (a request body, or a spreadsheet row)."""

    case_id: Any
    delivered_on: Any
    units: Any
    reference: Any


@dataclass(frozen=True)
class RowResult:
    row: int
    result: str  # one of RESULTS
    reference: str | None
    delivery_id: str | None = None
    reason: str | None = None


RESULTS = ("recorded", "duplicate", "refused")


def tally(results: list[RowResult]) -> dict[str, int]:
    """How many rows of an import had each result."""
    return {name: sum(r.result == name for r in results) for name in RESULTS}


class PurchasedServices:
    """Mixed into LastMeter: relies on its command loop (_run, _retrying, update_case), its reads (_get,
    get_case, recorded, events), its org tree (org_tree, check_org_unit) and was_erased."""

    def create_contract(self, actor: Actor, idem: Idempotency | None, org_units: list[str], **fields: Any):
        for i, unit in enumerate(org_units):
            self.check_org_unit(f"org_units[{i}]", unit)
        return self._run(idem, "contract", 201, lambda: Contract.create(actor, org_units=org_units, **fields))

    def get_contract(self, contract_id: UUID, version: int | None = None) -> Contract:
        return self._get(contract_id, Contract, "contract", version)

    def refer_case(self, actor: Actor, idem: Idempotency | None, case_id: UUID, expected: int | None,
                   contract_id: UUID, guard: Callable[[ServiceCase], None] | None = None):
        contract = self.get_contract(contract_id)
        tree = self.org_tree()
        return self.update_case(idem, case_id, expected, lambda case: case.refer(actor, contract, tree, today()),
                                guard)

    def report_delivery(self, actor: Actor, idem: Idempotency | None, contract_id: UUID, row: DeliveryRow,
                        expected: int | None = None):
        """Records one delivery; a reference already recorded answers the first answer again, whatever
        If-Match names (a phone re-sending its report after a timeout sends the version it had)."""

        def attempt() -> Outcome | Written:
            contract = self.get_contract(contract_id)
            if contract.delivery_by(row.reference) is None:  # sent again, it answers as a receipt does
                check_version(contract.version, expected)
            try:
                return Outcome(contract, self._record_row(actor, contract, row))
            except DuplicateDelivery as duplicate:  # the first answer; under a key, the key is bound to it
                return self._delivery_written(contract_id, contract.deliveries[duplicate.delivery_id])

        return self._run(idem, "delivery", 201, attempt)

    def import_deliveries(self, actor: Actor, idem: Idempotency | None, contract_id: UUID,
                          rows: dict[int, DeliveryRow], expected: int | None = None) -> tuple[Written, list[RowResult]]:
        """Records every acceptable row (by its number in the file) in one transaction; answers each row.
        If-Match applies only to an import that records a row: one re-sent after a timeout finds each
        of its rows recorded, and answers them as duplicates.

        A repeat under the same Idempotency-Key answers as the first time, from the results its
        receipt keeps: judged again, a row refused as not yet referred, or dated tomorrow, would now
        read "recorded" though nothing was. A receipt from before results were kept (2026-11-30) has
        its rows judged again against the contract as it stood before the first import.
        """

        def attempt() -> Outcome:
            contract = self.get_contract(contract_id)
            since = contract.version
            # Not the references: one refused as malformed may be anything (a name in a shifted column),
            # and the receipt is not sealed. A replay comes with the same file, and takes them from it.
            kept = [(r.row, r.result, r.delivery_id, r.reason) for r in self._judge(actor, contract, rows)]
            if contract.version != since:  # If-Match guards what it records: recording nothing, it changes nothing
                check_version(since, expected)
            return Outcome(contract, since=since, answer=kept)

        written = self._run(idem, "import", 200, attempt)
        if written.answer is None:  # a replay under a receipt that kept no results
            return written, self._judge(actor, self.get_contract(contract_id, written.since), rows)
        # A row the file no longer has as read now (before 2026-11-30 an XLSX row was read as wide as
        # its cells, a note beside the columns made it a row) is answered as kept, with no reference.
        return written, [RowResult(row, result, _reference(rows[row]) if row in rows else None, delivery, reason)
                         for row, result, delivery, reason in written.answer]

    def _judge(self, actor: Actor, contract: Contract, rows: dict[int, DeliveryRow]) -> list[RowResult]:
        windows: dict[Any, Window] = {}  # case id → its window (see _window), looked up once per import
        return [self._import_row(actor, contract, number, row, windows) for number, row in rows.items()]

    def review_delivery(self, actor: Actor, idem: Idempotency | None, contract_id: UUID, delivery: UUID,
                        expected: int | None, accepted: bool, reason: str | None,
                        may_review: Callable[[ServiceCase], None]):
        def attempt() -> Outcome:
            contract = self.get_contract(contract_id)
            check_version(contract.version, expected)
            found = contract.deliveries.get(delivery)
            if found is None:
                raise NotFound(f"delivery {delivery} not found")
            case = self.get_case(found.case_id)
            may_review(case)
            contract.review(actor, delivery, accepted, reason, case.client_id, self.was_erased(case.client_id))
            return Outcome(contract, delivery)

        return self._run(idem, "delivery", 200, attempt)

    def issue_statement(self, actor: Actor, idem: Idempotency | None, contract_id: UUID, period: str,
                        expected: int | None = None):
        def attempt() -> Outcome:
            contract = self.get_contract(contract_id)
            check_version(contract.version, expected)
            return Outcome(PaymentStatement.issue(actor, contract, period), also=(contract,))

        return self._run(idem, "statement", 201, attempt)

    def mark_unmarked_statements(self) -> None:
        """Marks on its contract what each statement issued before 2026-11-30 listed (every accepted
        delivery of its month, at its version), which it did not mark itself: without the mark, the
        next statement for that month would list them all again. Each contract's log is read once,
        and a statement marked already is passed over, so a pass cut short may run again."""
        unmarked: dict[UUID, list[Any]] = {}
        for issued in self.recorded(PaymentStatement.StatementIssued):
            if issued.follows is None:  # one issued since marked its own
                unmarked.setdefault(issued.contract_id, []).append(issued)
        for contract_id, statements in unmarked.items():
            def attempt(contract_id: UUID = contract_id,
                        statements: list[Any] = statements) -> tuple[list[Contract], None]:
                contract = self.get_contract(contract_id)
                todo: dict[int, list[Any]] = {}  # by the version each was issued at: several may share one
                for s in statements:
                    if s.originator_id not in contract.statements.get(s.period, ()):
                        todo.setdefault(s.contract_version, []).append(s)
                for at, statement in self._as_issued(contract.id, todo):
                    listed = [d.id for d in at.deliveries.values() if payable_in(d, statement.period)]
                    contract.mark_stated(UPGRADE, statement.originator_id, statement.period, listed)
                return [contract], None

            self._retrying(attempt)

    def _as_issued(self, contract_id: UUID, statements: dict[int, list[Any]]) -> Iterator[tuple[Contract, Any]]:
        """(the contract as it stood, the statement) for each statement issued at a version of it, in
        one reading of its log."""
        contract = None
        for event in self.events.get(contract_id, lte=max(statements, default=0)):
            contract = event.mutate(contract)
            for statement in statements.get(contract.version, ()):
                yield contract, statement

    def get_statement_by_id(self, statement_id: UUID) -> tuple[PaymentStatement, Contract]:
        """The statement, and its contract as it stood when the statement was frozen."""
        statement = self._get(statement_id, PaymentStatement, "statement")
        return statement, self.get_contract(statement.contract_id, statement.contract_version)

    # -- rows -------------------------------------------------------------

    def _record_row(self, actor: Actor, contract: Contract, row: DeliveryRow,
                    windows: dict[Any, Window] | None = None) -> UUID:
        case_id, delivered_on = _uuid("case_id", row.case_id), _day("delivered_on", row.delivered_on)
        windows = {} if windows is None else windows
        if case_id not in windows:
            windows[case_id] = self._window(case_id, contract)
        window = windows[case_id]
        return contract.report_delivery(actor, case_id, delivered_on, row.units, row.reference,
                                        window.referred_on, today(), window.closed_on)

    def _window(self, case_id: UUID, contract: Contract) -> Window:
        """The days the case may be served under the contract: from the day it was referred (None if it
        was not) to the day it was closed (None while it is not)."""
        try:
            case = self.get_case(case_id)
        except NotFound:
            return Window()
        key = str(contract.id)
        if key not in case.referrals:
            return Window()
        # A case read from a snapshot taken before referral days (2026-11-29) or closing moments
        # (2026-11-30) were kept lacks them: the replay of its log has them.
        if key not in case.referred_on or (case.status == CLOSED and case.closed_at is None):
            case = self.get_case(case_id, from_log=True)
        closed_on = local(case.closed_at).date() if case.status == CLOSED else None
        return Window(date.fromisoformat(case.referred_on[key]), closed_on)

    def _import_row(self, actor: Actor, contract: Contract, number: int, row: DeliveryRow,
                    windows: dict[Any, Window]) -> RowResult:
        reference = _reference(row)
        try:
            return RowResult(number, "recorded", reference, str(self._record_row(actor, contract, row, windows)))
        except DuplicateDelivery as duplicate:
            return RowResult(number, "duplicate", reference, str(duplicate.delivery_id))
        except InvalidInput as error:
            return RowResult(number, "refused", reference, reason=f"{error.field}: {error.reason}")
        except CommandRefused as error:
            return RowResult(number, "refused", reference, reason=str(error))

    def _delivery_written(self, contract_id: UUID, delivery: Delivery) -> Written:
        return Written("delivery", contract_id, delivery.recorded_version, 201, None, replayed=True,
                       item=delivery.id)


def _reference(row: DeliveryRow) -> str | None:
    return row.reference if isinstance(row.reference, str) else None


def _uuid(field: str, value: Any) -> UUID:
    try:
        return value if isinstance(value, UUID) else UUID(str(value).strip())
    except ValueError:
        raise InvalidInput(field, "must be a case id (UUID)") from None


def _day(field: str, value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    slashed = _SLASHED.fullmatch(text)
    if slashed:  # as a spreadsheet set to Chinese saves a day in CSV: every row of such a file was refused
        text = f"{slashed[1]}-{int(slashed[2]):02d}-{int(slashed[3]):02d}"
    return read_day(field, text)
