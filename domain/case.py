"""The service case: one need of one person, from intake to closure.

Public command methods check the rules of the case's kind and then trigger a
past-tense event; the events' `apply` only changes state. Every event carries
its actor. Personal values (free text about the person, a certificate number)
travel in each event's `personal` field, kept apart so that they can be
encrypted with the person's own key; no event copies the person's identity.
"""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as LibrarySnapshot

from domain.actor import Actor, check_staff_id
from domain.clock import check_moment, end_of_day_after, local
from domain.contract import Contract
from domain.errors import (
    CaseIsClosed,
    CaseNotClosed,
    CaseNotOnHold,
    CaseOnHold,
    CommandRefused,
    InvalidInput,
    PersonErased,
    StepNotAllowed,
    a_or_an,
)
from domain.fields import clean_text, parse_payload
from domain.kinds import CATEGORIES, KINDS, CaseKind, Step
from domain.orgs import OrgTree
from domain.roster import Roster

SERVICE_MODES = ("centralised", "door_to_door", "proxy")
PRIORITIES = ("normal", "high", "urgent")
OUTCOMES = ("served", "withdrawn", "refused", "transferred")
OPEN, ON_HOLD, CLOSED = "open", "on_hold", "closed"
_STEP_VALUE = "step:"  # a snapshot's name for a personal value given in a step


class ServiceCase(Aggregate):
    class Snapshot(LibrarySnapshot):
        """The case's state at a version, so that a long case is read without replaying it all.

        The personal values (the need, and those given in steps) travel in `personal`, which the
        store seals under the person's key as it does an event's: erasing the person leaves none of
        them readable in a snapshot either, and a snapshot read after erasure holds None for each,
        as a replay of the events would.
        """

        person: UUID
        personal: dict

        @classmethod
        def take(cls, case: "ServiceCase") -> "ServiceCase.Snapshot":
            # The library's own snapshot (state, class version), then the personal values moved out of its state.
            taken = LibrarySnapshot.take(case)
            state = {k: v for k, v in taken.state.items() if k not in ("need", "personal")}
            personal = {"need": case.need, **{_STEP_VALUE + name: v for name, v in case.personal.items()}}
            return cls(originator_id=taken.originator_id, originator_version=taken.originator_version,
                       timestamp=taken.timestamp, topic=taken.topic, state=state, person=case.client_id,
                       personal=personal)

        def mutate(self, _: None) -> "ServiceCase":
            case = super().mutate(None)
            case.__dict__.setdefault("referred_on", {})  # not kept before 2026-11-29: days unknown
            case.__dict__.setdefault("closed_at", None)  # not kept before 2026-11-30: unknown for a closed case
            case.need = self.personal["need"]
            case.personal = {name.removeprefix(_STEP_VALUE): v for name, v in self.personal.items()
                             if name.startswith(_STEP_VALUE)}
            # A snapshot taken before some step values were declared personal holds them among the
            # details: they become personal values, unreadable where the sealed ones are (the need is
            # None only when the person was erased, or for a reader without keys).
            for name in _MADE_PERSONAL_NAMES & case.details.keys():
                value = case.details.pop(name)
                case.personal.setdefault(name, value if case.need is not None else None)
            return case

    class CaseOpened(Aggregate.Created):
        actor: dict
        kind: str
        client_id: UUID
        org_unit: str
        service_mode: str | None
        priority: str
        personal: dict

    class CaseEvent(Aggregate.Event):
        actor: dict

    class PersonalEvent(CaseEvent):
        """An event with values about the person: sealed with `person`'s own key when stored."""

        person: UUID
        personal: dict

    class CaseAssigned(CaseEvent):
        assignee: str

        def apply(self, case: "ServiceCase") -> None:
            case.assignee = self.assignee

    class NoteAdded(PersonalEvent):

        def apply(self, case: "ServiceCase") -> None:
            case.notes += 1

    class VisitRecorded(PersonalEvent):
        mode: str
        visited_at: str

        def apply(self, case: "ServiceCase") -> None:
            case.visits += 1

    class CasePutOnHold(PersonalEvent):

        def apply(self, case: "ServiceCase") -> None:
            case.status = ON_HOLD
            case.held_at = self.timestamp

    class CaseResumed(PersonalEvent):

        def apply(self, case: "ServiceCase") -> None:
            if case.due_at is not None:
                case.due_at += self.timestamp - case.held_at
            case.status = OPEN
            case.held_at = None

    class CaseClosed(PersonalEvent):
        outcome: str

        def apply(self, case: "ServiceCase") -> None:
            case._close(self.outcome, reopens_to=case.stage, at=self.timestamp)

    class CaseReopened(PersonalEvent):
        stage: str

        def apply(self, case: "ServiceCase") -> None:
            case.status = OPEN
            case.outcome = None
            case.closed_at = None
            case._enter(self.stage, self.timestamp)

    class CaseReferred(CaseEvent):
        contract_id: UUID
        provider: str

        def apply(self, case: "ServiceCase") -> None:
            case.referrals[str(self.contract_id)] = self.provider
            case.referred_on[str(self.contract_id)] = local(self.timestamp).date().isoformat()

    class StepTaken(PersonalEvent):
        """Base of every kind's step events; subclasses are made from the declarations."""

        step: str
        stage: str
        outcome: str | None
        facts: dict

        def apply(self, case: "ServiceCase") -> None:
            case.details.update(self.facts)
            case.personal.update(self.personal)
            from_stage = case.stage
            case._enter(self.stage, self.timestamp)
            if self.outcome is not None:
                case._close(self.outcome, reopens_to=from_stage, at=self.timestamp)

    def __init__(
        self,
        actor: dict,
        kind: str,
        client_id: UUID,
        org_unit: str,
        service_mode: str | None,
        priority: str,
        personal: dict,
    ):
        self.kind = kind
        self.client_id = client_id
        self.org_unit = org_unit
        self.service_mode = service_mode
        self.priority = priority
        self.opened_by = actor["user"]
        self.assignee: str | None = None
        self.status = OPEN
        self.outcome: str | None = None
        self.details: dict[str, Any] = {}
        self.need = personal.get("need")  # None once the person's data is erased
        self.personal: dict[str, Any] = {}  # personal values given in steps
        self.notes = 0
        self.visits = 0
        self.held_at: datetime | None = None
        self.reopens_to: str | None = None
        self.closed_at: datetime | None = None
        self.referrals: dict[str, str] = {}  # contract id → provider
        self.referred_on: dict[str, str] = {}  # contract id → the day (Shanghai) it was referred
        self.stage = ""
        self.due_at: datetime | None = None
        self._enter(self.declaration.first_stage.name, self.created_on)

    def __deepcopy__(self, memo: dict) -> "ServiceCase":
        """A copy to act on (the repository copies a cached case for every command and read): its
        dicts and lists copied, their values shared. That is as safe as a deep copy because no value
        inside is ever changed in place: events set or replace entries, and the values themselves
        (text, numbers, moments, ids, the facts of a step) are never mutated."""
        copy = object.__new__(type(self))
        copy.__dict__.update({name: value.copy() if type(value) in (dict, list) else value
                              for name, value in self.__dict__.items()})
        return copy

    # -- commands ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        actor: Actor,
        kind: str,
        client_id: UUID,
        org_unit: str,
        need: str,
        service_mode: str | None = None,
        priority: str | None = None,
    ) -> "ServiceCase":
        priority = "normal" if priority is None else priority
        if kind not in KINDS:
            raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
        if service_mode is not None and service_mode not in SERVICE_MODES:
            raise InvalidInput("service_mode", f"must be one of {', '.join(SERVICE_MODES)}")
        if priority not in PRIORITIES:
            raise InvalidInput("priority", f"must be one of {', '.join(PRIORITIES)}")
        return cls._create(
            cls.CaseOpened,
            actor=actor.as_dict(),
            kind=kind,
            client_id=client_id,
            org_unit=org_unit,
            service_mode=service_mode,
            priority=priority,
            personal={"need": _text("need", need)},
        )

    def assign(self, actor: Actor, assignee: str, roster: Roster | None = None) -> None:
        """`roster`: who may work cases where (domain/roster.py); without one, any staff user id."""
        check_staff_id("assignee", assignee)
        self._require_not_closed()
        if assignee == self.assignee:
            raise CommandRefused(f"the case is already assigned to {assignee}")
        if roster is not None:
            roster.check_assignee(assignee, self.org_unit)
        self.trigger_event(self.CaseAssigned, actor=actor.as_dict(), assignee=assignee)

    def add_note(self, actor: Actor, text: str) -> None:
        self._record(self.NoteAdded, actor, {"text": _text("text", text)})

    def record_visit(self, actor: Actor, mode: str, visited_at: datetime, summary: str) -> None:
        self._require_not_closed()
        if mode not in SERVICE_MODES:
            raise InvalidInput("mode", f"must be one of {', '.join(SERVICE_MODES)}")
        if visited_at.tzinfo is None:
            raise InvalidInput("visited_at", "must carry a UTC offset, e.g. +08:00")
        if visited_at > datetime.now(timezone.utc) + timedelta(minutes=5):
            raise InvalidInput("visited_at", "must not be in the future")
        check_moment("visited_at", visited_at)
        self._record(self.VisitRecorded, actor, {"summary": _text("summary", summary)},
                     mode=mode, visited_at=visited_at.isoformat())

    # The reason is checked first: a request missing it is wrong whatever the case's status (422, not 409).
    def put_on_hold(self, actor: Actor, reason: str | None, erased: bool = False) -> None:
        personal = _reason(reason, erased)
        self._require_open()
        self._record(self.CasePutOnHold, actor, personal)

    def resume(self, actor: Actor, reason: str | None, erased: bool = False) -> None:
        personal = _reason(reason, erased)
        if self.status != ON_HOLD:
            raise CaseNotOnHold(f"the case is {self.status}, not on hold")
        self._record(self.CaseResumed, actor, personal)

    def close(self, actor: Actor, outcome: str, reason: str | None = None) -> None:
        if outcome not in OUTCOMES:
            raise InvalidInput("outcome", f"must be one of {', '.join(OUTCOMES)}")
        self._require_not_closed()
        if outcome == "served" and self.stage not in self.declaration.serves_from:
            raise CommandRefused(
                f"{a_or_an(self.kind)} case can be closed as served only from "
                f"{', '.join(self.declaration.serves_from) or 'its own closing step'}; it is at {self.stage}"
            )
        personal = {"reason": _text("reason", reason)} if reason is not None else {}
        self._record(self.CaseClosed, actor, personal, outcome=outcome)

    def reopen(self, actor: Actor, reason: str | None, erased: bool = False) -> None:
        personal = _reason(reason, erased)
        if self.status != CLOSED:
            raise CaseNotClosed(f"the case is {self.status}, not closed")
        self._record(self.CaseReopened, actor, personal, stage=self.reopens_to)

    def refer(self, actor: Actor, contract: Contract, tree: OrgTree, today: date) -> None:
        """Refers the case to a purchased-service contract that covers its kind, unit and day."""
        self._require_not_closed()
        if str(contract.id) in self.referrals:
            raise CommandRefused("the case is already referred to this contract")
        if contract.service_kind != self.kind:
            raise CommandRefused(f"the contract is for {contract.service_kind} cases, not {self.kind}")
        if not any(tree.covers(unit, self.org_unit) for unit in contract.org_units):
            raise CommandRefused(f"the contract does not cover org unit {self.org_unit}")
        if not contract.covers_day(today):
            raise CommandRefused(f"the contract runs from {contract.starts_on} to {contract.ends_on}")
        self.trigger_event(self.CaseReferred, actor=actor.as_dict(), contract_id=contract.id,
                           provider=contract.provider)

    def take_step(self, actor: Actor, step_name: str, payload: Any, id_number: str | None = None) -> None:
        """Takes a step of the case's kind; `id_number` is needed to check a certificate number."""
        step = self.declaration.step(step_name)
        if step is None:
            raise InvalidInput("step", f"{a_or_an(self.kind)} case has no step {step_name!r}")
        self._require_open()
        if not step.allowed_from(self.stage):
            raise StepNotAllowed(f"{step_name} is not allowed from stage {self.stage}")
        values = parse_payload(step.fields, payload)
        if "certificate_number" in values:
            self._check_certificate_number(values["certificate_number"], id_number)
        if step.name == "approve_budget":
            self._check_within_quote(values["approved_amount"])
        personal_names = {f.name for f in step.fields if f.personal}
        self._record(
            step_event(step), actor, {k: v for k, v in values.items() if k in personal_names},
            step=step.name, stage=step.to_stage, outcome=step.closes_with,
            facts={k: v for k, v in values.items() if k not in personal_names},
        )

    def _record(self, event_class: type, actor: Actor, personal: dict, **facts: Any) -> None:
        self.trigger_event(event_class, actor=actor.as_dict(), person=self.client_id, personal=personal, **facts)

    # -- rules ------------------------------------------------------------

    @property
    def declaration(self) -> CaseKind:
        return KINDS[self.kind]

    def _require_not_closed(self) -> None:
        if self.status == CLOSED:
            raise CaseIsClosed("the case is closed; reopen it first")

    def _require_open(self) -> None:
        self._require_not_closed()
        if self.status == ON_HOLD:
            raise CaseOnHold("the case is on hold; resume it first")

    def _check_certificate_number(self, number: str, id_number: str | None) -> None:
        """`id_number` is None once the person's data was erased: no number can be checked, or issued."""
        if id_number is None:
            raise PersonErased("the person's data was erased: no certificate number can be checked against "
                               "their ID number")
        category = self.details["category"]
        expected_suffix = f"{CATEGORY_DIGITS[category]}{self.details['grade']}"
        if number[:18] != id_number or number[18:] != expected_suffix:
            raise InvalidInput(
                "certificate_number",
                f"must be the person's ID number followed by {expected_suffix} "
                f"(category {category}, grade {self.details['grade']})",
            )

    def _check_within_quote(self, amount: str) -> None:
        if Decimal(amount) > Decimal(self.details["quote"]):
            raise CommandRefused(f"the approved amount exceeds the quote of {self.details['quote']} yuan")

    # -- state changes (called from events only) --------------------------

    def _enter(self, stage: str, at: datetime) -> None:
        self.stage = stage
        days = self.declaration.stage(stage).days
        self.due_at = None if days is None else end_of_day_after(at, days)

    def _close(self, outcome: str, reopens_to: str, at: datetime) -> None:
        self.status = CLOSED
        self.closed_at = at
        self.outcome = outcome
        self.due_at = None
        self.held_at = None
        self.reopens_to = reopens_to


CATEGORY_DIGITS = {name: i + 1 for i, name in enumerate(CATEGORIES)}


def _text(field: str, value: Any) -> str:
    return clean_text(field, value, 4000)


def _reason(reason: str | None, erased: bool) -> dict:
    """The personal part of a hold, a resumption or a reopening: its reason, required while the
    person's data exists; none once it was erased, for a reason may speak of them (and the case's
    facts must still be able to move: a held case resumed, a closed one reopened)."""
    if erased:
        if reason is not None:
            raise PersonErased("the person's data was erased: a reason, which may speak of them, can no longer "
                               "be recorded; send none")
        return {}
    if reason is None:
        raise InvalidInput("reason", "is required")
    return {"reason": _text("reason", reason)}


# Step values declared personal after events had stored them as plain facts (before 2026-11-29; the
# counsellor matched, before 2026-12-08): such an event (version 1) is read back with them among its
# personal values, to be withheld and erased as the declaration now says. (What they were stored as
# stays as it was: events are never rewritten.) Every free-text step value is personal now: whatever
# a field is meant for, a case worker may write a name, an ID number or a phone number into it.
MADE_PERSONAL = {"ModificationQuoted": ("items",), "TraineeEnrolled": ("course",),
                 "CounsellorMatched": ("counsellor", "provider")}
_MADE_PERSONAL_NAMES = {name for names in MADE_PERSONAL.values() for name in names}


def _made_personal(names: tuple[str, ...]) -> staticmethod:
    def upcast_v1_v2(state: dict) -> None:
        facts = state["facts"]
        state["personal"] = {**state["personal"], **{name: facts.pop(name) for name in names if name in facts}}

    return staticmethod(upcast_v1_v2)


def _make_step_events() -> dict[str, type]:
    """One event class per declared step, named by the step's fact."""
    events: dict[str, type] = {}
    for kind in KINDS.values():
        for step in kind.steps:
            if step.event in events or hasattr(ServiceCase, step.event):
                raise TypeError(f"step event {step.event} is declared twice")
            upcasts = {"class_version": 2, "upcast_v1_v2": _made_personal(MADE_PERSONAL[step.event])} \
                if step.event in MADE_PERSONAL else {}
            cls = type(step.event, (ServiceCase.StepTaken,), {
                "__module__": __name__,
                "__qualname__": f"ServiceCase.{step.event}",
                **upcasts,
            })
            setattr(ServiceCase, step.event, cls)
            events[step.event] = cls
    return events


_STEP_EVENTS = _make_step_events()


def step_event(step: Step) -> type:
    return _STEP_EVENTS[step.event]
