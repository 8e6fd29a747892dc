"""Who caused an event: every event carries its actor."""

import re
from dataclasses import dataclass

from domain.errors import InvalidInput

STAFF_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # a staff user id, as tokens and assignments name users
ROLES = ("case_worker", "supervisor", "auditor", "contractor", "admin")
WORKS_CASES = ("case_worker", "supervisor")  # within the org unit of their token: the scoped roles


def check_staff_id(field: str, value: object) -> str:
    if not isinstance(value, str) or not STAFF_ID.fullmatch(value):
        raise InvalidInput(field, "must be a staff user id: 1-64 letters, digits, '.', '_', ':' or '-'")
    return value


@dataclass(frozen=True)
class Actor:
    user: str
    role: str

    def as_dict(self) -> dict[str, str]:
        return {"user": self.user, "role": self.role}
