"""What a command is given (an idempotency claim) and what it answers (what it wrote)."""

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from domain.errors import StaleVersion


SHOWN_TO: ContextVar[Any] = ContextVar("shown_to", default=None)
"""Who will be shown the personal values of a command's answer: that read is then recorded in the
command's own transaction, not in one of its own after it."""


@dataclass(frozen=True)
class Idempotency:
    """A caller's Idempotency-Key and a fingerprint of the request it came with."""

    user: str
    key: str
    request_hash: str
    # What a receipt stored before an upgrade may keep instead (before 2026-11-29 a plain SHA-256):
    # compared, never stored, so that a retry across the upgrade still finds its first answer.
    earlier_hashes: tuple[str, ...] = ()
    role: str | None = None  # the caller's, for the receipt's actor
    # A keyed fingerprint of the route alone (method and path): kept in plain beside the sealed one, it
    # still tells another command under the key once the request's own fingerprint is gone with its person.
    route_hash: str | None = None


@dataclass(frozen=True)
class Written:
    resource: str  # case, client, contract, delivery, import or statement
    id: UUID  # the aggregate written
    version: int
    status: int
    position: int | None  # None when answered from a receipt (look it up)
    replayed: bool = False
    item: UUID | None = None  # a part of the aggregate, e.g. a contract's delivery
    since: int | None = None  # the version the command started from, where its answer needs it
    state: Any = field(default=None, compare=False)  # the aggregate as written, when at hand
    disclosed: bool = False  # the read of its answer's personal values is already recorded
    answer: list | None = None  # what it answered beyond what it wrote (an import's rows), kept by its receipt


@dataclass(frozen=True)
class Outcome:
    """What a command's attempt changed: the aggregate it answers for, and what its answer needs."""

    target: Any
    item: UUID | None = None  # a part of the target, e.g. a contract's delivery
    since: int | None = None  # the version the command started from, where its answer needs it
    answer: list | None = None  # what it answered beyond what it wrote, for the receipt to keep
    also: tuple = ()  # other aggregates it changed, saved in the same transaction


def check_version(version: int, expected: int | None) -> None:
    """If-Match: the version the caller named must still be the aggregate's (`version`)."""
    if expected is not None and version != expected:
        raise StaleVersion(expected, version)
