"""Staff access tokens, kept hashed.

A token is a random secret shown once. The store keeps only what identifies
its hash: the token's aggregate id is derived from the SHA-256 of the secret,
so a presented token is found with one read and the secret itself is never
stored.
"""

import hashlib
import secrets
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import ROLES, WORKS_CASES, Actor, check_staff_id
from domain.contract import check_provider
from domain.errors import CommandRefused, InvalidInput


def token_id(secret: str) -> UUID:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return uuid5(NAMESPACE_URL, f"lastmeter:token:{digest}")


def new_secret() -> str:
    return "lm_" + secrets.token_urlsafe(32)


class AccessToken(Aggregate):
    class TokenIssued(Aggregate.Created):
        actor: dict
        user: str
        role: str
        org_unit: str | None
        provider: str | None
        reads_personal: bool

    class TokenRevoked(Aggregate.Event):
        actor: dict

        def apply(self, token: "AccessToken") -> None:
            token.revoked = True

    def __init__(self, actor: dict, user: str, role: str, org_unit: str | None, provider: str | None,
                 reads_personal: bool):
        self.reads_personal = reads_personal  # an auditor allowed to see personal values
        self.user = user
        self.role = role
        self.org_unit = org_unit
        self.provider = provider
        self.revoked = False

    @classmethod
    def issue(
        cls, actor: Actor, secret: str, user: str, role: str, org_unit: str | None, provider: str | None,
        reads_personal: bool = False,
    ) -> "AccessToken":
        check_staff_id("user", user)
        if role not in ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(ROLES)}")
        if role in WORKS_CASES and org_unit is None:
            raise InvalidInput("org_unit", f"a {role} must be scoped to an org unit")
        if role == "contractor":
            check_provider("provider", provider)
        return cls._create(
            cls.TokenIssued,
            id=token_id(secret),
            actor=actor.as_dict(),
            user=user,
            role=role,
            org_unit=org_unit if role in WORKS_CASES else None,
            provider=provider if role == "contractor" else None,
            reads_personal=reads_personal and role == "auditor",
        )

    def revoke(self, actor: Actor) -> None:
        if self.revoked:
            raise CommandRefused("the token is already revoked")
        self.trigger_event(self.TokenRevoked, actor=actor.as_dict())
