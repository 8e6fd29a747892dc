"""Who caused an event: every event carries its actor."""

from dataclasses import dataclass

ROLES = ("case_worker", "supervisor", "auditor", "contractor", "admin")


@dataclass(frozen=True)
class Actor:
    user: str
    role: str

    def as_dict(self) -> dict[str, str]:
        return {"user": self.user, "role": self.role}
