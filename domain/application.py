"""The lastmeter application: one method per use case.

Every command loads, acts and saves; it returns what was written (the
resource, its new version and the log position of the last event). A command
that loses a concurrency race is re-run on the newest state unless the caller
named the version it expected (If-Match). With an idempotency claim, a
receipt is saved in the same transaction as the command's events, so a
repeat finds the receipt and appends nothing, whatever crashed in between.
"""

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import ApplicationRecorder, IntegrityError
from eventsourcing.utils import get_topic

from domain.access import AccessToken, new_secret, token_id
from domain.actor import Actor
from domain.case import ServiceCase
from domain.client import Client, Disclosure, RegistrationTurns
from domain.commands import SHOWN_TO, Idempotency, Outcome, Written, check_version
from domain.errors import AlreadyRegistered, Contention, DomainError, IdempotencyKeyReused, NotFound, UnknownOrgUnit
from domain.orgs import OrgRegistry, OrgTree, OrgUnit, check_code
from domain.purchasing import PurchasedServices
from domain.receipt import CommandReceipt
from domain.roster import Roster
from domain.storage.application import StoredApplication
from domain.storage.groupcommit import Insert
from domain.storage.repository import fold

MAX_ATTEMPTS = 200

logger = logging.getLogger(f"lastmeter.{__name__}")  # under the logger `serve` configures


__all__ = ["Contention", "Idempotency", "LastMeter", "Written"]


class LastMeter(PurchasedServices, StoredApplication):
    name = "lastmeter"
    # A registration lot grows by a turn per person registered in it, and is read whole by the first
    # registration after each start: it is snapshotted as often as a case.
    snapshotted = (ServiceCase, RegistrationTurns)

    def __init__(self, env: dict[str, str] | None = None, mapper_factory: Callable[[Any], Any] | None = None,
                 erased: Callable[[UUID], bool] | None = None, identities: Any = None,
                 insert_for: Callable[[ApplicationRecorder], Insert] | None = None):
        """`erased` tells whether a person's data was erased, so no cached copy outlives it;
        `identities` (projections.identities.IdentityIndex) who is registered under an ID number;
        `mapper_factory` and `insert_for` as StoredApplication takes them."""
        self._erased = erased
        self.identities = identities
        super().__init__(env, mapper_factory, insert_for)
        self._orgs: OrgTree | None = None
        self.roster = Roster(self)
        self._revoked = itertools.count(1)  # next() on a count is atomic: no revocation goes uncounted
        self.revocations = 0  # tokens revoked through this application

    # -- org tree ---------------------------------------------------------

    def found(self) -> None:
        """Stores the built-in org tree once; safe to call from every process."""
        if OrgRegistry.ID not in self.repository:
            try:
                self.save(OrgRegistry.founded())
            except IntegrityError:
                pass  # another process founded it first

    def org_tree(self, refresh: bool = False) -> OrgTree:
        if self._orgs is None or refresh:
            self._orgs = self.repository.get(OrgRegistry.ID).tree()
        return self._orgs

    def check_org_unit(self, field: str, code: str) -> str:
        """The code, if the tree has it (reloading once: another process may have added it)."""
        check_code(field, code)
        if code not in self.org_tree() and code not in self.org_tree(refresh=True):
            raise UnknownOrgUnit(field, code)
        return code

    def add_org_units(self, actor: Actor, units: list[OrgUnit]) -> int:
        def attempt() -> tuple[list[Aggregate], int]:
            registry = self.repository.get(OrgRegistry.ID)
            return [registry], registry.add_units(units, actor)

        added = self._retrying(attempt)
        self.org_tree(refresh=True)
        return added

    # -- clients ----------------------------------------------------------

    def register_client(self, actor: Actor, idem: Idempotency | None,
                        duplicates: Callable[[Client], bool] = lambda registered: True, **fields: Any) -> Written:
        """Registers a person, unless `duplicates` says a person already registered under their ID
        number (and not erased) is the one to serve instead: AlreadyRegistered."""
        self.check_org_unit("org_unit", fields["org_unit"])
        client_id = uuid4()  # the same in every attempt: one row in the index, whatever the retries
        identities = self.identities
        if identities is not None:
            identities.settle_when_due(self.is_registered)

        def attempt() -> Client | Outcome:
            client = Client.register(actor, client_id=client_id, **fields)
            if identities is None:
                return client
            fingerprint = identities.fingerprint(client.id_number)
            turns = self._turn(actor, fingerprint[:2])  # taken before looking: see RegistrationTurns
            identities.add(fingerprint, client.id)
            for other in identities.others(fingerprint, client.id):
                registered = self._registered(other)
                if registered is not None and not registered.erased and duplicates(registered):
                    raise AlreadyRegistered(other)
            return Outcome(client, also=(turns,))

        try:
            written = self._run(idem, "client", 201, attempt)
        except BaseException:
            if identities is not None:
                identities.registration_failed(client_id, self.is_registered)
            raise
        if identities is not None:
            identities.registration_answered(client_id, saved=written.id == client_id)
        return written

    def recorded(self, event_class: type, batch: int = 1000) -> Iterator[Any]:
        """Every event of the class in the log, in order: it reads the whole log, so not for a request's
        path (an upgrade's pass, the command line's token listing)."""
        topic, start = get_topic(event_class), 1
        while notifications := self.recorder.select_notifications(start, batch, topics=[topic]):
            yield from map(self.mapper.to_domain_event, notifications)
            start = notifications[-1].id + 1

    def _turn(self, actor: Actor, lot: str) -> RegistrationTurns:
        """The lot's turns with one more taken (the first opens them), to be saved with the person."""
        try:
            turns = self.repository.get(RegistrationTurns.id_for(lot))
        except AggregateNotFoundError:
            return RegistrationTurns.open(actor, lot)
        turns.take(actor)
        return turns

    def is_registered(self, person: UUID) -> bool:
        return self._registered(person) is not None

    def _registered(self, person: UUID) -> Client | None:
        """The person, if their registration was saved."""
        try:
            return self.get_client(person)
        except NotFound:
            return None

    def erase_client(self, actor: Actor, idem: Idempotency | None, client_id: UUID, reason: str,
                     expected: int | None = None) -> Written:
        """Records the erasure of a person (PIPL); the caller then destroys the person's key."""

        def attempt() -> Client:
            client = self.get_client(client_id)
            check_version(client.version, expected)
            client.erase(actor, reason)
            return client

        return self._run(idem, "client", 200, attempt)

    def record_disclosure(self, actor: Actor, person: UUID, resource: str, resource_id: UUID) -> None:
        """Puts a read of a person's personal values on the audit trail."""
        self.save(Disclosure.record(actor, person, resource, resource_id))

    def get_client(self, client_id: UUID, version: int | None = None) -> Client:
        return self._get(client_id, Client, "client", version)

    # -- cases ------------------------------------------------------------

    def open_case(self, actor: Actor, idem: Idempotency | None, client_id: UUID, org_unit: str, **fields: Any) -> Written:
        self.get_client(client_id)
        self.check_org_unit("org_unit", org_unit)
        return self._run(
            idem, "case", 201, lambda: ServiceCase.open(actor, client_id=client_id, org_unit=org_unit, **fields)
        )

    def update_case(
        self,
        idem: Idempotency | None,
        case_id: UUID,
        expected_version: int | None,
        action: Callable[[ServiceCase], None],
        guard: Callable[[ServiceCase], None] | None = None,
    ) -> Written:
        """Loads the case, lets `guard` refuse it (the caller's scope, before anything else is
        said about the case), checks If-Match, acts, saves; re-runs a lost race."""

        trusting = [True]  # the first attempt acts on the case as this process last saw it

        def attempt() -> ServiceCase:
            case = self._case_to_act_on(case_id, trusting[0])
            try:
                if guard is not None:
                    guard(case)
                check_version(case.version, expected_version)
                action(case)
            except DomainError:
                if not trusting[0]:
                    raise
                trusting[0] = False  # a refusal is only ever said of the newest state
                return attempt()
            trusting[0] = False  # a save that loses its race re-runs on the newest state
            return case

        if guard is not None and idem is not None:  # a replay answers too: only within the guard
            guard(self.get_case(case_id))
        return self._run(idem, "case", 200, attempt)

    def take_step(
        self, actor: Actor, idem: Idempotency | None, case_id: UUID, expected_version: int | None, step: str,
        payload: Any, guard: Callable[[ServiceCase], None] | None = None,
    ) -> Written:
        def action(case: ServiceCase) -> None:
            needs_id = any(f.type == "certificate_number" for s in case.declaration.steps if s.name == step for f in s.fields)
            id_number = self.get_client(case.client_id).id_number if needs_id else None
            case.take_step(actor, step, payload, id_number=id_number)

        return self.update_case(idem, case_id, expected_version, action, guard)

    def _case_to_act_on(self, case_id: UUID, trusting: bool) -> ServiceCase:
        """With `trusting`, the case as this process last loaded or saved it, without asking the store
        whether another process wrote since: a copy that is behind cannot be saved (its next version
        is taken), so the command re-runs on the newest state; otherwise the newest state."""
        cached = self.repository.cached(case_id) if trusting else None
        if isinstance(cached, ServiceCase):
            return self._without_erased(cached)
        return self.get_case(case_id)

    def get_case(self, case_id: UUID, version: int | None = None, from_log: bool = False) -> ServiceCase:
        """The case now, or at `version`; `from_log`: replayed from its events alone, no snapshot
        trusted (the log is what the hash chain covers; snapshots are a cache beside it)."""
        if from_log:
            events = list(self.events.get(case_id, lte=version))
            if not events or not isinstance(events[0], ServiceCase.CaseOpened):
                raise NotFound(f"case {case_id} not found")
            return fold(None, events)
        return self._get(case_id, ServiceCase, "case", version)

    def case_events(self, case_id: UUID, after: int = 0, limit: int | None = None) -> list[ServiceCase.Event]:
        self.get_case(case_id)
        return list(self.events.get(case_id, gt=after or None, limit=limit))

    def case_as_of(self, case_id: UUID, moment: datetime, from_log: bool = False,
                   near: int | None = None, current: int | None = None) -> ServiceCase:
        """The case as it stood at `moment`; NotFound if it did not exist yet.

        The version is the last whose event is no later than `moment` (the events' times rise with
        their versions). `near` is a guess at it (the audit view's): one read of the log confirms
        it. Without one, or when the log refutes it, the version is found by bisection, reading one
        event per step, so a long case is decoded once, not twice. `current`: the case's version
        now, when the caller has just read the case (one read fewer).
        """
        if current is None:
            current = self.get_case(case_id).version
        if near is None or not self._stood_at(case_id, near, current, moment):
            near = self._bisected(case_id, current, moment)
        if near == 0:
            raise NotFound(f"case {case_id} did not exist at {moment.isoformat()}")
        return self.get_case(case_id, near, from_log)

    def _stood_at(self, case_id: UUID, version: int, current: int, moment: datetime) -> bool:
        """Whether the log says `version` was the case's version at `moment`: its event no later,
        the next one (if any) later. Both events in one read."""
        if not 0 <= version <= current:
            return False
        times = {e.originator_version: e.timestamp
                 for e in self.events.get(case_id, gt=max(version - 1, 0), lte=version + 1)}
        reached = version == 0 or (version in times and times[version] <= moment)
        return reached and (version == current or (version + 1 in times and times[version + 1] > moment))

    def _bisected(self, case_id: UUID, current: int, moment: datetime) -> int:
        low, high = 0, current
        while low < high:
            middle = (low + high + 1) // 2
            event = next(iter(self.events.get(case_id, gt=middle - 1, lte=middle)))
            if event.timestamp <= moment:
                low = middle
            else:
                high = middle - 1
        return low

    # -- access tokens ----------------------------------------------------

    def issue_token(self, actor: Actor, user: str, role: str, org_unit: str | None = None,
                    provider: str | None = None, reads_personal: bool = False) -> str:
        if org_unit is not None:
            self.check_org_unit("org_unit", org_unit)
        secret = new_secret()
        self.save(AccessToken.issue(actor, secret, user, role, org_unit, provider, reads_personal))
        return secret

    def revoke_token(self, actor: Actor, token_id: UUID) -> None:
        def attempt() -> tuple[list[Aggregate], None]:
            token = self._get(token_id, AccessToken, "token")
            token.revoke(actor)
            return [token], None

        self._retrying(attempt)
        self.revocations = next(self._revoked)  # what a cache of checked tokens here compares against

    def tokens(self) -> list[AccessToken]:
        """Every token ever issued, revoked ones included, oldest first."""
        return [self.repository.get(issued.originator_id) for issued in self.recorded(AccessToken.TokenIssued)]

    def find_token(self, secret: str) -> AccessToken | None:
        try:
            token = self.repository.get(token_id(secret))
        except AggregateNotFoundError:
            return None
        return None if token.revoked else token

    # -- the command loop -------------------------------------------------

    def _run(self, idem: Idempotency | None, resource: str, status: int, attempt: Callable[[], Any]) -> Written:
        """Runs `attempt` under the receipt of `idem`.

        `attempt` returns the aggregate it changed, or an Outcome, or the Written of an answer already
        stored (a delivery reported before), which the receipt binds.
        """

        def once() -> tuple[list[Aggregate], Written]:
            if idem is not None:
                prior = self._receipt(idem)
                if prior is not None:
                    return [], prior
            try:
                outcome = attempt()
            except DomainError:
                # A twin of this request, under the same key, may have been answered since the receipt
                # was looked for, and changed what this one found: its answer is this one's.
                prior = self._receipt(idem) if idem is not None else None
                if prior is None:
                    raise
                return [], prior
            person = None
            if isinstance(outcome, Written):
                saved, written = [], outcome
            else:
                done = outcome if isinstance(outcome, Outcome) else Outcome(outcome)
                target = done.target
                person = _about_whom(resource, target, done.item)
                if person is not None and self.was_erased(person):  # none of their values is shown, no key
                    person = None                                  # seals, nothing of theirs is in a request
                disclosure = self._disclosure(resource, target, person)
                written = Written(resource, target.id, target.version, status, None, item=done.item, since=done.since,
                                  disclosed=disclosure is not None, answer=done.answer)
                saved = [*done.also, target] + ([disclosure] if disclosure else [])  # the target's event last
            if idem is None:
                return saved, written
            return saved + [CommandReceipt.issue(idem, written, person)], written

        return self._retrying(once)

    def _disclosure(self, resource: str, target: Aggregate, person: UUID | None) -> Disclosure | None:
        """The record of the answer's personal values being shown (see SHOWN_TO), if they will be: of
        `person`, the case's or the client's (None: erased before), not of one this command erases."""
        viewer = SHOWN_TO.get()
        if viewer is None or person is None or resource not in ("case", "client") or getattr(target, "erased", False):
            return None
        return Disclosure.record(viewer, person, resource, target.id)

    def _retrying(self, once: Callable[[], tuple[list[Aggregate], Any]]) -> Any:
        for attempt in range(MAX_ATTEMPTS):
            aggregates, result = once()
            if not aggregates:
                return result
            try:
                recordings = self.save(*aggregates)
            except IntegrityError:
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
                continue
            for aggregate in aggregates:
                if isinstance(aggregate, ServiceCase):  # what commands act on from the cache (cheap to copy)
                    self.repository.saved(aggregate)
            if isinstance(result, Written):
                # The receipt is bookkeeping: the position answered is the target's last event.
                position = max((r.notification.id for r in recordings if r.domain_event.originator_id == result.id),
                               default=None)  # None: nothing of the target was written (look it up)
                target = next((a for a in aggregates if a.id == result.id), result.state)  # not a receipt alone
                return replace(result, position=position, state=target)
            return result
        raise Contention("the command kept losing concurrency races; retry it")

    def _receipt(self, idem: Idempotency) -> Written | None:
        try:
            receipt = self._without_erased(self.repository.get(CommandReceipt.id_for(idem.user, idem.key)))
        except AggregateNotFoundError:
            return None
        # A fingerprint sealed for a person since erased is gone with their key: the route still tells
        # another command under the key (a phone whose counter of keys began again) from a retry.
        if receipt.request_hash is None:
            if receipt.route_hash is not None and receipt.route_hash != idem.route_hash:
                raise IdempotencyKeyReused()
        elif receipt.request_hash not in (idem.request_hash, *idem.earlier_hashes):
            raise IdempotencyKeyReused()
        # A replay is the first answer again, to the same caller: the disclosure of its personal values
        # was recorded with the first (in its transaction), and a repeat appends nothing.
        return Written(receipt.resource, receipt.resource_id, receipt.resource_version, receipt.status, None, True,
                       receipt.item, receipt.since, disclosed=True, answer=receipt.answer)

    def _get(self, aggregate_id: UUID, cls: type, what: str, version: int | None = None) -> Any:
        try:
            aggregate = self.repository.get(aggregate_id, version=version, projector_func=fold)
        except AggregateNotFoundError:
            raise NotFound(f"{what} {aggregate_id} not found") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"{what} {aggregate_id} not found")
        return self._without_erased(aggregate) if version is None else aggregate

    def forget_cached(self, person: UUID) -> None:
        """Drops from this process's cache what holds values of the person read with their key (their
        record, their cases, receipts sealed for them, contracts with a delivery rejected for them):
        once the key is destroyed, no decrypted value of theirs stays in memory here. Other processes
        drop theirs when they next read them."""
        def holds(a: Any) -> bool:
            return person in (a.id, getattr(a, "client_id", None), getattr(a, "person", None)) or \
                any(d.person == person for d in getattr(a, "deliveries", {}).values())  # a rejection's reason

        self.repository.evict(holds)

    def was_erased(self, person: UUID) -> bool:
        """Whether the person's data was erased (perhaps by another process): a copy of their values
        cached before must no longer be shown."""
        return self._erased is not None and self._erased(person)

    def _without_erased(self, aggregate: Any) -> Any:
        """The aggregate read afresh from the store if its person was erased (perhaps by another
        process) since a copy was cached: no decrypted value outlives the person's key."""
        person = aggregate.id if isinstance(aggregate, Client) else \
            getattr(aggregate, "client_id", None) or getattr(aggregate, "person", None)
        if person is None or not _holds_personal(aggregate) or not self.was_erased(person):
            return aggregate
        fresh = self.repository.get(aggregate.id, version=aggregate.version, projector_func=fold)
        return self.repository.replace(fresh)  # the copy without the values, from now on


def _about_whom(resource: str, target: Aggregate, item: UUID | None) -> UUID | None:
    """The person a command's request may speak of (a case's, a client, a rejection's): its receipt's
    fingerprint is sealed under their key."""
    if resource == "case":
        return target.client_id
    if resource == "client":
        return target.id
    if resource == "delivery" and item is not None:
        return target.deliveries[item].person
    return None


def _holds_personal(aggregate: Any) -> bool:
    """Whether an aggregate holds any readable personal value (a case's need, a client's name...)."""
    values = [getattr(aggregate, "need", None), *getattr(aggregate, "personal", {}).values()]
    return any(value is not None for value in values)
