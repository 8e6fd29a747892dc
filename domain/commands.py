"""What a command is given (an idempotency claim) and what it answers (what it wrote)."""

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from domain.errors import DomainError


class Contention(DomainError):
    """A command kept losing races; the caller may retry."""


@dataclass(frozen=True)
class Idempotency:
    """A caller's Idempotency-Key and a hash of the request it came with."""

    user: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class Written:
    resource: str  # case, client, contract, delivery or statement
    id: UUID  # the aggregate written
    version: int
    status: int
    position: int | None  # None when answered from a receipt (look it up)
    replayed: bool = False
    item: UUID | None = None  # a part of the aggregate, e.g. a contract's delivery
    state: Any = field(default=None, compare=False)  # the aggregate as written, when at hand
