"""Builders shared by the unit tests of domain/: actors, cases, valid payloads, replay.

Nothing here decides what is right: the expectations (the certificate digits,
the day arithmetic) are written out in the tests from DESIGN.md, not taken
from the code under test.
"""

from collections import deque
from datetime import datetime
from typing import Any
from uuid import uuid4

from domain.actor import Actor
from domain.case import ServiceCase
from domain.client import id_number_check_digit
from domain.fields import Field
from domain.kinds import ANY_OPEN, CaseKind, Step

WORKER = Actor("li", "case_worker")
SUPERVISOR = Actor("wang", "supervisor")

# The category digit of a certificate number, as DESIGN.md lists them: 1 visual … 7 multiple.
CATEGORY_DIGIT = {
    "visual": "1",
    "hearing": "2",
    "speech": "3",
    "physical": "4",
    "intellectual": "5",
    "mental": "6",
    "multiple": "7",
}


def make_id_number(first17: str = "35050219800101123") -> str:
    """An 18-character resident ID number with the right check character."""
    return first17 + id_number_check_digit(first17)


ID_NUMBER = make_id_number()
OTHER_ID_NUMBER = make_id_number("35050219900202456")


def certificate_number(id_number: str, category: str, grade: int) -> str:
    return f"{id_number}{CATEGORY_DIGIT[category]}{grade}"


def open_case(kind: str = "certificate", actor: Actor = WORKER, **kwargs: Any) -> ServiceCase:
    kwargs.setdefault("client_id", uuid4())
    kwargs.setdefault("org_unit", "350502")
    kwargs.setdefault("need", "needs help")
    return ServiceCase.open(actor, kind=kind, **kwargs)


def is_terminal(kind: CaseKind, stage: str) -> bool:
    return kind.stage(stage).days is None


def open_stages(kind: CaseKind) -> list[str]:
    return [s.name for s in kind.stages if s.days is not None]


def step_starts(kind: CaseKind, step: Step) -> list[str]:
    """The stages a step may be taken from, with ANY_OPEN spelt out."""
    if ANY_OPEN in step.from_stages:
        return open_stages(kind)
    return list(step.from_stages)


# -- payloads -----------------------------------------------------------------


def valid_value(field: Field, case: ServiceCase | None = None, id_number: str = ID_NUMBER) -> Any:
    """A value that the field's declaration accepts."""
    if field.type == "text":
        return f"{field.name} as written down"[: field.max_length]
    if field.type == "date":
        return "2024-03-01"
    if field.type == "datetime":
        return "2024-03-05T09:30:00+08:00"
    if field.type == "choice":
        return field.choices[-1]
    if field.type == "integer":
        return field.minimum if field.minimum is not None else 1
    if field.type == "money":
        return "1200.00"
    if field.type == "boolean":
        return True
    if field.type == "certificate_number":
        assert case is not None, "a certificate number depends on the case's assessment"
        return certificate_number(id_number, case.details["category"], case.details["grade"])
    raise AssertionError(f"the tests know no valid value for field type {field.type!r}")


# One value per field type that the type must refuse, whatever the field.
INVALID_VALUES: dict[str, list[Any]] = {
    "text": ["", "   ", 42, ["a list"], "nul\x00byte", "bell\x07", "lone \ud800 surrogate", "\u200b\u200c"],
    "date": ["2024-13-01", "2024-02-30", "next tuesday", 20240301, "0001-01-01", "1949-12-31", "2100-01-01",
             "9999-12-31", "2024-W09-5", "20240301", "2024-03-01T00:00:00+08:00"],
    "datetime": ["2024-03-05T09:30:00", "soon", 1709600000, "0001-01-01T09:30:00+08:00",
                 "2100-01-01T09:30:00+08:00", "1709600000"],
    "choice": ["none_of_these", 1],
    "integer": ["3", 2.0, True],
    "money": [1200.0, "12.345", "-5.00", "1,200.00", "abc", 1200],
    "boolean": ["true", 1, 0],
    "certificate_number": ["123", 12345678901234567890, "3505021980010112341X"],
}


def valid_payload(
    step: Step, case: ServiceCase | None = None, id_number: str = ID_NUMBER, optional: bool = True
) -> dict[str, Any]:
    return {
        f.name: valid_value(f, case, id_number) for f in step.fields if f.required or optional
    }


# -- walking a workflow -------------------------------------------------------


def path_to(kind: CaseKind, start: str, goal: str) -> list[Step]:
    """The shortest list of steps leading from one stage to another."""
    seen = {start}
    queue: deque[tuple[str, list[Step]]] = deque([(start, [])])
    while queue:
        stage, steps = queue.popleft()
        if stage == goal:
            return steps
        if is_terminal(kind, stage):
            continue
        for step in kind.steps:
            if step.allowed_from(stage) and step.to_stage not in seen:
                seen.add(step.to_stage)
                queue.append((step.to_stage, steps + [step]))
    raise AssertionError(f"{kind.name}: no path from {start} to {goal}")


def take(
    case: ServiceCase,
    step_name: str,
    payload: dict[str, Any] | None = None,
    actor: Actor = WORKER,
    id_number: str = ID_NUMBER,
) -> None:
    step = case.declaration.step(step_name)
    assert step is not None, f"{case.kind} has no step {step_name}"
    if payload is None:
        payload = valid_payload(step, case, id_number)
    case.take_step(actor, step_name, payload, id_number=id_number)


def advance_to(case: ServiceCase, stage: str, actor: Actor = WORKER) -> None:
    for step in path_to(case.declaration, case.stage, stage):
        take(case, step.name, actor=actor)
    assert case.stage == stage


def case_at(kind: str, stage: str) -> ServiceCase:
    case = open_case(kind)
    advance_to(case, stage)
    return case


# -- replay and state ---------------------------------------------------------

STATE = (
    "id", "version", "created_on", "modified_on",
    "kind", "client_id", "org_unit", "service_mode", "priority", "opened_by",
    "assignee", "status", "outcome", "stage", "due_at", "held_at", "reopens_to",
    "details", "need", "personal", "notes", "visits",
)


def state_of(case: ServiceCase) -> dict[str, Any]:
    return {name: getattr(case, name) for name in STATE}


def replay(events: list) -> ServiceCase:
    """The case rebuilt from its events alone."""
    case = None
    for event in events:
        case = event.mutate(case)
    assert case is not None
    return case


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)
