"""What can go wrong with a command, named after what went wrong.

The API maps each family to one status: InvalidInput → 422,
CommandRefused → 409, StaleVersion → 412, NotFound → 404, Contention → 503.
"""


def a_or_an(noun: str) -> str:
    """The noun after its article, as messages name a role or a kind: "an auditor", "a supervisor"."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


class DomainError(Exception):
    """Base of every error a command can raise."""


class InvalidInput(DomainError):
    """A value the caller sent is malformed; `field` names it."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownOrgUnit(InvalidInput):
    def __init__(self, field: str, code: str):
        super().__init__(field, f"unknown org unit {code!r}")


class CommandRefused(DomainError):
    """A rule of the domain refuses the command in the case's current state."""


class StepNotAllowed(CommandRefused):
    pass


class CaseIsClosed(CommandRefused):
    pass


class CaseNotClosed(CommandRefused):
    pass


class CaseOnHold(CommandRefused):
    pass


class CaseNotOnHold(CommandRefused):
    pass


class PersonErased(CommandRefused):
    """The person's data was erased: nothing more about them can be recorded."""


class AlreadyRegistered(CommandRefused):
    """A person with this resident ID number is registered already."""

    def __init__(self, client_id):
        super().__init__(f"a person with this ID number is already registered: client {client_id}")
        self.client_id = client_id


class StaleVersion(DomainError):
    """If-Match named a version that is no longer current."""

    def __init__(self, expected: int, current: int):
        super().__init__(f"version {expected} is not current; the current version is {current}")
        self.expected = expected
        self.current = current


class NotFound(DomainError):
    """The thing asked for does not exist (or is not for this caller)."""


class IdempotencyKeyReused(InvalidInput):
    def __init__(self) -> None:
        super().__init__(
            "Idempotency-Key", "already used for another request (another route or body)"
        )


class Contention(DomainError):
    """A command kept losing races; the caller may retry."""
