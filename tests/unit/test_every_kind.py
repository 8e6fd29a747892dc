"""Every kind of case, from its declaration: the declaration is sound, every
step can be taken with a payload built from its fields, and every kind can be
walked to closure as served."""

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.case import OUTCOMES, ServiceCase
from domain.errors import CommandRefused, InvalidInput
from domain.fields import FIELD_TYPES
from domain.kinds import ANY_OPEN, KINDS
from tests.unit.casekit import (
    INVALID_VALUES,
    WORKER,
    case_at,
    is_terminal,
    open_case,
    path_to,
    replay,
    state_of,
    step_starts,
    take,
    valid_payload,
    valid_value,
)

KIND_NAMES = sorted(KINDS)
STEPS = [(kind.name, step.name) for kind in KINDS.values() for step in kind.steps]
FIELDS = [
    (kind.name, step.name, field.name)
    for kind in KINDS.values()
    for step in kind.steps
    for field in step.fields
]


def field_of(kind: str, step: str, name: str):
    return next(f for f in KINDS[kind].step(step).fields if f.name == name)


REQUIRED_FIELDS = [(k, s, f) for k, s, f in FIELDS if field_of(k, s, f).required]
DAYS = [(k, s, f) for k, s, f in FIELDS if field_of(k, s, f).type == "date"]
ids = "-".join


def served_walks() -> list[tuple[str, str]]:
    """(kind, how): every way a kind declares to end served."""
    walks = []
    for kind in KINDS.values():
        for step in kind.steps:
            if step.closes_with == "served":
                walks.append((kind.name, f"step:{step.name}"))
        for stage in kind.serves_from:
            walks.append((kind.name, f"close:{stage}"))
    return walks


class TestDeclarations:
    def test_the_nine_kinds_of_the_design_are_declared_under_their_own_names(self):
        assert set(KINDS) == {
            "certificate", "rehabilitation", "assistive_device", "home_modification", "marriage_counselling",
            "home_care", "employment_training", "psychological_counselling", "health_check",
        }
        assert all(name == kind.name for name, kind in KINDS.items())

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_stage_and_step_names_are_unique_within_a_kind(self, kind):
        declaration = KINDS[kind]
        stages = [s.name for s in declaration.stages]
        steps = [s.name for s in declaration.steps]
        assert len(stages) == len(set(stages))
        assert len(steps) == len(set(steps))

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_every_step_goes_between_declared_stages(self, kind):
        declaration = KINDS[kind]
        stages = {s.name for s in declaration.stages}
        for step in declaration.steps:
            assert step.from_stages, step.name
            assert set(step.from_stages) <= stages | {ANY_OPEN}, step.name
            assert step.to_stage in stages, step.name

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_no_step_starts_from_a_terminal_stage(self, kind):
        declaration = KINDS[kind]
        for step in declaration.steps:
            for stage in step.from_stages:
                assert stage == ANY_OPEN or not is_terminal(declaration, stage), step.name

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_the_first_stage_has_a_clock(self, kind):
        days = KINDS[kind].first_stage.days
        assert isinstance(days, int) and days > 0

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_every_open_stage_has_a_positive_number_of_days(self, kind):
        for stage in KINDS[kind].stages:
            assert stage.days is None or (isinstance(stage.days, int) and stage.days > 0), stage.name

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_every_stage_terminal_ones_included_is_reachable_from_the_first(self, kind):
        declaration = KINDS[kind]
        for stage in declaration.stages:
            path_to(declaration, declaration.first_stage.name, stage.name)  # raises when there is none

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_a_step_closes_the_case_exactly_when_it_leads_to_a_terminal_stage(self, kind):
        declaration = KINDS[kind]
        for step in declaration.steps:
            assert (step.closes_with is not None) == is_terminal(declaration, step.to_stage), step.name
            assert step.closes_with is None or step.closes_with in OUTCOMES, step.name

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_every_open_stage_has_a_way_on(self, kind):
        declaration = KINDS[kind]
        for stage in declaration.stages:
            if stage.days is not None:
                onward = [s for s in declaration.steps if s.allowed_from(stage.name) and s.to_stage != stage.name]
                assert onward or stage.name in declaration.serves_from, stage.name

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_serves_from_names_open_stages(self, kind):
        declaration = KINDS[kind]
        for stage in declaration.serves_from:
            assert not is_terminal(declaration, stage)  # raises StopIteration when undeclared

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_every_kind_can_end_served(self, kind):
        declaration = KINDS[kind]
        assert declaration.serves_from or any(s.closes_with == "served" for s in declaration.steps)

    def test_step_event_names_are_unique_across_all_kinds(self):
        events = [step.event for kind in KINDS.values() for step in kind.steps]
        assert len(events) == len(set(events))
        common = {"CaseOpened", "CaseAssigned", "NoteAdded", "VisitRecorded", "CasePutOnHold", "CaseResumed",
                  "CaseClosed", "CaseReopened", "StepTaken", "CaseEvent", "Event", "Created"}
        assert not common & set(events)

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_each_step_has_its_own_event_class_named_by_its_fact(self, kind, step):
        declared = KINDS[kind].step(step)
        event_class = getattr(ServiceCase, declared.event)
        assert issubclass(event_class, ServiceCase.StepTaken)
        assert event_class.__name__ == declared.event
        assert declared.event[0].isupper() and declared.event.isidentifier()

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_payload_fields_are_well_formed(self, kind, step):
        fields = KINDS[kind].step(step).fields
        assert len({f.name for f in fields}) == len(fields)
        for field in fields:
            assert field.type in FIELD_TYPES, field.name
            assert field.description
            if field.type == "choice":
                assert field.choices and len(set(field.choices)) == len(field.choices)
            if field.minimum is not None and field.maximum is not None:
                assert field.minimum <= field.maximum

    # The days of what happened (a session held, a device fitted, works completed), by the step's
    # past-tense fact; the other days are plans: care, a course or a job that starts on a day.
    HAPPENED = {("rehabilitation", "record_session", "held_on"), ("assistive_device", "fit_device", "fitted_on"),
                ("home_modification", "survey_home", "surveyed_on"),
                ("home_modification", "start_works", "started_on"),
                ("home_modification", "complete_works", "completed_on"),
                ("home_modification", "accept_works", "inspected_on"),
                ("marriage_counselling", "record_session", "held_on"), ("home_care", "end_care", "ended_on"),
                ("employment_training", "complete_training", "completed_on"),
                ("psychological_counselling", "record_session", "held_on"),
                ("health_check", "record_check", "checked_on")}

    def test_the_days_of_what_happened_are_declared_past_and_only_they(self):
        assert {(k, s, f) for k, s, f in FIELDS if field_of(k, s, f).past} == self.HAPPENED
        assert all(field_of(*f).type == "date" for f in self.HAPPENED)

    # Free text about a person's service is theirs: sealed with their key, erased with it. Even a field
    # meant to name staff or an organisation (the counsellor matched) took a name, an ID number and a
    # phone number as readily, kept them in plain text for every auditor, and past the erasure.
    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_every_free_text_field_is_personal(self, kind, step):
        for field in KINDS[kind].step(step).fields:
            if field.type == "text":
                assert field.personal, f"{kind}.{step}.{field.name} is free text stored as a plain fact"

    @pytest.mark.parametrize("kind", KIND_NAMES)
    def test_the_description_served_to_clients_is_json_and_matches_the_declaration(self, kind):
        declaration = KINDS[kind]
        described = json.loads(json.dumps(declaration.describe()))
        assert described["name"] == kind
        assert described["first_stage"] == declaration.stages[0].name
        assert [s["name"] for s in described["stages"]] == [s.name for s in declaration.stages]
        assert [s["days"] for s in described["stages"]] == [s.days for s in declaration.stages]
        assert [(s["name"], s["event"], s["to_stage"], s["closes_with"]) for s in described["steps"]] == [
            (s.name, s.event, s.to_stage, s.closes_with) for s in declaration.steps
        ]
        for step, spec in zip(declaration.steps, described["steps"]):
            assert [(p["name"], p["type"], p["required"], p["personal"]) for p in spec["payload"]] == [
                (f.name, f.type, f.required, f.personal) for f in step.fields
            ]
            for f, p in zip(step.fields, spec["payload"]):  # a client can check a day before sending it
                if p["type"] in ("date", "datetime"):
                    assert (p["earliest"], p["latest"], p["past"]) == ("1950-01-01", "2099-12-31", f.past)
        assert described["serves_from"] == list(declaration.serves_from)


class TestHappyPath:
    @pytest.mark.parametrize("kind,how", served_walks(), ids=[ids(w) for w in served_walks()])
    def test_walks_from_opening_to_closure_as_served(self, kind, how):
        declaration = KINDS[kind]
        verb, target = how.split(":")
        case = open_case(kind)
        goal = declaration.step(target).from_stages[0] if verb == "step" else target
        walk = path_to(declaration, case.stage, goal) + ([declaration.step(target)] if verb == "step" else [])
        for step in walk:
            assert case.status == "open"
            assert case.due_at is not None
            take(case, step.name)
            assert case.stage == step.to_stage
            if not is_terminal(declaration, case.stage):
                assert case.due_at is not None
        if verb == "close":
            case.close(WORKER, "served")
        assert (case.status, case.outcome, case.due_at) == ("closed", "served", None)
        events = case.collect_events()
        assert case.version == len(events) == 1 + len(walk) + (verb == "close")
        assert [type(e).__name__ for e in events[1 : 1 + len(walk)]] == [s.event for s in walk]
        assert state_of(replay(events)) == state_of(case)

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_every_step_moves_the_case_from_each_of_its_stages_to_its_target(self, kind, step):
        declared = KINDS[kind].step(step)
        for start in step_starts(KINDS[kind], declared):
            case = case_at(kind, start)
            case.collect_events()
            take(case, step)
            (event,) = case.collect_events()
            assert case.stage == declared.to_stage
            assert case.status == ("closed" if declared.closes_with else "open")
            assert case.outcome == declared.closes_with
            assert type(event).__name__ == declared.event
            assert (event.step, event.stage, event.outcome) == (step, declared.to_stage, declared.closes_with)

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_personal_values_are_kept_apart_from_the_facts(self, kind, step):
        declared = KINDS[kind].step(step)
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        case.collect_events()
        take(case, step)
        (event,) = case.collect_events()
        assert set(event.personal) == {f.name for f in declared.fields if f.personal}
        assert set(event.facts) == {f.name for f in declared.fields if not f.personal}
        for name, value in event.facts.items():
            assert case.details[name] == value
        for name, value in event.personal.items():
            assert case.personal[name] == value
            assert name not in case.details

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_optional_fields_may_be_left_out(self, kind, step):
        declared = KINDS[kind].step(step)
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        case.collect_events()
        payload = valid_payload(declared, case, optional=False)
        assert all(f.name in payload for f in declared.fields if f.required)
        take(case, step, payload)
        (event,) = case.collect_events()
        assert set(event.facts) | set(event.personal) == set(payload)


class TestPayloadValidation:
    @pytest.mark.parametrize("kind,step,field", REQUIRED_FIELDS, ids=[ids(p) for p in REQUIRED_FIELDS])
    def test_a_missing_required_field_is_named(self, kind, step, field):
        declared = KINDS[kind].step(step)
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        before = state_of(case)
        payload = valid_payload(declared, case)
        for missing in ({k: v for k, v in payload.items() if k != field}, {**payload, field: None}):
            with pytest.raises(InvalidInput) as excinfo:
                take(case, step, missing)
            assert excinfo.value.field == field
        assert state_of(case) == before

    @pytest.mark.parametrize("kind,step,field", FIELDS, ids=[ids(p) for p in FIELDS])
    def test_a_value_of_the_wrong_kind_is_named(self, kind, step, field):
        declared = KINDS[kind].step(step)
        spec = field_of(kind, step, field)
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        before = state_of(case)
        bad_values = list(INVALID_VALUES[spec.type])
        if spec.minimum is not None:
            bad_values.append(spec.minimum - 1)
        if spec.maximum is not None:
            bad_values.append(spec.maximum + 1)
        if spec.type == "text":
            bad_values.append("x" * (spec.max_length + 1))
        for bad in bad_values:
            payload = {**valid_payload(declared, case), field: bad}
            with pytest.raises(InvalidInput) as excinfo:
                take(case, step, payload)
            assert excinfo.value.field == field, bad
        assert state_of(case) == before

    @pytest.mark.parametrize("kind,step,field", DAYS, ids=[ids(p) for p in DAYS])
    def test_a_day_of_what_happened_is_not_after_today_in_shanghai_and_a_plan_may_be(self, kind, step, field):
        declared = KINDS[kind].step(step)
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        before = state_of(case)
        tomorrow = {**valid_payload(declared, case), field: (today + timedelta(days=1)).isoformat()}
        if field_of(kind, step, field).past:
            with pytest.raises(InvalidInput) as excinfo:
                take(case, step, tomorrow)
            assert excinfo.value.field == field
            assert state_of(case) == before
            take(case, step, {**tomorrow, field: today.isoformat()})
        else:
            take(case, step, tomorrow)
        assert case.version == before["version"] + 1

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_an_unknown_field_is_named(self, kind, step):
        declared = KINDS[kind].step(step)
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        with pytest.raises(InvalidInput) as excinfo:
            take(case, step, {**valid_payload(declared, case), "remarks": "extra"})
        assert excinfo.value.field == "remarks"

    @pytest.mark.parametrize("kind,step", STEPS, ids=[ids(p) for p in STEPS])
    def test_a_payload_that_is_not_an_object_is_refused(self, kind, step):
        declared = KINDS[kind].step(step)
        case = case_at(kind, step_starts(KINDS[kind], declared)[0])
        for payload in (None, [], "text", 3):
            with pytest.raises(InvalidInput) as excinfo:
                case.take_step(WORKER, step, payload)
            assert excinfo.value.field == "body"

    def test_values_are_recorded_in_their_normal_form(self):
        case = case_at("home_modification", "surveyed")
        case.collect_events()
        take(case, "quote_plan", {"items": "  ramp and handrails  ", "quote": "8000"})
        event = case.collect_events()[0]
        assert (event.facts, event.personal) == ({"quote": "8000.00"}, {"items": "ramp and handrails"})
        assert case.details["quote"] == "8000.00"
        case = case_at("employment_training", "enrolled")
        case.collect_events()
        take(case, "complete_training", {"completed_on": "2024-05-06", "certified": False})
        assert case.collect_events()[0].facts == {"completed_on": "2024-05-06", "certified": False}


class TestHomeModificationBudget:
    def quoted(self, quote: str):
        case = case_at("home_modification", "surveyed")
        take(case, "quote_plan", {"items": "ramp", "quote": quote})
        return case

    @pytest.mark.parametrize("amount", ["8000.00", "7999.99", "8000", "0.50"])
    def test_approves_an_amount_up_to_the_quote(self, amount):
        case = self.quoted("8000.00")
        take(case, "approve_budget", {"approved_amount": amount})
        assert case.stage == "approved"

    @pytest.mark.parametrize("amount", ["8000.01", "9000", "80000.00"])
    def test_refuses_an_amount_above_the_quote(self, amount):
        case = self.quoted("8000.00")
        case.collect_events()
        with pytest.raises(CommandRefused):
            take(case, "approve_budget", {"approved_amount": amount})
        assert case.stage == "quoted"
        assert case.collect_events() == []

    def test_works_rejected_at_inspection_go_back_to_works(self):
        case = case_at("home_modification", "works_completed")
        take(case, "reject_works", {"reason": "the ramp is too steep"})
        assert (case.stage, case.status) == ("in_works", "open")
        take(case, "complete_works")
        take(case, "accept_works")
        assert (case.stage, case.outcome) == ("accepted", "served")

    def test_a_declined_budget_closes_the_case_as_refused(self):
        case = case_at("home_modification", "quoted")
        take(case, "decline_budget", {"reason": "over the yearly budget"})
        assert (case.stage, case.status, case.outcome) == ("declined", "closed", "refused")


class TestRepeatableSteps:
    @pytest.mark.parametrize(
        "kind,step",
        [(k.name, s.name) for k in KINDS.values() for s in k.steps if s.to_stage in s.from_stages],
    )
    def test_a_session_step_can_be_repeated_without_leaving_its_stage(self, kind, step):
        declared = KINDS[kind].step(step)
        case = case_at(kind, declared.to_stage)
        due = case.due_at
        for _ in range(3):
            take(case, step)
        assert case.stage == declared.to_stage
        assert case.due_at >= due

    def test_valid_value_builder_covers_every_declared_field_type(self):
        used = {f.type for k in KINDS.values() for s in k.steps for f in s.fields}
        assert used <= set(FIELD_TYPES)
        case = case_at("certificate", "assessed")
        for kind in KINDS.values():
            for step in kind.steps:
                for field in step.fields:
                    valid_value(field, case)  # raises for a type the tests do not know


class TestValuesMadePersonal:
    """Step values declared personal after events and snapshots had kept them as plain facts."""

    def snapshot(self, taken: ServiceCase.Snapshot, **personal) -> ServiceCase.Snapshot:
        """`taken` as a snapshot made before the works planned were personal: among the details."""
        state = {**taken.state, "details": {**taken.state["details"], "items": "ramp"}}
        return ServiceCase.Snapshot(originator_id=taken.originator_id, originator_version=taken.originator_version,
                                    timestamp=taken.timestamp, topic=taken.topic, state=state, person=taken.person,
                                    personal=personal)

    def test_a_snapshot_that_kept_them_among_the_details_gives_them_back_as_personal(self):
        case = case_at("home_modification", "surveyed")
        take(case, "quote_plan", {"items": "ramp", "quote": "8000"})
        taken = ServiceCase.Snapshot.take(case)
        restored = self.snapshot(taken, need=case.need).mutate(None)
        assert "items" not in restored.details and restored.personal["items"] == "ramp"
        erased = self.snapshot(taken, need=None).mutate(None)  # the person's key destroyed: every value None
        assert "items" not in erased.details and erased.personal["items"] is None
