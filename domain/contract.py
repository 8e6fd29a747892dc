"""Government purchased-service contracts (政府购买服务) and the deliveries reported under them.

A contract's deliveries are events of the contract itself, so its budget is
an invariant kept by optimistic concurrency: two deliveries racing for the
last yuan cannot both be recorded. A contractor's report reference is the
natural key of a delivery: a delivery's id is derived from contract and
reference, and a re-sent report finds the first.
"""

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import Actor
from domain.client import is_id_number
from domain.clock import check_day, check_month
from domain.errors import CommandRefused, InvalidInput, PersonErased
from domain.fields import clean_text, parse_money
from domain.kinds import KINDS

UNITS = ("session", "hour", "household", "device")
PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"
_REFERENCE = re.compile(r"[\x21-\x7e]{1,64}")
PROVIDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGIT_RUN = re.compile(r"[0-9]+[Xx]?")
# Digits standing as words of their own (not inside a word of letters too: a hex serial may hold 11
# digits of a mobile's shape), perhaps in groups: 138-1234-5678, (138)1234-5678, 0086.138.1234.5678.
_SEPARATOR = "-._/:()+#"
_DIGIT_GROUPS = re.compile(rf"(?<![0-9A-Za-z])[0-9]+(?:[{re.escape(_SEPARATOR)}]+[0-9]+)*(?![0-9A-Za-z])")
_SEPARATORS = re.compile(rf"[{re.escape(_SEPARATOR)}]+")
_MOBILE = re.compile(r"((00)?86)?1[3-9][0-9]{9}")
_MOBILE_GROUPS = (3, 4, 4)  # how a mobile is written in groups; other groupings join dates and codes into one


def holds_contact_or_id(text: str) -> bool:
    """Whether `text` holds a resident ID number (a run of 18 digits, or of 20 where a certificate
    number's category and grade follow it) or a mainland mobile number (11 digits standing as a word
    of their own, or written 3-4-4): what contractors key their own records by. Grouped digits are
    joined only in a mobile's grouping: a site code, a date and a sequence number joined would make
    an ID number of every eleven, and a date and a sequence a mobile of some."""
    for run in (r.upper() for r in _DIGIT_RUN.findall(text)):
        if is_id_number(run) or (len(run) == 20 and is_id_number(run[:18]) and run[18] in "1234567"
                                 and run[19] in "1234"):
            return True
    for span in _DIGIT_GROUPS.findall(text):
        groups = [g for g in _SEPARATORS.split(span) if g]
        if any(_MOBILE.fullmatch(g) for g in groups):
            return True
        if any(tuple(map(len, groups[i:i + 3])) == _MOBILE_GROUPS and _MOBILE.fullmatch("".join(groups[i:i + 3]))
               for i in range(len(groups) - 2)):
            return True
    return False


def check_provider(field: str, provider: Any) -> str:
    if not isinstance(provider, str) or not PROVIDER.fullmatch(provider):
        raise InvalidInput(field, "must be a provider id: letters, digits, '.', '_' or '-', at most 64")
    return provider


CENT = Decimal("0.01")


class DuplicateDelivery(Exception):
    """The contract already has a delivery with this reference."""

    def __init__(self, delivery_id: UUID):
        super().__init__(str(delivery_id))
        self.delivery_id = delivery_id


@dataclass
class Delivery:
    id: UUID
    reference: str
    case_id: UUID
    delivered_on: str
    units: int
    amount: Decimal
    recorded_version: int  # the contract's version that recorded it: its first answer
    status: str = PENDING
    reason: str | None = None  # why it was rejected: None once the person it may speak of was erased
    person: UUID | None = None  # whose key seals the reason (None: rejected before reasons were sealed)
    statement: UUID | None = None  # the payment statement that lists it (None: on none since 2026-11-30)


def delivery_id(contract_id: UUID, reference: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"lastmeter:delivery:{contract_id}:{reference}")


class Contract(Aggregate):
    class ContractCreated(Aggregate.Created):
        actor: dict
        provider: str
        service_kind: str
        unit: str
        unit_price: str
        budget: str
        starts_on: str
        ends_on: str
        org_units: list

    class DeliveryReported(Aggregate.Event):
        actor: dict
        delivery_id: UUID
        reference: str
        case_id: UUID
        delivered_on: str
        units: int
        amount: str

        def apply(self, contract: "Contract") -> None:
            delivery = Delivery(self.delivery_id, self.reference, self.case_id, self.delivered_on, self.units,
                                Decimal(self.amount), self.originator_version)
            contract.deliveries[self.delivery_id] = delivery
            contract.committed += delivery.amount

    class DeliveryAccepted(Aggregate.Event):
        actor: dict
        delivery_id: UUID

        def apply(self, contract: "Contract") -> None:
            contract.deliveries[self.delivery_id].status = ACCEPTED

    class DeliveryRejected(Aggregate.Event):
        """The reason may speak of the person served (in hospital, moved away): it travels in
        `personal`, sealed with the key of `person`, the case's client."""

        class_version = 2
        actor: dict
        delivery_id: UUID
        person: UUID | None
        personal: dict

        @staticmethod
        def upcast_v1_v2(state: dict) -> None:
            """Version 1 kept the reason as a plain fact, with no person to seal it for."""
            state["person"], state["personal"] = None, {"reason": state.pop("reason")}

        def apply(self, contract: "Contract") -> None:
            delivery = contract.deliveries[self.delivery_id]
            delivery.status, delivery.reason, delivery.person = REJECTED, self.personal.get("reason"), self.person
            contract.committed -= delivery.amount

    class DeliveriesStated(Aggregate.Event):
        """A payment statement listed these accepted deliveries: no later statement lists them again."""

        actor: dict
        statement_id: UUID
        period: str
        deliveries: list

        def apply(self, contract: "Contract") -> None:
            for delivery in self.deliveries:  # the first to list it, where statements of old both did
                if contract.deliveries[delivery].statement is None:
                    contract.deliveries[delivery].statement = self.statement_id
            contract.statements.setdefault(self.period, []).append(self.statement_id)

    def __init__(self, actor: dict, provider: str, service_kind: str, unit: str, unit_price: str, budget: str,
                 starts_on: str, ends_on: str, org_units: list):
        self.provider, self.service_kind, self.unit = provider, service_kind, unit
        self.unit_price, self.budget = Decimal(unit_price), Decimal(budget)
        self.starts_on, self.ends_on = starts_on, ends_on
        self.org_units = list(org_units)
        self.created_by = actor["user"]
        self.deliveries: dict[UUID, Delivery] = {}
        self.committed = Decimal("0.00")  # pending and accepted amounts: what the budget is spoken for
        self.statements: dict[str, list[UUID]] = {}  # period → the statements that listed its deliveries

    @classmethod
    def create(cls, actor: Actor, provider: str, service_kind: str, unit: str, unit_price: Any, budget: Any,
               starts_on: date, ends_on: date, org_units: list[str]) -> "Contract":
        if service_kind not in KINDS:
            raise InvalidInput("service_kind", f"must be one of {', '.join(KINDS)}")
        if unit not in UNITS:
            raise InvalidInput("unit", f"must be one of {', '.join(UNITS)}")
        price, total = parse_money(None, unit_price, "unit_price"), parse_money(None, budget, "budget")
        if Decimal(price) <= 0:
            raise InvalidInput("unit_price", "must be more than 0")
        if Decimal(total) <= 0:
            raise InvalidInput("budget", "must be more than 0")
        check_day("starts_on", starts_on)
        check_day("ends_on", ends_on)
        if ends_on < starts_on:
            raise InvalidInput("ends_on", "must not be before starts_on")
        if not org_units or len(set(org_units)) != len(org_units):
            raise InvalidInput("org_units", "must list at least one org unit, each once")
        return cls._create(cls.ContractCreated, actor=actor.as_dict(), provider=check_provider("provider", provider),
                           service_kind=service_kind, unit=unit, unit_price=price, budget=total,
                           starts_on=starts_on.isoformat(), ends_on=ends_on.isoformat(), org_units=list(org_units))

    # -- figures ------------------------------------------------------------

    def total(self, *statuses: str) -> tuple[int, Decimal]:
        chosen = [d for d in self.deliveries.values() if d.status in statuses]
        return sum(d.units for d in chosen), sum((d.amount for d in chosen), Decimal("0.00"))

    @property
    def remaining(self) -> Decimal:
        return self.budget - self.committed

    def delivery_by(self, reference: Any) -> Delivery | None:
        """The delivery recorded under this contractor's reference, if any."""
        return self.deliveries.get(delivery_id(self.id, reference)) if isinstance(reference, str) else None

    def covers_day(self, day: date) -> bool:
        return self.starts_on <= day.isoformat() <= self.ends_on

    # -- commands -----------------------------------------------------------

    def report_delivery(self, actor: Actor, case_id: UUID, delivered_on: date, units: int, reference: str,
                        referred_on: date | None, today: date, closed_on: date | None = None) -> UUID:
        """Records a delivery, or raises DuplicateDelivery for a reference already recorded;
        `referred_on`: the day the case was referred to this contract (None: it was not); `closed_on`:
        the day the case was closed, if it is (a service after it is not paid for)."""
        if not isinstance(reference, str) or not _REFERENCE.fullmatch(reference):
            raise InvalidInput("reference", "must be 1-64 visible ASCII characters")
        if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= 100_000:
            raise InvalidInput("units", "must be a whole number from 1 to 100000")
        found = delivery_id(self.id, reference)
        if found in self.deliveries:
            self._check_resent(self.deliveries[found], case_id, delivered_on, units)
            raise DuplicateDelivery(found)
        if reference.startswith("'"):  # one recorded before this rule is still found above
            raise InvalidInput("reference", "must not begin with an apostrophe: a spreadsheet takes it for the "
                                            "mark of a text, and drops it")
        if holds_contact_or_id(reference):  # likewise
            raise InvalidInput("reference", "must not hold a resident ID number or a mobile number: a reference "
                                            "is kept as a plain fact, and would outlive the person's erasure (an "
                                            "unbroken run of 18 digits that could be an ID number counts as one: "
                                            "write its parts apart, with '-')")
        if delivered_on > today:
            raise InvalidInput("delivered_on", "must not be in the future")
        if not self.covers_day(delivered_on):
            raise CommandRefused(f"delivered on {delivered_on}, outside the contract's period "
                                 f"{self.starts_on} to {self.ends_on}")
        if referred_on is None:
            raise CommandRefused(f"case {case_id} is not referred to this contract")
        if delivered_on < referred_on:
            raise CommandRefused(f"delivered on {delivered_on}, before the case was referred to this contract "
                                 f"on {referred_on}")
        if closed_on is not None and delivered_on > closed_on:
            raise CommandRefused(f"delivered on {delivered_on}, after the case was closed on {closed_on}")
        amount = (self.unit_price * units).quantize(CENT)
        if amount > self.remaining:
            raise CommandRefused(f"{amount} yuan exceeds the {self.remaining} yuan left of the budget")
        self.trigger_event(self.DeliveryReported, actor=actor.as_dict(), delivery_id=found, reference=reference,
                           case_id=case_id, delivered_on=delivered_on.isoformat(), units=units, amount=str(amount))
        return found

    @staticmethod
    def _check_resent(first: Delivery, case_id: UUID, delivered_on: date, units: Any) -> None:
        """A reference is the contractor's idempotency key: sent again it must come with the same
        delivery, as an Idempotency-Key must come with the same body (else 422), so that a
        correction or a reference used twice by mistake is not answered as if it had been recorded."""
        sent = {"case_id": (first.case_id, case_id), "units": (first.units, units),
                "delivered_on": (first.delivered_on, delivered_on.isoformat())}
        differing = [f"{name} {was}" for name, (was, now) in sent.items() if was != now]
        if differing:
            raise InvalidInput("reference", "is already recorded on this contract for another delivery "
                                            f"({', '.join(differing)})")

    def mark_stated(self, actor: Actor, statement: UUID, period: str, deliveries: list[UUID]) -> None:
        """Records that the statement lists these deliveries (once: a statement marked is not again)."""
        if statement not in self.statements.get(period, ()):
            self.trigger_event(self.DeliveriesStated, actor=actor.as_dict(), statement_id=statement, period=period,
                               deliveries=deliveries)

    def review(self, actor: Actor, delivery: UUID, accepted: bool, reason: str | None, person: UUID,
               erased: bool = False) -> None:
        """Accepts or rejects a pending delivery; `person` is the client of the delivery's case.
        Once their data was `erased` a rejection records no reason: it may speak of them."""
        if accepted and reason is not None:  # an acceptance records none: it would be dropped unsaid
            raise InvalidInput("reason", "is only given with a rejection")
        found = self.deliveries.get(delivery)
        if found is None:
            raise InvalidInput("delivery_id", "no such delivery on this contract")
        if found.status != PENDING:
            raise CommandRefused(f"the delivery was already {found.status}")
        if accepted:
            self.trigger_event(self.DeliveryAccepted, actor=actor.as_dict(), delivery_id=delivery)
            return
        if erased and reason is not None:
            raise PersonErased("the personal data of the person served was erased: a reason, which may "
                               "speak of them, cannot be recorded; reject the delivery without one")
        if not erased and reason is None:
            raise InvalidInput("reason", "is required to reject a delivery")
        personal = {} if erased else {"reason": clean_text("reason", reason, 2000)}
        self.trigger_event(self.DeliveryRejected, actor=actor.as_dict(), delivery_id=delivery, person=person,
                           personal=personal)


class PaymentStatement(Aggregate):
    """A payment statement, frozen: it names the contract's version it was made from, and so the log
    position of that version's last event.

    It lists the month's accepted deliveries that no earlier statement listed, and marks them so on
    the contract in the same transaction: a delivery is paid once, however many statements are
    issued for its month (a later one is a supplement naming those it `follows`), and two issued at
    once cannot both list it. A statement issued before 2026-11-30 (`follows` None) listed every
    accepted delivery of its month and marked none.
    """

    class StatementIssued(Aggregate.Created):
        actor: dict
        contract_id: UUID
        period: str
        contract_version: int
        follows: list | None = None

    def __init__(self, actor: dict, contract_id: UUID, period: str, contract_version: int,
                 follows: list | None = None):
        self.contract_id, self.period, self.contract_version = contract_id, period, contract_version
        self.issued_by = actor["user"]
        self.follows = follows

    @classmethod
    def issue(cls, actor: Actor, contract: Contract, period: str) -> "PaymentStatement":
        """The statement; `contract` records which deliveries it lists (save both together)."""
        check_month("period", period)
        if not contract.starts_on[:7] <= period <= contract.ends_on[:7]:
            raise CommandRefused(f"the contract runs from {contract.starts_on} to {contract.ends_on}: "
                                 f"{period} is none of its months")
        earlier = list(contract.statements.get(period, ()))
        unstated = [d.id for d in contract.deliveries.values() if payable_in(d, period) and d.statement is None]
        if earlier and not unstated:
            raise CommandRefused(f"every accepted delivery of {period} is on a statement already: "
                                 f"{', '.join(map(str, earlier))}")
        if not unstated:  # a statement is never taken back: one of the wrong month would stand for good
            raise CommandRefused(f"no delivery accepted in {period} to state")
        statement_id = uuid4()
        contract.mark_stated(actor, statement_id, period, unstated)
        return cls._create(cls.StatementIssued, id=statement_id, actor=actor.as_dict(), contract_id=contract.id,
                           period=period, contract_version=contract.version, follows=earlier)

    def lists(self, delivery: Delivery) -> bool:
        """Whether the delivery (of the contract at this statement's version) is one of its lines."""
        if self.follows is None:
            return payable_in(delivery, self.period)
        return delivery.statement == self.id


def payable_in(delivery: Delivery, period: str) -> bool:
    """Accepted, and delivered in the month: what a statement issued before 2026-11-30 listed."""
    return delivery.status == ACCEPTED and delivery.delivered_on[:7] == period
