"""Properties of every case, whatever is done to it.

A state machine drives a case of a random kind with random commands (steps
with valid and invalid payloads, hold, resume, close, reopen, assign, note,
visit) and keeps a small model of what each command must do: which error it
must raise, or which stage, status and outcome it leads to. After every
command: a refused command changed nothing and recorded nothing; the state is
one the declaration allows; the events replay to the same case.
"""

import unicodedata
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from domain.actor import Actor
from domain.case import OUTCOMES, SERVICE_MODES, ServiceCase
from domain.clock import EARLIEST_DAY, LATEST_DAY, end_of_day_after
from domain.errors import (
    CaseIsClosed,
    CaseNotClosed,
    CaseNotOnHold,
    CaseOnHold,
    CommandRefused,
    DomainError,
    InvalidInput,
    PersonErased,
    StepNotAllowed,
)
from domain.fields import parse_payload
from domain.kinds import KINDS
from tests.unit.casekit import (
    CATEGORY_DIGIT,
    ID_NUMBER,
    INVALID_VALUES,
    OTHER_ID_NUMBER,
    replay,
    state_of,
)

SHANGHAI_OFFSET = timedelta(hours=8)
ACTORS = st.sampled_from([Actor("li", "case_worker"), Actor("wang", "supervisor"), Actor("root", "admin")])
GOOD_TEXT = st.sampled_from(["in hospital", "  the family asked  ", "已电话联系家属"])
BAD_TEXT = st.sampled_from(["", "   ", None, 7, "bell\x07"])
TEXT = st.one_of(GOOD_TEXT, GOOD_TEXT, BAD_TEXT)
MONEY = st.sampled_from(["0.50", "1200", "8000.00", "8000.01", "99999.99"])
PAYLOAD_KINDS = st.sampled_from(["valid"] * 4 + ["required_only", "missing", "unknown", "bad_value", "not_object"])


def bad_text(value: object) -> bool:
    return not isinstance(value, str) or not value.strip() or "\x07" in value


class CaseMachine(RuleBasedStateMachine):
    def __init__(self, kind: str):
        super().__init__()
        self.kind_name = kind

    @initialize(actor=ACTORS)
    def open(self, actor):
        kind = self.kind_name
        self.case = ServiceCase.open(actor, kind=kind, client_id=uuid4(), org_unit="350502", need="help at home")
        self.kind = KINDS[kind]
        self.events = self.case.collect_events()
        assert [e.actor for e in self.events] == [actor.as_dict()]
        # the model
        self.stage = self.kind.first_stage.name
        self.status = "open"
        self.outcome = None
        self.reopens_to = None
        self.assignee = None
        self.assessment = None  # (category, grade) of a certificate case
        self.quote = None  # Decimal, of a home modification case

    def attempt(self, actor, expected, command, *args, **kwargs) -> bool:
        """Runs a command; checks it failed with exactly `expected` changing nothing, or succeeded."""
        before = state_of(self.case)
        try:
            command(*args, **kwargs)
        except DomainError as error:
            assert self.case.collect_events() == []
            assert state_of(self.case) == before
            assert expected is not None, f"unexpected {error!r}"
            assert type(error) is expected, f"raised {error!r}, expected {expected.__name__}"
            return False
        assert expected is None, f"expected {expected.__name__}, but the command succeeded"
        new = self.case.collect_events()
        assert len(new) == 1
        assert new[0].actor == actor.as_dict()
        self.events.extend(new)
        return True

    # -- the kind's steps -------------------------------------------------

    def valid_value(self, data, field):
        if field.type == "choice":
            return data.draw(st.sampled_from(field.choices))
        if field.type == "integer":
            return data.draw(st.integers(field.minimum or 0, field.maximum or 1000))
        if field.type == "boolean":
            return data.draw(st.booleans())
        if field.type == "money":
            return data.draw(MONEY)
        if field.type == "text":
            return data.draw(GOOD_TEXT)
        if field.type == "date":  # a day of what happened is not after today in Shanghai
            latest = datetime.now(timezone(SHANGHAI_OFFSET)).date() if field.past else LATEST_DAY
            return data.draw(st.dates(EARLIEST_DAY, latest)).isoformat()
        if field.type == "datetime":
            return data.draw(st.datetimes(datetime.combine(EARLIEST_DAY, time.min), datetime.combine(LATEST_DAY, time.max),
                                          timezones=st.just(timezone(SHANGHAI_OFFSET)))).isoformat()
        if field.type == "certificate_number":
            category, grade = self.assessment or ("visual", 1)
            return f"{ID_NUMBER}{CATEGORY_DIGIT[category]}{grade}"
        raise AssertionError(field.type)

    def forward(self, data, actor, onward_only=True):
        """A step allowed from the current stage, with a valid payload: the case moves on.

        Steps that move on without closing, or close as served, come first, so that
        walks reach the later stages of every kind rather than stopping at a refusal."""
        allowed = [s for s in self.kind.steps if s.allowed_from(self.stage)]
        onward = [s.name for s in allowed if s.closes_with in (None, "served") or not onward_only]
        name = data.draw(st.sampled_from(onward or [s.name for s in allowed] or [s.name for s in self.kind.steps]))
        self.step(data, actor, name, data.draw(st.sampled_from(["valid", "required_only"])), ID_NUMBER)

    @rule(data=st.data(), actor=ACTORS)
    def take_a_forward_step(self, data, actor):
        self.forward(data, actor)

    @rule(data=st.data(), actor=ACTORS)
    def take_another_forward_step(self, data, actor):
        self.forward(data, actor)

    @rule(data=st.data(), actor=ACTORS)
    def take_any_allowed_step(self, data, actor):
        self.forward(data, actor, onward_only=False)

    @rule(data=st.data(), actor=ACTORS)
    def take_any_step(self, data, actor):
        """Any step name, allowed or not, with a payload valid or not."""
        any_step = [s.name for s in self.kind.steps]
        name = data.draw(st.one_of(st.sampled_from(any_step), st.just("fly_to_the_moon")))
        how = data.draw(PAYLOAD_KINDS)
        id_number = data.draw(st.sampled_from([ID_NUMBER, ID_NUMBER, None]))
        self.step(data, actor, name, how, id_number)

    def step(self, data, actor, name, how, id_number):
        step = self.kind.step(name)
        fields = step.fields if step else ()
        payload = {f.name: self.valid_value(data, f) for f in fields if how != "required_only" or f.required}
        required = [f for f in fields if f.required]
        invalid = True
        if how == "missing" and required:
            del payload[data.draw(st.sampled_from(required)).name]
        elif how == "bad_value" and fields:
            field = data.draw(st.sampled_from(fields))
            bad = list(INVALID_VALUES[field.type])
            if field.type == "certificate_number":
                bad.append(f"{OTHER_ID_NUMBER}{payload[field.name][18:]}")
                bad.append(f"{ID_NUMBER}{int(payload[field.name][18:]) % 77 + 1:02d}")
            payload[field.name] = data.draw(st.sampled_from(bad))
        elif how == "not_object":
            payload = data.draw(st.sampled_from([None, [], "verify"]))
        elif how in ("unknown", "missing", "bad_value"):
            payload["remarks"] = "not a field"
        else:
            invalid = False

        if step is None:
            expected = InvalidInput
        elif self.status == "closed":
            expected = CaseIsClosed
        elif self.status == "on_hold":
            expected = CaseOnHold
        elif not step.allowed_from(self.stage):
            expected = StepNotAllowed
        elif invalid:
            expected = InvalidInput
        elif any(f.type == "certificate_number" for f in fields) and id_number is None:
            expected = PersonErased  # no ID number left to check the number against
        elif name == "approve_budget" and Decimal(payload["approved_amount"]) > self.quote:
            expected = CommandRefused
        else:
            expected = None

        if self.attempt(actor, expected, self.case.take_step, actor, name, payload, id_number=id_number):
            event = self.events[-1]
            assert type(event).__name__ == step.event
            assert set(event.personal) == {f.name for f in fields if f.personal and f.name in payload}
            assert set(event.facts) == {f.name for f in fields if not f.personal and f.name in payload}
            if name == "record_assessment":
                self.assessment = (payload["category"], payload["grade"])
            if name == "quote_plan":
                self.quote = Decimal(payload["quote"])
            if step.closes_with:
                self.status, self.outcome, self.reopens_to = "closed", step.closes_with, self.stage
            self.stage = step.to_stage

    # -- the commands every kind shares -----------------------------------

    @rule(actor=ACTORS, reason=TEXT)
    def put_on_hold(self, actor, reason):
        # a reason missing or malformed is wrong whatever the status: it is told first
        expected = InvalidInput if bad_text(reason) else {"closed": CaseIsClosed, "on_hold": CaseOnHold}.get(self.status)
        if self.attempt(actor, expected, self.case.put_on_hold, actor, reason):
            self.status = "on_hold"

    @rule(actor=ACTORS, reason=TEXT)
    def resume(self, actor, reason):
        expected = InvalidInput if bad_text(reason) else CaseNotOnHold if self.status != "on_hold" else None
        due, held_at = self.case.due_at, self.case.held_at
        if self.attempt(actor, expected, self.case.resume, actor, reason):
            self.status = "open"
            assert self.case.due_at == due + (self.events[-1].timestamp - held_at)  # the clock stood still

    @rule(actor=ACTORS, outcome=st.sampled_from(OUTCOMES + ("served", "served", "finished")),
          reason=st.one_of(st.none(), TEXT))
    def close(self, actor, outcome, reason):
        if outcome not in OUTCOMES:
            expected = InvalidInput
        elif self.status == "closed":
            expected = CaseIsClosed
        elif outcome == "served" and self.stage not in self.kind.serves_from:
            expected = CommandRefused
        elif reason is not None and bad_text(reason):
            expected = InvalidInput
        else:
            expected = None
        if self.attempt(actor, expected, self.case.close, actor, outcome, reason):
            self.status, self.outcome, self.reopens_to = "closed", outcome, self.stage

    @rule(actor=ACTORS, reason=TEXT)
    def reopen(self, actor, reason):
        expected = InvalidInput if bad_text(reason) else CaseNotClosed if self.status != "closed" else None
        if self.attempt(actor, expected, self.case.reopen, actor, reason):
            self.status, self.outcome, self.stage = "open", None, self.reopens_to

    @rule(actor=ACTORS, assignee=st.sampled_from(["chen", "zhao"]))
    def assign(self, actor, assignee):
        if self.status == "closed":
            expected = CaseIsClosed
        elif assignee == self.assignee:
            expected = CommandRefused
        else:
            expected = None
        if self.attempt(actor, expected, self.case.assign, actor, assignee):
            self.assignee = assignee

    @rule(actor=ACTORS, text=TEXT)
    def add_note(self, actor, text):
        self.attempt(actor, InvalidInput if bad_text(text) else None, self.case.add_note, actor, text)

    @rule(actor=ACTORS, mode=st.sampled_from(SERVICE_MODES + ("by_phone",)),
          when=st.sampled_from(["past", "past", "future", "naive"]), summary=TEXT)
    def record_visit(self, actor, mode, when, summary):
        now = datetime.now(timezone.utc)
        visited_at = {"past": now - timedelta(days=1), "future": now + timedelta(hours=2),
                      "naive": datetime.now() - timedelta(days=1)}[when]
        if self.status == "closed":
            expected = CaseIsClosed
        elif mode not in SERVICE_MODES or when != "past" or bad_text(summary):
            expected = InvalidInput
        else:
            expected = None
        self.attempt(actor, expected, self.case.record_visit, actor, mode, visited_at, summary)

    # -- what must always hold --------------------------------------------

    @invariant()
    def the_state_is_one_the_declaration_allows(self):
        case = self.case
        stage = self.kind.stage(case.stage)  # raises for an undeclared stage
        terminal = stage.days is None
        assert case.status in ("open", "on_hold", "closed")
        assert (case.outcome is None) == (case.status != "closed")
        assert case.outcome is None or case.outcome in OUTCOMES
        assert not terminal or case.status == "closed"
        assert (case.due_at is None) == (case.status == "closed" or terminal)
        assert (case.held_at is not None) == (case.status == "on_hold")
        if case.outcome == "served":
            assert case.stage in self.kind.serves_from or any(
                s.closes_with == "served" and s.to_stage == case.stage for s in self.kind.steps
            )

    @invariant()
    def the_case_is_what_the_model_says(self):
        case = self.case
        assert (case.stage, case.status, case.outcome, case.assignee) == (
            self.stage, self.status, self.outcome, self.assignee
        )
        assert case.version == len(self.events)

    @invariant()
    def its_events_replay_to_the_same_case(self):
        assert state_of(replay(self.events)) == state_of(self.case)


class TestAnySequenceOfCommands:
    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_keeps_every_case_consistent_refusals_harmless_and_replayable(self, kind):
        run_state_machine_as_test(
            lambda: CaseMachine(kind), settings=settings(max_examples=50, stateful_step_count=50, deadline=None)
        )


# -- smaller properties -------------------------------------------------------

FIELDS = [(k, s, f) for k in KINDS.values() for s in k.steps for f in s.fields]


class TestPayloadValidationNamesTheField:
    @settings(max_examples=100, deadline=None)
    @given(data=st.data())
    def test_any_invalid_value_is_refused_naming_its_field(self, data):
        kind, step, field = data.draw(st.sampled_from(FIELDS))
        bad = data.draw(st.sampled_from(INVALID_VALUES[field.type]))
        with pytest.raises(InvalidInput) as excinfo:
            parse_payload((field,), {field.name: bad})
        assert excinfo.value.field == field.name

    @settings(max_examples=100, deadline=None)
    @given(data=st.data())
    def test_any_integer_is_accepted_exactly_when_within_bounds(self, data):
        kind, step, field = data.draw(st.sampled_from([x for x in FIELDS if x[2].type == "integer"]))
        value = data.draw(st.integers(-10, 1000))
        inside = field.minimum <= value <= field.maximum
        if inside:
            assert parse_payload((field,), {field.name: value}) == {field.name: value}
        else:
            with pytest.raises(InvalidInput) as excinfo:
                parse_payload((field,), {field.name: value})
            assert excinfo.value.field == field.name

    @settings(max_examples=100, deadline=None)
    @given(data=st.data(), text=st.text(max_size=40))
    def test_text_is_kept_stripped_and_blank_or_unstorable_text_refused(self, data, text):
        kind, step, field = data.draw(st.sampled_from([x for x in FIELDS if x[2].type == "text"]))
        # Printable text: no control character but tab, line feed and carriage return; no lone surrogate.
        control = any((ord(c) < 32 and c not in "\t\n\r") or c == "\x7f" for c in text)
        surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        # Something shows: not spaces and format characters (a soft hyphen, a zero-width space) alone.
        shows = any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text)
        if shows and not control and not surrogate:
            assert parse_payload((field,), {field.name: text}) == {field.name: text.strip()}
        else:
            with pytest.raises(InvalidInput) as excinfo:
                parse_payload((field,), {field.name: text})
            assert excinfo.value.field == field.name


class TestDueDatesAnyMoment:
    @settings(max_examples=100, deadline=None)
    @given(
        moment=st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from([timezone.utc, timezone(SHANGHAI_OFFSET), timezone(timedelta(hours=-5))]),
        ),
        days=st.integers(0, 400),
    )
    def test_due_is_a_shanghai_midnight_after_days_whole_days(self, moment, days):
        due = end_of_day_after(moment, days)
        assert due.utcoffset() == SHANGHAI_OFFSET
        local = due.astimezone(timezone(SHANGHAI_OFFSET))
        assert (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
        assert timedelta(days=days) < due - moment <= timedelta(days=days + 1)
