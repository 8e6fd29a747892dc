"""The commands every kind of case shares: open, assign, note, visit, hold and
resume, close, reopen; and the due date that the stage clock gives a case."""

from datetime import datetime, timedelta, timezone
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from domain.actor import Actor
from domain.case import ServiceCase
from domain.client import Client
from domain.clock import end_of_day_after
from domain.errors import (
    CaseIsClosed,
    CaseNotClosed,
    CaseNotOnHold,
    CaseOnHold,
    CommandRefused,
    DomainError,
    InvalidInput,
)
from domain.kinds import KINDS
from tests.unit.casekit import (
    ID_NUMBER,
    SUPERVISOR,
    WORKER,
    at,
    case_at,
    certificate_number,
    open_case,
    state_of,
    take,
    valid_payload,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(timezone.utc)


class Clock:
    """The moment the next event is stamped with."""

    def __init__(self, now: datetime):
        self.now = now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Stamps the case's events with a chosen moment instead of the real now."""
    clock = Clock(at("2024-03-03T10:00:00+08:00"))
    for event_class in (ServiceCase.CaseOpened, ServiceCase.CaseEvent):
        monkeypatch.setattr(event_class, "create_timestamp", staticmethod(lambda: clock.now))
    return clock


def refuses_unchanged(case: ServiceCase, error: type[DomainError], command, *args, **kwargs) -> DomainError:
    """Runs a command that must fail with exactly `error` and leave the case as it was."""
    case.collect_events()
    before = state_of(case)
    with pytest.raises(error) as excinfo:
        command(*args, **kwargs)
    assert type(excinfo.value) is error
    assert state_of(case) == before
    assert case.collect_events() == []
    return excinfo.value


def closed_case(kind: str = "rehabilitation") -> ServiceCase:
    case = open_case(kind)
    case.close(WORKER, "withdrawn", "moved away")
    return case


def on_hold_case(kind: str = "rehabilitation") -> ServiceCase:
    case = open_case(kind)
    case.put_on_hold(WORKER, "in hospital")
    return case


class TestOpen:
    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_a_new_case_is_open_at_the_first_stage_of_its_kind(self, kind):
        client_id = uuid4()
        case = ServiceCase.open(WORKER, kind=kind, client_id=client_id, org_unit="350502001", need="  a wheelchair  ")
        assert (case.kind, case.stage, case.status, case.outcome) == (kind, KINDS[kind].stages[0].name, "open", None)
        assert (case.client_id, case.org_unit, case.assignee, case.version) == (client_id, "350502001", None, 1)
        assert (case.opened_by, case.priority, case.service_mode) == ("li", "normal", None)
        assert case.need == "a wheelchair"

    def test_records_the_opening_with_its_actor_and_the_need_kept_personal(self):
        case = open_case("rehabilitation", service_mode="door_to_door", priority="urgent", need="walks with pain")
        (event,) = case.collect_events()
        assert type(event).__name__ == "CaseOpened"
        assert event.actor == {"user": "li", "role": "case_worker"}
        assert event.personal == {"need": "walks with pain"}
        assert (event.service_mode, event.priority) == ("door_to_door", "urgent")

    @pytest.mark.parametrize(
        "kwargs,field",
        [
            ({"kind": "haircut"}, "kind"),
            ({"service_mode": "by_post"}, "service_mode"),
            ({"priority": "whenever"}, "priority"),
            ({"need": ""}, "need"),
            ({"need": "   "}, "need"),
            ({"need": None}, "need"),
            ({"need": "x" * 4001}, "need"),
        ],
    )
    def test_refuses_invalid_input_naming_the_field(self, kwargs, field):
        with pytest.raises(InvalidInput) as excinfo:
            open_case(**{"kind": "certificate", **kwargs})
        assert excinfo.value.field == field

    @pytest.mark.parametrize("mode", ["centralised", "door_to_door", "proxy"])
    def test_accepts_every_service_mode(self, mode):
        assert open_case(service_mode=mode).service_mode == mode


class TestAssign:
    def test_assigns_the_case_to_a_staff_user(self):
        case = open_case()
        case.collect_events()
        case.assign(SUPERVISOR, "chen")
        (event,) = case.collect_events()
        assert case.assignee == "chen"
        assert type(event).__name__ == "CaseAssigned"
        assert (event.assignee, event.actor) == ("chen", {"user": "wang", "role": "supervisor"})

    def test_reassigns_to_another_user(self):
        case = open_case()
        case.assign(SUPERVISOR, "chen")
        case.assign(SUPERVISOR, "zhao")
        assert case.assignee == "zhao"

    def test_refuses_to_assign_to_the_current_assignee(self):
        case = open_case()
        case.assign(SUPERVISOR, "chen")
        refuses_unchanged(case, CommandRefused, case.assign, SUPERVISOR, "chen")

    def test_refuses_a_closed_case(self):
        case = closed_case()
        refuses_unchanged(case, CaseIsClosed, case.assign, SUPERVISOR, "chen")

    def test_a_case_on_hold_can_be_reassigned(self):
        case = on_hold_case()
        case.assign(SUPERVISOR, "chen")
        assert (case.assignee, case.status) == ("chen", "on_hold")


class TestAddNote:
    def test_counts_the_note_and_keeps_its_text_personal(self):
        case = open_case()
        case.collect_events()
        case.add_note(WORKER, "  daughter will attend the assessment ")
        (event,) = case.collect_events()
        assert case.notes == 1
        assert type(event).__name__ == "NoteAdded"
        assert event.personal == {"text": "daughter will attend the assessment"}
        assert "daughter" not in repr({k: v for k, v in vars(event).items() if k != "personal"})

    def test_a_note_may_join_its_characters_with_zero_width_ones(self):
        case = open_case()
        case.add_note(WORKER, "family 👨\u200d👩\u200d👧 agreed")
        assert case.collect_events()[-1].personal == {"text": "family 👨\u200d👩\u200d👧 agreed"}

    # Zero-width and other format characters show nothing: a note of them alone is as empty as spaces.
    @pytest.mark.parametrize("text", ["", "   ", None, 5, "x" * 4001, "\u200b", " \u200b\u2060\ufeff\u3000"])
    def test_refuses_an_empty_or_overlong_text(self, text):
        case = open_case()
        error = refuses_unchanged(case, InvalidInput, case.add_note, WORKER, text)
        assert error.field == "text"

    def test_notes_can_be_added_on_hold_and_after_closure(self):
        case = on_hold_case()
        case.add_note(WORKER, "called the family")
        case.close(WORKER, "withdrawn")
        case.add_note(WORKER, "family confirmed the withdrawal")
        assert case.notes == 2


class TestRecordVisit:
    @pytest.mark.parametrize("mode", ["centralised", "door_to_door", "proxy"])
    def test_records_a_visit_in_each_mode(self, mode):
        case = open_case()
        case.collect_events()
        visited_at = NOW.astimezone(SHANGHAI) - timedelta(hours=2)
        case.record_visit(WORKER, mode, visited_at, "checked the documents")
        (event,) = case.collect_events()
        assert case.visits == 1
        assert type(event).__name__ == "VisitRecorded"
        assert (event.mode, event.visited_at) == (mode, visited_at.isoformat())
        assert event.personal == {"summary": "checked the documents"}

    def test_refuses_an_unknown_mode(self):
        case = open_case()
        error = refuses_unchanged(
            case, InvalidInput, case.record_visit, WORKER, "by_phone", NOW - timedelta(hours=1), "called"
        )
        assert error.field == "mode"

    @pytest.mark.parametrize("ahead", [timedelta(hours=1), timedelta(days=2)])
    def test_refuses_a_visit_in_the_future(self, ahead):
        case = open_case()
        error = refuses_unchanged(
            case, InvalidInput, case.record_visit, WORKER, "door_to_door", datetime.now(timezone.utc) + ahead, "x"
        )
        assert error.field == "visited_at"

    def test_refuses_a_moment_without_a_utc_offset(self):
        case = open_case()
        naive = datetime.now() - timedelta(hours=1)
        error = refuses_unchanged(case, InvalidInput, case.record_visit, WORKER, "door_to_door", naive, "x")
        assert error.field == "visited_at"

    def test_refuses_an_empty_summary(self):
        case = open_case()
        error = refuses_unchanged(case, InvalidInput, case.record_visit, WORKER, "proxy", NOW - timedelta(hours=1), " ")
        assert error.field == "summary"

    def test_refuses_a_closed_case(self):
        case = closed_case()
        refuses_unchanged(case, CaseIsClosed, case.record_visit, WORKER, "proxy", NOW - timedelta(hours=1), "x")

    @pytest.mark.parametrize("sent,accepted", [("1949-12-31T20:00:00-08:00", True),  # 1950-01-01 in Shanghai
                                               ("1950-01-01T07:59:59+08:00", True),
                                               ("1949-12-31T23:59:59+08:00", False)])
    def test_the_earliest_day_is_a_day_in_shanghai_whatever_offset_is_sent(self, sent, accepted, clock):
        clock.now = at("1950-01-01T09:00:00+08:00")
        case = open_case()
        visited_at = datetime.fromisoformat(sent)
        if accepted:
            case.record_visit(WORKER, "door_to_door", visited_at, "x")
        else:
            assert refuses_unchanged(case, InvalidInput, case.record_visit, WORKER, "door_to_door", visited_at,
                                     "x").field == "visited_at"

    def test_a_case_on_hold_can_be_visited(self):
        case = on_hold_case()
        case.record_visit(WORKER, "door_to_door", NOW - timedelta(hours=1), "still in hospital")
        assert (case.visits, case.status) == (1, "on_hold")


class TestHoldAndResume:
    def test_putting_on_hold_keeps_the_stage_and_its_due_date(self):
        case = open_case("rehabilitation")
        due = case.due_at
        case.collect_events()
        case.put_on_hold(WORKER, "in hospital")
        (event,) = case.collect_events()
        assert (case.status, case.stage, case.due_at) == ("on_hold", "referred", due)
        assert type(event).__name__ == "CasePutOnHold"
        assert event.personal == {"reason": "in hospital"}

    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_no_step_can_be_taken_while_on_hold(self, kind):
        case = on_hold_case(kind)
        step = next(s for s in KINDS[kind].steps if s.allowed_from(case.stage))
        refuses_unchanged(
            case, CaseOnHold, case.take_step, WORKER, step.name, valid_payload(step, case), ID_NUMBER
        )

    def test_a_step_can_be_taken_again_after_resuming(self):
        case = on_hold_case("certificate")
        case.resume(WORKER, "back from hospital")
        take(case, "verify_documents")
        assert (case.status, case.stage) == ("open", "documents_verified")

    def test_a_case_on_hold_cannot_be_put_on_hold_again(self):
        case = on_hold_case()
        refuses_unchanged(case, CaseOnHold, case.put_on_hold, WORKER, "still in hospital")

    def test_a_closed_case_cannot_be_put_on_hold(self):
        case = closed_case()
        refuses_unchanged(case, CaseIsClosed, case.put_on_hold, WORKER, "in hospital")

    def test_resuming_a_case_that_is_not_on_hold_is_refused(self):
        case = open_case()
        refuses_unchanged(case, CaseNotOnHold, case.resume, WORKER, "back")

    def test_resuming_a_closed_case_is_refused(self):
        case = closed_case()
        refuses_unchanged(case, CaseNotOnHold, case.resume, WORKER, "back")

    def test_a_reason_is_required_to_hold_and_to_resume(self):
        case = open_case()
        assert refuses_unchanged(case, InvalidInput, case.put_on_hold, WORKER, "").field == "reason"
        case.put_on_hold(WORKER, "in hospital")
        assert refuses_unchanged(case, InvalidInput, case.resume, WORKER, None).field == "reason"

    def test_resuming_moves_the_due_date_by_the_time_spent_on_hold(self, clock):
        case = open_case("certificate")  # applied, 15 days from 3 March
        assert case.due_at == at("2024-03-19T00:00:00+08:00")
        clock.advance(days=2)
        case.put_on_hold(WORKER, "in hospital")
        clock.advance(days=5, hours=3)
        case.resume(WORKER, "back home")
        assert case.status == "open"
        assert case.due_at == at("2024-03-24T03:00:00+08:00")

    def test_the_clock_starts_again_from_the_shifted_date_at_the_next_stage(self, clock):
        case = open_case("certificate")
        case.put_on_hold(WORKER, "in hospital")
        clock.advance(days=4)
        case.resume(WORKER, "back home")
        clock.advance(days=1)  # 8 March
        take(case, "verify_documents")  # documents_verified: 10 days
        assert case.due_at == at("2024-03-19T00:00:00+08:00")

    def test_two_holds_add_up(self, clock):
        case = open_case("certificate")
        for hours in (30, 18):
            case.put_on_hold(WORKER, "away")
            clock.advance(hours=hours)
            case.resume(WORKER, "back")
            clock.advance(hours=1)
        assert case.due_at == at("2024-03-21T00:00:00+08:00")

    def test_a_case_on_hold_can_be_closed(self):
        case = on_hold_case()
        case.close(WORKER, "withdrawn", "the person moved away")
        assert (case.status, case.outcome, case.held_at, case.due_at) == ("closed", "withdrawn", None, None)


class TestClose:
    @pytest.mark.parametrize("outcome", ["withdrawn", "refused", "transferred"])
    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_closes_with_an_outcome_from_the_first_stage(self, kind, outcome):
        case = open_case(kind)
        case.collect_events()
        case.close(WORKER, outcome, "as agreed")
        (event,) = case.collect_events()
        assert (case.status, case.outcome, case.due_at) == ("closed", outcome, None)
        assert case.stage == KINDS[kind].stages[0].name
        assert type(event).__name__ == "CaseClosed"
        assert (event.outcome, event.personal) == (outcome, {"reason": "as agreed"})

    def test_a_reason_is_optional_but_not_empty(self):
        case = open_case()
        case.collect_events()
        case.close(WORKER, "withdrawn")
        assert case.collect_events()[0].personal == {}
        case = open_case()
        assert refuses_unchanged(case, InvalidInput, case.close, WORKER, "withdrawn", " ").field == "reason"

    @pytest.mark.parametrize(
        "kind,stage", [(name, stage) for name, kind in sorted(KINDS.items()) for stage in kind.serves_from]
    )
    def test_closes_as_served_from_a_stage_the_kind_serves_from(self, kind, stage):
        case = case_at(kind, stage)
        case.close(WORKER, "served")
        assert (case.status, case.outcome, case.stage) == ("closed", "served", stage)

    @pytest.mark.parametrize(
        "kind,stage",
        [
            (name, stage.name)
            for name, kind in sorted(KINDS.items())
            for stage in kind.stages
            if stage.days is not None and stage.name not in kind.serves_from
        ],
    )
    def test_refuses_to_close_as_served_from_any_other_stage(self, kind, stage):
        case = case_at(kind, stage)
        refuses_unchanged(case, CommandRefused, case.close, WORKER, "served")

    def test_a_refusal_names_the_kind_as_english_does(self):
        case = open_case("assistive_device")
        refused = refuses_unchanged(case, CommandRefused, case.close, WORKER, "served")
        assert str(refused).startswith("an assistive_device case can be closed as served only from fitted")

    @pytest.mark.parametrize("outcome", ["done", "", None, "Served"])
    def test_refuses_an_unknown_outcome(self, outcome):
        case = open_case()
        assert refuses_unchanged(case, InvalidInput, case.close, WORKER, outcome).field == "outcome"

    def test_refuses_to_close_a_closed_case(self):
        case = closed_case()
        refuses_unchanged(case, CaseIsClosed, case.close, WORKER, "transferred")

    def test_refuses_to_close_a_case_closed_by_its_last_step(self):
        case = case_at("health_check", "checked")
        take(case, "update_health_record")
        refuses_unchanged(case, CaseIsClosed, case.close, WORKER, "withdrawn")


class TestReopen:
    @pytest.mark.parametrize("kind,stage", [("rehabilitation", "planned"), ("home_care", "assessed")])
    def test_reopens_at_the_stage_the_case_was_closed_at(self, kind, stage):
        case = case_at(kind, stage)
        case.close(WORKER, "transferred")
        case.collect_events()
        case.reopen(SUPERVISOR, "transferred back")
        (event,) = case.collect_events()
        assert (case.stage, case.status, case.outcome) == (stage, "open", None)
        assert case.due_at is not None
        assert type(event).__name__ == "CaseReopened"
        assert (event.stage, event.personal) == (stage, {"reason": "transferred back"})

    @pytest.mark.parametrize(
        "kind,closing_step",
        [
            (name, step.name)
            for name, kind in sorted(KINDS.items())
            for step in kind.steps
            if step.closes_with and "*" not in step.from_stages
        ],
    )
    def test_reopens_at_the_stage_before_the_closing_step(self, kind, closing_step):
        step = KINDS[kind].step(closing_step)
        case = case_at(kind, step.from_stages[0])
        take(case, closing_step)
        assert case.status == "closed"
        case.reopen(SUPERVISOR, "closed by mistake")
        assert (case.stage, case.status, case.outcome) == (step.from_stages[0], "open", None)

    def test_refuses_an_open_case(self):
        case = open_case()
        refuses_unchanged(case, CaseNotClosed, case.reopen, SUPERVISOR, "why not")

    def test_refuses_a_case_on_hold(self):
        case = on_hold_case()
        refuses_unchanged(case, CaseNotClosed, case.reopen, SUPERVISOR, "why not")

    def test_a_reason_is_required(self):
        case = closed_case()
        assert refuses_unchanged(case, InvalidInput, case.reopen, SUPERVISOR, "").field == "reason"

    def test_the_stage_clock_starts_again_when_reopened(self, clock):
        case = open_case("certificate")
        case.close(WORKER, "withdrawn")
        clock.now = at("2024-04-10T09:00:00+08:00")
        case.reopen(SUPERVISOR, "the person came back")
        assert case.due_at == at("2024-04-26T00:00:00+08:00")  # applied: 15 whole days after 10 April


class TestDueDates:
    @pytest.mark.parametrize(
        "moment,days,due",
        [
            ("2024-03-03T10:00:00+08:00", 10, "2024-03-14T00:00:00+08:00"),  # the clock module's own example
            ("2024-03-03T00:00:00+08:00", 10, "2024-03-14T00:00:00+08:00"),
            ("2024-03-03T23:59:59+08:00", 10, "2024-03-14T00:00:00+08:00"),
            ("2024-03-03T17:30:00+00:00", 10, "2024-03-15T00:00:00+08:00"),  # already 4 March in Shanghai
            ("2024-03-03T15:59:59+00:00", 10, "2024-03-14T00:00:00+08:00"),  # still 3 March in Shanghai
            ("2024-02-25T12:00:00+08:00", 5, "2024-03-02T00:00:00+08:00"),  # through a leap day
            ("2024-12-30T12:00:00+08:00", 1, "2025-01-01T00:00:00+08:00"),
            ("2024-03-03T10:00:00+08:00", 0, "2024-03-04T00:00:00+08:00"),
        ],
    )
    def test_a_stage_is_due_at_the_start_of_the_day_after_its_whole_days_in_shanghai(self, moment, days, due):
        result = end_of_day_after(at(moment), days)
        assert result == at(due)
        assert result.utcoffset() == timedelta(hours=8)

    def test_a_new_case_is_due_after_the_days_of_its_first_stage(self, clock):
        clock.now = at("2024-03-03T17:30:00+00:00")  # 4 March, 01:30 in Shanghai
        case = open_case("psychological_counselling")  # requested: 7 days
        assert case.created_on == clock.now
        assert case.due_at == at("2024-03-12T00:00:00+08:00")

    def test_each_stage_entered_sets_the_due_date_from_its_own_days(self, clock):
        case = open_case("certificate")
        expected = {
            "documents_verified": "2024-03-16T00:00:00+08:00",  # entered 5 March, 10 days
            "assessment_scheduled": "2024-04-06T00:00:00+08:00",  # entered 6 March, 30 days
            "assessed": "2024-03-18T00:00:00+08:00",  # entered 7 March, 10 days
        }
        for days, step in zip((2, 1, 1), ("verify_documents", "schedule_assessment", "record_assessment")):
            clock.advance(days=days)
            take(case, step)
            assert case.due_at == at(expected[case.stage]), case.stage

    def test_a_case_at_a_terminal_stage_has_no_due_date(self):
        case = case_at("certificate", "assessed")
        take(case, "issue_certificate")
        assert (case.stage, case.due_at) == ("issued", None)

    def test_a_closed_case_has_no_due_date_whatever_its_stage(self):
        case = case_at("rehabilitation", "in_sessions")
        assert case.due_at is not None
        case.close(WORKER, "withdrawn")
        assert case.due_at is None

    def test_a_case_on_hold_keeps_its_due_date(self):
        case = open_case("home_care")
        due = case.due_at
        case.put_on_hold(WORKER, "in hospital")
        assert case.due_at == due is not None


class TestEveryEventCarriesItsActor:
    def test_each_command_records_who_gave_it(self):
        people = [Actor(f"user{i}", role) for i, role in enumerate(["case_worker", "supervisor", "admin"] * 4)]
        case = open_case("assistive_device", actor=people[0])
        commands = [
            lambda a: case.assign(a, "chen"),
            lambda a: case.add_note(a, "note"),
            lambda a: case.record_visit(a, "proxy", NOW - timedelta(hours=1), "visited"),
            lambda a: case.put_on_hold(a, "away"),
            lambda a: case.resume(a, "back"),
            lambda a: take(case, "assess_need", actor=a),
            lambda a: take(case, "fit_device", actor=a),
            lambda a: case.close(a, "served"),
            lambda a: case.reopen(a, "one more check"),
            lambda a: take(case, "follow_up", actor=a),
        ]
        for actor, command in zip(people[1:], commands):
            command(actor)
        events = case.collect_events()
        assert len(events) == 1 + len(commands)
        assert [e.actor for e in events] == [a.as_dict() for a in people[: len(events)]]


class TestNoIdentityInCaseEvents:
    def test_the_persons_name_id_number_and_phone_never_reach_a_case_event(self):
        client = Client.register(
            WORKER, name="林秀英", id_number=ID_NUMBER, phone="13912345678", org_unit="350502", address="鲤城区某街道12号"
        )
        case = ServiceCase.open(WORKER, kind="certificate", client_id=client.id, org_unit="350502", need="证件办理")
        case.assign(SUPERVISOR, "chen")
        case.add_note(WORKER, "the daughter will come along")
        case.record_visit(WORKER, "door_to_door", NOW - timedelta(hours=1), "brought the forms")
        case.put_on_hold(WORKER, "in hospital")
        case.resume(WORKER, "home again")
        for step in ("verify_documents", "schedule_assessment", "record_assessment"):
            take(case, step)
        case.close(WORKER, "withdrawn", "changed her mind")
        case.reopen(SUPERVISOR, "she came back")
        take(case, "issue_certificate", id_number=client.id_number)
        events = case.collect_events()
        identity = ("林秀英", ID_NUMBER, "13912345678", "鲤城区某街道12号")
        for event in events:
            assert event.originator_id == case.id
            public = repr({k: v for k, v in vars(event).items() if k != "personal"})
            for value in identity:
                assert value not in public, (type(event).__name__, value)
            personal = repr(getattr(event, "personal", {}))
            for value in ("林秀英", "13912345678", "鲤城区某街道12号"):
                assert value not in personal, (type(event).__name__, value)
        # The certificate number contains the ID number by definition, and only there, kept personal.
        holders = [e for e in events if ID_NUMBER in repr(vars(e))]
        assert [type(e).__name__ for e in holders] == ["CertificateIssued"]
        number = certificate_number(ID_NUMBER, case.details["category"], case.details["grade"])
        assert holders[0].personal == {"certificate_number": number}
        assert events[0].client_id == client.id


class TestCopies:
    """The repository hands every command a copy of the cached case: acting on it must leave the cache alone."""

    @pytest.mark.parametrize("kind", list(KINDS))
    def test_acting_on_a_copy_leaves_the_original_as_it_was(self, kind):
        import copy

        steps = KINDS[kind].steps
        case = open_case(kind)
        take(case, steps[0].name)
        case.collect_events()
        before = copy.deepcopy(vars(case))  # the standard deep copy: the reference
        acted = copy.deepcopy(case)
        acted.assign(WORKER, "someone-else")
        acted.add_note(WORKER, "一条记录")
        following = next((s for s in steps[1:] if s.allowed_from(acted.stage) and not s.closes_with), None)
        if following is not None:
            take(acted, following.name)  # sets the step's facts and personal values
        acted.close(WORKER, "withdrawn")
        assert vars(case) == before and acted.version > case.version
