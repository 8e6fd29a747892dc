"""The access matrix: which role may do what, written once, read by routes and tests.

Scoped roles (case_worker, supervisor) act only on org units at or below
their own; a case or client outside their scope answers 404 so its existence
is not revealed. A role that may not act at all answers 403.
"""

from dataclasses import dataclass

from domain.actor import Actor
from domain.orgs import OrgTree

EVERYONE = frozenset({"case_worker", "supervisor", "auditor", "contractor", "admin"})
STAFF = frozenset({"case_worker", "supervisor", "admin"})

MATRIX: dict[str, frozenset[str]] = {
    "register_client": STAFF,
    "read_client": STAFF | {"auditor"},
    "open_case": STAFF,
    "update_case": STAFF,
    "read_case": STAFF | {"auditor"},
    "read_history": STAFF | {"auditor"},
    "read_reference": EVERYONE,
}

# Who sees a person's personal fields (name, ID number, phone, address, notes ...).
PERSONAL_READERS = STAFF


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    org_unit: str | None = None
    provider: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.user, self.role)

    def may(self, action: str) -> bool:
        return self.role in MATRIX[action]

    def sees_personal_data(self) -> bool:
        return self.role in PERSONAL_READERS

    def covers(self, tree: OrgTree, org_unit: str) -> bool:
        """Whether this principal's scope reaches `org_unit`."""
        if self.role in ("admin", "auditor"):
            return True
        if self.role == "contractor":
            return False
        return tree.covers(self.org_unit, org_unit)
