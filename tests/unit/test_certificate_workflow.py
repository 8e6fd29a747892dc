"""The certificate workflow, the reference kind, exactly as DESIGN.md draws it.

    applied ──verify_documents──▶ documents_verified
    documents_verified ──schedule_assessment {scheduled_for}──▶ assessment_scheduled
    assessment_scheduled ──record_assessment {category, grade}──▶ assessed
    assessed ──issue_certificate {certificate_number}──▶ issued   (closed, "served")
    any open stage ──refuse {reason}──▶ refused                    (closed, "refused")
"""

import pytest

from domain.case import ServiceCase
from domain.errors import CaseIsClosed, CaseOnHold, CommandRefused, InvalidInput, PersonErased, StepNotAllowed
from tests.unit.casekit import (
    CATEGORY_DIGIT,
    ID_NUMBER,
    OTHER_ID_NUMBER,
    SUPERVISOR,
    WORKER,
    case_at,
    certificate_number,
    make_id_number,
    open_case,
    state_of,
    take,
)

OPEN_STAGES = ["applied", "documents_verified", "assessment_scheduled", "assessed"]

# step → (the one stage it is allowed from, the stage it leads to, a valid payload)
FORWARD = {
    "verify_documents": ("applied", "documents_verified", {}),
    "schedule_assessment": (
        "documents_verified", "assessment_scheduled", {"scheduled_for": "2024-04-02T09:30:00+08:00"},
    ),
    "record_assessment": ("assessment_scheduled", "assessed", {"category": "physical", "grade": 2}),
    "issue_certificate": ("assessed", "issued", None),  # the number depends on the assessment
}


def assessed(category: str = "physical", grade: int = 2) -> ServiceCase:
    case = case_at("certificate", "assessment_scheduled")
    take(case, "record_assessment", {"category": category, "grade": grade})
    return case


def issue(case: ServiceCase, number: str, id_number: str | None = ID_NUMBER) -> None:
    case.take_step(WORKER, "issue_certificate", {"certificate_number": number}, id_number=id_number)


class TestTheStages:
    def test_a_new_application_starts_applied_and_open(self):
        case = open_case("certificate")
        assert (case.stage, case.status, case.outcome) == ("applied", "open", None)

    @pytest.mark.parametrize("step", ["verify_documents", "schedule_assessment", "record_assessment"])
    def test_each_step_moves_the_case_from_its_stage_to_the_next(self, step):
        from_stage, to_stage, payload = FORWARD[step]
        case = case_at("certificate", from_stage)
        case.take_step(WORKER, step, payload, id_number=ID_NUMBER)
        assert (case.stage, case.status, case.outcome) == (to_stage, "open", None)

    @pytest.mark.parametrize(
        "step,stage",
        [
            (step, stage)
            for step, (allowed, _, _) in FORWARD.items()
            for stage in OPEN_STAGES
            if stage != allowed
        ],
    )
    def test_a_step_from_a_wrong_stage_is_not_allowed_and_changes_nothing(self, step, stage):
        case = case_at("certificate", stage)
        case.collect_events()
        before = state_of(case)
        payload = FORWARD[step][2]
        if payload is None:
            payload = {"certificate_number": certificate_number(ID_NUMBER, "physical", 2)}
        with pytest.raises(StepNotAllowed):
            case.take_step(WORKER, step, payload, id_number=ID_NUMBER)
        assert state_of(case) == before
        assert case.collect_events() == []

    def test_the_stage_is_checked_before_the_payload(self):
        case = open_case("certificate")
        with pytest.raises(StepNotAllowed):
            case.take_step(WORKER, "record_assessment", {"category": "blind"}, id_number=ID_NUMBER)

    def test_each_step_records_its_own_past_tense_fact(self):
        case = open_case("certificate")
        for step in ("verify_documents", "schedule_assessment", "record_assessment", "issue_certificate"):
            take(case, step)
        names = [type(e).__name__ for e in case.collect_events()]
        assert names == [
            "CaseOpened", "DocumentsVerified", "AssessmentScheduled", "AssessmentRecorded", "CertificateIssued",
        ]

    def test_a_step_the_kind_does_not_have_is_invalid_input(self):
        case = open_case("certificate")
        with pytest.raises(InvalidInput) as excinfo:
            case.take_step(WORKER, "approve_budget", {"approved_amount": "10.00"})
        assert excinfo.value.field == "step"

    def test_a_certificate_case_cannot_be_closed_as_served_without_issuing(self):
        for stage in OPEN_STAGES:
            case = case_at("certificate", stage)
            with pytest.raises(CommandRefused):
                case.close(WORKER, "served")
            assert case.status == "open"


class TestVerifyDocuments:
    def test_takes_no_payload(self):
        case = open_case("certificate")
        with pytest.raises(InvalidInput) as excinfo:
            case.take_step(WORKER, "verify_documents", {"checked_by": "li"})
        assert excinfo.value.field == "checked_by"
        assert case.stage == "applied"

    def test_a_payload_that_is_not_an_object_is_invalid(self):
        case = open_case("certificate")
        with pytest.raises(InvalidInput) as excinfo:
            case.take_step(WORKER, "verify_documents", ["documents"])
        assert excinfo.value.field == "body"


class TestScheduleAssessment:
    def test_records_when_the_assessment_takes_place(self):
        case = case_at("certificate", "documents_verified")
        take(case, "schedule_assessment", {"scheduled_for": "2024-04-02T09:30:00+08:00"})
        assert case.details["scheduled_for"] == "2024-04-02T09:30:00+08:00"
        event = case.collect_events()[-1]
        assert event.facts == {"scheduled_for": "2024-04-02T09:30:00+08:00"}
        assert event.personal == {}

    def test_the_last_day_allowed_is_a_day_in_shanghai_whatever_offset_is_sent(self):
        """As a visit's moment is: 2100-01-01 01:00 at +14:00 is still 2099-12-31 in Shanghai."""
        case = case_at("certificate", "documents_verified")
        take(case, "schedule_assessment", {"scheduled_for": "2100-01-01T01:00:00+14:00"})
        assert case.stage == "assessment_scheduled"

    @pytest.mark.parametrize(
        "payload,field",
        [
            ({}, "scheduled_for"),
            ({"scheduled_for": None}, "scheduled_for"),
            ({"scheduled_for": "2024-04-02T09:30:00"}, "scheduled_for"),  # no offset
            ({"scheduled_for": "2024-04-02T09:30:00+00:00:01"}, "scheduled_for"),  # an offset ISO 8601 has not
            ({"scheduled_for": "2024-04-31T09:30:00+08:00"}, "scheduled_for"),
            ({"scheduled_for": "next week"}, "scheduled_for"),
            ({"scheduled_for": "2099-12-31T23:59:59-14:00"}, "scheduled_for"),  # 2100-01-01 in Shanghai
            ({"scheduled_for": "2024-04-02T09:30:00+08:00", "room": "3"}, "room"),
        ],
    )
    def test_refuses_a_payload_naming_the_field(self, payload, field):
        case = case_at("certificate", "documents_verified")
        with pytest.raises(InvalidInput) as excinfo:
            take(case, "schedule_assessment", payload)
        assert excinfo.value.field == field
        assert case.stage == "documents_verified"


class TestRecordAssessment:
    @pytest.mark.parametrize("category", list(CATEGORY_DIGIT))
    def test_accepts_every_category(self, category):
        case = assessed(category=category, grade=3)
        assert case.stage == "assessed"
        assert case.details["category"] == category

    @pytest.mark.parametrize("grade", [1, 2, 3, 4])
    def test_accepts_grades_one_to_four(self, grade):
        assert assessed(grade=grade).details["grade"] == grade

    @pytest.mark.parametrize(
        "payload,field",
        [
            ({"category": "blind", "grade": 2}, "category"),
            ({"category": "Visual", "grade": 2}, "category"),
            ({"category": "visual", "grade": 0}, "grade"),
            ({"category": "visual", "grade": 5}, "grade"),
            ({"category": "visual", "grade": "2"}, "grade"),
            ({"category": "visual", "grade": 2.0}, "grade"),
            ({"category": "visual", "grade": True}, "grade"),
            ({"grade": 2}, "category"),
            ({"category": "visual"}, "grade"),
            ({"category": "visual", "grade": 2, "doctor": "zhang"}, "doctor"),
        ],
    )
    def test_refuses_a_payload_naming_the_field(self, payload, field):
        case = case_at("certificate", "assessment_scheduled")
        with pytest.raises(InvalidInput) as excinfo:
            take(case, "record_assessment", payload)
        assert excinfo.value.field == field
        assert case.stage == "assessment_scheduled"
        assert "category" not in case.details


class TestIssueCertificate:
    @pytest.mark.parametrize("category,digit", list(CATEGORY_DIGIT.items()))
    def test_issues_a_number_made_of_the_id_number_category_digit_and_grade(self, category, digit):
        case = assessed(category=category, grade=3)
        issue(case, ID_NUMBER + digit + "3")
        assert (case.stage, case.status, case.outcome) == ("issued", "closed", "served")
        assert case.due_at is None

    def test_the_category_digits_run_from_1_visual_to_7_multiple(self):
        # Spelt out once more, in the order DESIGN.md gives them.
        case = assessed(category="visual", grade=1)
        issue(case, ID_NUMBER + "11")
        case = assessed(category="multiple", grade=4)
        issue(case, ID_NUMBER + "74")
        assert case.outcome == "served"

    def test_accepts_an_id_number_whose_check_character_is_x(self):
        id_number = "11010519491231002X"  # the example of GB 11643
        assert make_id_number(id_number[:17]) == id_number
        case = assessed(category="hearing", grade=4)
        issue(case, id_number + "24", id_number=id_number)
        assert case.outcome == "served"

    def test_takes_the_check_character_x_in_lower_case_too_and_keeps_it_upper(self):
        id_number = "11010519491231002X"
        case = assessed(category="hearing", grade=4)
        case.collect_events()
        issue(case, id_number.lower() + "24", id_number=id_number)
        assert case.collect_events()[0].personal == {"certificate_number": id_number + "24"}

    def test_refuses_a_number_that_is_not_the_persons_id(self):
        case = assessed(category="physical", grade=2)
        with pytest.raises(InvalidInput) as excinfo:
            issue(case, OTHER_ID_NUMBER + "42")
        assert excinfo.value.field == "certificate_number"
        assert case.stage == "assessed" and case.status == "open"

    @pytest.mark.parametrize("suffix", ["24", "41", "43", "14", "00", "77"])
    def test_refuses_a_number_whose_category_or_grade_digit_is_wrong(self, suffix):
        case = assessed(category="physical", grade=2)  # the right suffix is 42
        with pytest.raises(InvalidInput) as excinfo:
            issue(case, ID_NUMBER + suffix)
        assert excinfo.value.field == "certificate_number"
        assert case.stage == "assessed"

    def test_refuses_any_number_once_the_persons_id_number_was_erased(self):
        case = assessed(category="physical", grade=2)
        with pytest.raises(PersonErased):  # 409: a rule refuses it, whatever number is sent
            issue(case, ID_NUMBER + "42", id_number=None)

    @pytest.mark.parametrize(
        "number",
        [ID_NUMBER, ID_NUMBER + "4", ID_NUMBER + "420", ID_NUMBER.lower() + "4a", 35050219800101123442, ""],
    )
    def test_refuses_a_malformed_number(self, number):
        case = assessed(category="physical", grade=2)
        with pytest.raises(InvalidInput) as excinfo:
            issue(case, number)
        assert excinfo.value.field == "certificate_number"

    def test_refuses_a_missing_number(self):
        case = assessed()
        with pytest.raises(InvalidInput) as excinfo:
            case.take_step(WORKER, "issue_certificate", {}, id_number=ID_NUMBER)
        assert excinfo.value.field == "certificate_number"

    def test_keeps_the_number_with_the_personal_values_not_the_facts(self):
        case = assessed(category="physical", grade=2)
        case.collect_events()
        issue(case, ID_NUMBER + "42")
        (event,) = case.collect_events()
        assert event.personal == {"certificate_number": ID_NUMBER + "42"}
        assert event.facts == {}
        assert event.outcome == "served"
        assert case.personal["certificate_number"] == ID_NUMBER + "42"

    def test_no_step_can_be_taken_once_issued(self):
        case = assessed()
        issue(case, ID_NUMBER + "42")
        with pytest.raises(CaseIsClosed):
            take(case, "refuse", {"reason": "changed our mind"})
        with pytest.raises(CaseIsClosed):
            issue(case, ID_NUMBER + "42")
        assert case.outcome == "served"

    def test_reopening_an_issued_case_returns_it_to_assessed(self):
        case = assessed(category="speech", grade=1)
        issue(case, ID_NUMBER + "31")
        case.reopen(SUPERVISOR, "the number was printed wrongly")
        assert (case.stage, case.status, case.outcome) == ("assessed", "open", None)
        issue(case, ID_NUMBER + "31")
        assert case.outcome == "served"


class TestRefuse:
    @pytest.mark.parametrize("stage", OPEN_STAGES)
    def test_refusing_from_any_open_stage_closes_the_case_as_refused(self, stage):
        case = case_at("certificate", stage)
        take(case, "refuse", {"reason": "not resident in the city"})
        assert (case.stage, case.status, case.outcome) == ("refused", "closed", "refused")
        assert case.due_at is None

    @pytest.mark.parametrize("stage", OPEN_STAGES)
    def test_reopening_a_refusal_returns_to_the_stage_it_was_refused_from(self, stage):
        case = case_at("certificate", stage)
        take(case, "refuse", {"reason": "not resident in the city"})
        case.reopen(SUPERVISOR, "residence proven")
        assert (case.stage, case.status, case.outcome) == (stage, "open", None)

    def test_the_reason_is_personal(self):
        case = open_case("certificate")
        case.collect_events()
        take(case, "refuse", {"reason": "not resident in the city"})
        (event,) = case.collect_events()
        assert type(event).__name__ == "CertificateRefused"
        assert event.personal == {"reason": "not resident in the city"}
        assert event.facts == {}

    @pytest.mark.parametrize("payload,field", [({}, "reason"), ({"reason": "  "}, "reason"), ({"reason": 3}, "reason")])
    def test_a_reason_is_required(self, payload, field):
        case = open_case("certificate")
        with pytest.raises(InvalidInput) as excinfo:
            take(case, "refuse", payload)
        assert excinfo.value.field == field
        assert case.status == "open"

    def test_cannot_refuse_a_case_on_hold(self):
        case = open_case("certificate")
        case.put_on_hold(WORKER, "waiting for the hospital report")
        with pytest.raises(CaseOnHold):
            take(case, "refuse", {"reason": "no report"})
        assert case.status == "on_hold"

    def test_cannot_refuse_an_issued_certificate(self):
        case = assessed()
        issue(case, ID_NUMBER + "42")
        with pytest.raises(CaseIsClosed):
            take(case, "refuse", {"reason": "too late"})
        assert (case.stage, case.outcome) == ("issued", "served")
