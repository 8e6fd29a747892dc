"""The access matrix: which role may do what, written once, read by routes and tests.

Scoped roles (case_worker, supervisor) act only on org units at or below
their own; a case or client outside their scope answers 404 so its existence
is not revealed. A role that may not act at all answers 403.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from domain.actor import ROLES, Actor
from domain.orgs import OrgTree, code_prefix

NOTHING = "-"  # a prefix no org code has

EVERYONE = frozenset(ROLES)
CITY_WIDE = ("admin", "auditor")  # the roles whose tokens see the whole city
STAFF = frozenset({"case_worker", "supervisor", "admin"})

MATRIX: dict[str, frozenset[str]] = {
    "register_client": STAFF,
    "read_client": STAFF | {"auditor"},
    "open_case": STAFF,
    "update_case": STAFF,
    "read_case": STAFF | {"auditor", "contractor"},
    "read_history": STAFF | {"auditor"},
    "read_reference": EVERYONE,
    "list_cases": STAFF | {"auditor", "contractor"},
    "read_workload": STAFF | {"auditor"},
    "read_subsidies": frozenset({"supervisor", "admin", "auditor"}),
    "read_audit": frozenset({"auditor", "admin"}),
    "read_projections": EVERYONE,
    "create_contract": frozenset({"supervisor", "admin"}),
    "read_contract": STAFF | {"auditor", "contractor"},
    "report_delivery": frozenset({"contractor"}),
    "review_delivery": STAFF,
    "issue_statement": frozenset({"supervisor", "admin"}),
    "read_statement": frozenset({"supervisor", "admin", "auditor", "contractor"}),
    "erase_client": frozenset({"admin"}),
    "verify_log": frozenset({"auditor", "admin"}),
}

# Who sees a person's personal fields (name, ID number, phone, address, notes ...);
# an auditor only with a token issued with --personal-data; a contractor only what its work needs
# (a referred case's contact fields, why a delivery was rejected: api/disclosure.shown_personal_data).
PERSONAL_READERS = STAFF


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    org_unit: str | None = None
    provider: str | None = None
    reads_personal: bool = False  # an auditor whose token allows personal values

    @property
    def actor(self) -> Actor:
        return Actor(self.user, self.role)

    def may(self, action: str) -> bool:
        return self.role in MATRIX[action]

    def sees_personal_data(self) -> bool:
        return self.role in PERSONAL_READERS or (self.role == "auditor" and self.reads_personal)

    def scope_prefix(self, tree: OrgTree, wanted: str | None = None) -> str | None:
        """The org-code prefix of what this principal may see, narrowed to `wanted`.

        None means everything; NOTHING means no unit at all (a unit outside the scope).
        """
        if self.role == "contractor":
            return NOTHING
        own = None if self.role in CITY_WIDE else self.org_unit
        if wanted is None or self.covers(tree, wanted):
            return code_prefix(wanted) if wanted else (code_prefix(own) if own else None)
        if own is not None and tree.covers(wanted, own):
            return code_prefix(own)
        return NOTHING

    def sees_case(self, tree: OrgTree, org_unit: str, providers: Iterable[str]) -> bool:
        """A contractor sees the cases referred to its provider; others, the cases in their scope."""
        if self.role == "contractor":
            return self.provider in providers
        return self.covers(tree, org_unit)

    def sees_contract(self, tree: OrgTree, provider: str, org_units: Iterable[str]) -> bool:
        """A contractor sees its provider's contracts; scoped staff, contracts overlapping their scope."""
        if self.role == "contractor":
            return self.provider == provider
        if self.role in CITY_WIDE:
            return True
        return any(tree.covers(self.org_unit, u) or tree.covers(u, self.org_unit) for u in org_units)

    def sees_delivery(self, tree: OrgTree, case_org_unit: str) -> bool:
        """A contractor sees every delivery of its contract (the contract was checked first); staff,
        the deliveries of cases in their scope (a contract may span units they do not cover)."""
        return self.role == "contractor" or self.covers(tree, case_org_unit)

    def sees_statement(self, tree: OrgTree, org_units: Iterable[str]) -> bool:
        """A contractor sees every statement of its contract (the contract was checked first); staff,
        those of a contract their scope covers whole, as for issuing one: a statement pays for the
        whole contract and reads the same to everyone, so it cannot leave out what they may not see."""
        return self.role == "contractor" or not self.uncovered(tree, org_units)

    def uncovered(self, tree: OrgTree, org_units: Iterable[str]) -> list[str]:
        """The units of `org_units` this principal's scope does not reach."""
        return [unit for unit in org_units if not self.covers(tree, unit)]

    def covers(self, tree: OrgTree, org_unit: str) -> bool:
        """Whether this principal's scope reaches `org_unit`."""
        if self.role in CITY_WIDE:
            return True
        if self.role == "contractor":
            return False
        return tree.covers(self.org_unit, org_unit)
