"""Command receipts: what makes `Idempotency-Key` safe across crashes.

A receipt is saved in the same transaction as the events of the command it
answers, so either both are stored or neither is. Its id is derived from the
caller and the key, so a second request with the same key finds it, and two
racing requests cannot both store one.

A receipt keeps a keyed fingerprint of its request, to tell a retry from
another request under the same key. Where the request is about a person (a
case's, a client's, a delivery's rejection) the fingerprint is one of their
`personal` values, sealed under their key: a body that held their ID number
or a note about them cannot be confirmed by guessing once they are erased.
Then a retry is judged by its key and its route (method and path, which name no
one: a case by its id), kept fingerprinted in plain beside it.
"""

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import Actor
from domain.commands import Idempotency, Written


class CommandReceipt(Aggregate):
    class CommandAnswered(Aggregate.Created):
        request_hash: str
        status: int
        resource: str  # what was written: case, client, contract, delivery, import or statement
        resource_id: UUID
        resource_version: int
        item: UUID | None
        since: int | None
        # What the command answered beyond what it wrote (an import's per-row results), so that a
        # replay answers exactly that; receipts stored before 2026-11-30 have none.
        answer: list | None = None
        # Whom the request is about, and its fingerprint sealed as theirs (request_hash is then None);
        # receipts stored before 2026-11-30 have neither.
        person: UUID | None = None
        personal: dict | None = None
        # The caller whose key it is, as every command's events name theirs, so that a search of the audit
        # trail by actor finds it; receipts stored before 2026-12-07 have none.
        actor: dict | None = None
        # The fingerprint of the route alone (Idempotency.route_hash); receipts stored before 2026-12-08 have none.
        route_hash: str | None = None

    @staticmethod
    def id_for(user: str, key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"lastmeter:receipt:{user}\x00{key}")

    def __init__(self, request_hash: str | None, status: int, resource: str, resource_id: UUID, resource_version: int,
                 item: UUID | None, since: int | None, answer: list | None = None, person: UUID | None = None,
                 personal: dict | None = None, actor: dict | None = None, route_hash: str | None = None):
        self.actor = actor
        self.route_hash = route_hash
        self.person = person
        self.personal = dict(personal or {})
        # None: sealed for a person since erased (their values read None)
        self.request_hash = self.personal.get("request_hash") if person is not None else request_hash
        self.status = status
        self.resource = resource
        self.resource_id = resource_id
        self.resource_version = resource_version
        self.item = item
        self.since = since
        self.answer = answer

    @classmethod
    def issue(cls, idem: Idempotency, written: Written, person: UUID | None = None) -> "CommandReceipt":
        """`person`: whom the request is about, under whose key its fingerprint is sealed."""
        sealed = {"person": person, "personal": {"request_hash": idem.request_hash}} if person is not None else {}
        return cls._create(
            cls.CommandAnswered,
            id=cls.id_for(idem.user, idem.key),
            actor=Actor(idem.user, idem.role).as_dict(),
            request_hash=None if sealed else idem.request_hash,
            **sealed,
            status=written.status,
            resource=written.resource,
            resource_id=written.id,
            resource_version=written.version,
            item=written.item,
            since=written.since,
            answer=written.answer,
            route_hash=idem.route_hash,
        )
