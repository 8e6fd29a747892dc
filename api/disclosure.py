"""Every read of a person's personal values goes on the audit trail."""

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from api.access import Principal
from domain.application import LastMeter
from domain.commands import SHOWN_TO


def shown_personal_data(principal: Principal) -> bool:
    """Whether some personal values reach `principal`: all of a person's for those who see personal
    data (Principal.sees_personal_data), and for a contractor those its work needs (a referred case's
    contact fields, why a delivery of theirs was rejected). Each such read is recorded."""
    return principal.sees_personal_data() or principal.role == "contractor"


def disclose(app: LastMeter, principal: Principal, person: UUID, resource: str, resource_id: UUID) -> None:
    """Records that `principal` was shown personal values of `person` (when it was: not of a person
    erased, whose values all read as None)."""
    if shown_personal_data(principal) and not app.was_erased(person):
        app.record_disclosure(principal.actor, person, resource, resource_id)


@contextmanager
def answering(principal: Principal) -> Iterator[None]:
    """Commands run inside record, in their own transaction, that their answer shows `principal`
    the person's values (when it does)."""
    token = SHOWN_TO.set(principal.actor if shown_personal_data(principal) else None)
    try:
        yield
    finally:
        SHOWN_TO.reset(token)
