"""Every read of a person's personal values goes on the audit trail."""

from uuid import UUID

from api.access import Principal
from domain.application import LastMeter


def disclose(app: LastMeter, principal: Principal, person: UUID, resource: str, resource_id: UUID) -> None:
    """Records that `principal` was shown personal values of `person` (when it was)."""
    if principal.sees_personal_data() or principal.role == "contractor":
        app.record_disclosure(principal.actor, person, resource, resource_id)
