"""Command receipts: what makes `Idempotency-Key` safe across crashes.

A receipt is saved in the same transaction as the events of the command it
answers, so either both are stored or neither is. Its id is derived from the
caller and the key, so a second request with the same key finds it, and two
racing requests cannot both store one.
"""

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.commands import Written


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

    @staticmethod
    def id_for(user: str, key: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"lastmeter:receipt:{user}\x00{key}")

    def __init__(self, request_hash: str, status: int, resource: str, resource_id: UUID, resource_version: int,
                 item: UUID | None, since: int | None, answer: list | None = None):
        self.request_hash = request_hash
        self.status = status
        self.resource = resource
        self.resource_id = resource_id
        self.resource_version = resource_version
        self.item = item
        self.since = since
        self.answer = answer

    @classmethod
    def issue(cls, user: str, key: str, request_hash: str, written: Written) -> "CommandReceipt":
        return cls._create(
            cls.CommandAnswered,
            id=cls.id_for(user, key),
            request_hash=request_hash,
            status=written.status,
            resource=written.resource,
            resource_id=written.id,
            resource_version=written.version,
            item=written.item,
            since=written.since,
            answer=written.answer,
        )
