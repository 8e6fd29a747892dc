"""The nine kinds of service case, declared as data.

A kind is its stages (each with the days it may take), its steps (each a
domain event with its own payload, allowed from some stages, leading to one),
and the stages from which the case may be closed as served. Adding a kind is
adding a declaration here, not a class.
"""

from dataclasses import dataclass
from typing import Any

from domain.fields import Field

ANY_OPEN = "*"  # a step allowed from every open stage


@dataclass(frozen=True)
class Stage:
    name: str
    label: str
    days: int | None  # None: a terminal stage, no clock


@dataclass(frozen=True)
class Step:
    name: str
    event: str  # the past-tense fact recorded, e.g. "CertificateIssued"
    label: str
    from_stages: tuple[str, ...]
    to_stage: str
    fields: tuple[Field, ...] = ()
    closes_with: str | None = None  # outcome, when the step closes the case

    def allowed_from(self, stage: str) -> bool:
        return ANY_OPEN in self.from_stages or stage in self.from_stages


@dataclass(frozen=True)
class CaseKind:
    name: str
    label: str
    stages: tuple[Stage, ...]
    steps: tuple[Step, ...]
    serves_from: tuple[str, ...] = ()  # stages where closure as "served" is allowed

    @property
    def first_stage(self) -> Stage:
        return self.stages[0]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "first_stage": self.first_stage.name,
            "stages": [{"name": s.name, "label": s.label, "days": s.days} for s in self.stages],
            "steps": [
                {
                    "name": st.name,
                    "event": st.event,
                    "label": st.label,
                    "from_stages": list(st.from_stages),
                    "to_stage": st.to_stage,
                    "closes_with": st.closes_with,
                    "payload": [f.describe() for f in st.fields],
                }
                for st in self.steps
            ],
            "serves_from": list(self.serves_from),
        }


CATEGORIES = ("visual", "hearing", "speech", "physical", "intellectual", "mental", "multiple")


def _reason(description: str = "why, in words") -> Field:
    return Field("reason", "text", description, personal=True)


def _on(name: str, description: str, past: bool) -> Field:
    """A day; `past` when it is of something that happened, not a plan."""
    return Field(name, "date", description, past=past)


def _findings(description: str, required: bool = False) -> Field:
    return Field("findings", "text", description, required=required, personal=True)


CERTIFICATE = CaseKind(
    name="certificate",
    label="残疾人证办理",
    stages=(
        Stage("applied", "申请", 15),
        Stage("documents_verified", "材料审核", 10),
        Stage("assessment_scheduled", "预约评定", 30),
        Stage("assessed", "已评定", 10),
        Stage("issued", "已发证", None),
        Stage("refused", "不予办理", None),
    ),
    steps=(
        Step("verify_documents", "DocumentsVerified", "材料审核通过", ("applied",), "documents_verified"),
        Step(
            "schedule_assessment", "AssessmentScheduled", "预约残疾评定",
            ("documents_verified",), "assessment_scheduled",
            (Field("scheduled_for", "datetime", "when the assessment takes place"),),
        ),
        Step(
            "record_assessment", "AssessmentRecorded", "记录评定结果",
            ("assessment_scheduled",), "assessed",
            (
                Field("category", "choice", "disability category", choices=CATEGORIES),
                Field("grade", "integer", "disability grade, 1 (most severe) to 4", minimum=1, maximum=4),
            ),
        ),
        Step(
            "issue_certificate", "CertificateIssued", "发证",
            ("assessed",), "issued",
            (Field(
                "certificate_number", "certificate_number",
                "the person's ID number, then the category digit (1 visual … 7 multiple) and the grade digit",
                personal=True,
            ),),
            closes_with="served",
        ),
        Step("refuse", "CertificateRefused", "不予办理", (ANY_OPEN,), "refused", (_reason(),), closes_with="refused"),
    ),
)

REHABILITATION = CaseKind(
    name="rehabilitation",
    label="康复诊疗",
    stages=(
        Stage("referred", "转介", 14),
        Stage("assessed", "康复评估", 14),
        Stage("planned", "康复计划", 30),
        Stage("in_sessions", "康复训练", 90),
        Stage("reviewed", "效果评估", 14),
    ),
    steps=(
        Step(
            "assess", "RehabilitationAssessed", "康复评估", ("referred",), "assessed",
            (Field("function_level", "choice", "functional level found", choices=("mild", "moderate", "severe")),
             _findings("what the assessor found")),
        ),
        Step(
            "plan", "RehabilitationPlanned", "制定康复计划", ("assessed",), "planned",
            (Field("sessions_planned", "integer", "sessions the plan provides", minimum=1, maximum=200),
             Field("goals", "text", "what the plan aims at", required=False, personal=True)),
        ),
        Step(
            "record_session", "RehabilitationSessionHeld", "记录康复训练", ("planned", "in_sessions"), "in_sessions",
            (_on("held_on", "the day of the session", past=True),
             Field("minutes", "integer", "length of the session", minimum=5, maximum=480)),
        ),
        Step(
            "review", "RehabilitationReviewed", "康复效果评估", ("in_sessions",), "reviewed",
            (Field("result", "choice", "how function changed", choices=("improved", "stable", "declined")),
             _findings("the reviewer's remarks")),
        ),
    ),
    serves_from=("reviewed",),
)

ASSISTIVE_DEVICE = CaseKind(
    name="assistive_device",
    label="辅具适配",
    stages=(
        Stage("requested", "申请", 14),
        Stage("assessed", "适配评估", 30),
        Stage("fitted", "已适配", 30),
        Stage("followed_up", "已回访", None),
    ),
    steps=(
        Step(
            "assess_need", "DeviceNeedAssessed", "适配评估", ("requested",), "assessed",
            (Field("device_type", "choice", "device needed",
                   choices=("wheelchair", "walking_aid", "hearing_aid", "visual_aid", "prosthesis", "daily_living_aid", "other")),),
        ),
        Step("fit_device", "DeviceFitted", "辅具发放适配", ("assessed",), "fitted",
             (_on("fitted_on", "the day the device was fitted", past=True),)),
        Step(
            "follow_up", "DeviceFollowedUp", "使用回访", ("fitted",), "followed_up",
            (Field("in_use", "boolean", "whether the person still uses the device"),),
            closes_with="served",
        ),
    ),
    serves_from=("fitted",),
)

HOME_MODIFICATION = CaseKind(
    name="home_modification",
    label="家庭无障碍改造",
    stages=(
        Stage("requested", "申请", 14),
        Stage("surveyed", "入户勘查", 14),
        Stage("quoted", "方案报价", 21),
        Stage("approved", "审批通过", 30),
        Stage("in_works", "施工", 60),
        Stage("works_completed", "完工待验收", 14),
        Stage("accepted", "验收合格", None),
        Stage("declined", "不予改造", None),
    ),
    steps=(
        Step("survey_home", "HomeSurveyed", "入户勘查", ("requested",), "surveyed",
             (_on("surveyed_on", "the day of the survey", past=True), _findings("what the survey found"))),
        Step(
            "quote_plan", "ModificationQuoted", "改造方案及报价", ("surveyed",), "quoted",
            (Field("items", "text", "the works planned at the person's home", max_length=4000, personal=True),
             Field("quote", "money", "quoted cost in yuan")),
        ),
        Step(
            "approve_budget", "BudgetApproved", "审批预算", ("quoted",), "approved",
            (Field("approved_amount", "money", "yuan approved; at most the quote"),),
        ),
        Step("decline_budget", "BudgetDeclined", "不予审批", ("quoted",), "declined", (_reason(),), closes_with="refused"),
        Step("start_works", "WorksStarted", "开工", ("approved",), "in_works",
             (_on("started_on", "first day of works", past=True),)),
        Step("complete_works", "WorksCompleted", "完工", ("in_works",), "works_completed",
             (_on("completed_on", "last day of works", past=True),)),
        Step("reject_works", "WorksRejected", "验收不合格", ("works_completed",), "in_works",
             (_reason("what must be redone"),)),
        Step("accept_works", "WorksAccepted", "验收合格", ("works_completed",), "accepted",
             (_on("inspected_on", "the day of the inspection", past=True),), closes_with="served"),
    ),
)

MARRIAGE_COUNSELLING = CaseKind(
    name="marriage_counselling",
    label="婚恋辅导",
    stages=(
        Stage("requested", "申请", 14),
        Stage("matched", "已匹配辅导员", 30),
        Stage("in_sessions", "辅导中", 180),
        Stage("concluded", "结案评估", None),
    ),
    steps=(
        Step(
            "match_counsellor", "CounsellorMatched", "匹配辅导员", ("requested",), "matched",
            (Field("counsellor", "text", "the counsellor's staff id at the provider", max_length=64, personal=True),
             Field("provider", "text", "the contracted NGO", max_length=200, personal=True)),
        ),
        Step("record_session", "CounsellingSessionHeld", "记录辅导", ("matched", "in_sessions"), "in_sessions",
             (_on("held_on", "the day of the session", past=True),
              Field("format", "choice", "how the session was held", choices=("individual", "couple", "group")))),
        Step(
            "record_outcome", "CounsellingConcluded", "辅导结果", ("in_sessions",), "concluded",
            (Field("result", "choice", "where the relationship stands",
                   choices=("married", "in_relationship", "continuing_alone", "ended")),),
            closes_with="served",
        ),
    ),
)

HOME_CARE = CaseKind(
    name="home_care",
    label="居家托养",
    stages=(
        Stage("requested", "申请", 14),
        Stage("assessed", "护理评估", 14),
        Stage("in_care", "护理中", 365),
        Stage("ended", "服务结束", None),
    ),
    steps=(
        Step("assess_care_needs", "CareNeedsAssessed", "护理需求评估", ("requested",), "assessed",
             (Field("care_level", "integer", "1 light to 3 full care", minimum=1, maximum=3),
              _findings("what care is needed"))),
        Step("start_care", "CareStarted", "开始护理", ("assessed",), "in_care",
             (_on("starts_on", "first day of care", past=False),
              Field("hours_per_week", "integer", "care hours a week", minimum=1, maximum=168))),
        Step("end_care", "CareEnded", "结束护理", ("in_care",), "ended",
             (_on("ended_on", "last day of care", past=True),), closes_with="served"),
    ),
)

EMPLOYMENT_TRAINING = CaseKind(
    name="employment_training",
    label="就业培训",
    stages=(
        Stage("requested", "申请", 30),
        Stage("enrolled", "已报名", 90),
        Stage("trained", "培训结业", 60),
        Stage("placed", "已就业", None),
    ),
    steps=(
        Step("enrol", "TraineeEnrolled", "报名", ("requested",), "enrolled",
             (Field("course", "text", "the course", max_length=200, personal=True),
              _on("starts_on", "first day of the course", past=False))),
        Step("complete_training", "TrainingCompleted", "结业", ("enrolled",), "trained",
             (_on("completed_on", "last day", past=True),
              Field("certified", "boolean", "whether a skills certificate was gained"))),
        Step("record_placement", "JobPlacementRecorded", "就业安置", ("trained",), "placed",
             (_on("starts_on", "first day at work", past=False),
              Field("employment", "choice", "kind of work", choices=("employed", "self_employed", "sheltered", "public_welfare_post"))),
             closes_with="served"),
    ),
    serves_from=("trained",),
)

PSYCHOLOGICAL_COUNSELLING = CaseKind(
    name="psychological_counselling",
    label="心理疏导",
    stages=(
        Stage("requested", "申请", 7),
        Stage("assessed", "初评", 14),
        Stage("in_sessions", "疏导中", 90),
        Stage("concluded", "结案", None),
    ),
    steps=(
        Step("assess", "PsychologicalNeedsAssessed", "心理评估", ("requested",), "assessed",
             (Field("risk_level", "choice", "risk found", choices=("low", "medium", "high")), _findings("the assessment"))),
        Step("record_session", "PsychologicalSessionHeld", "记录疏导", ("assessed", "in_sessions"), "in_sessions",
             (_on("held_on", "the day of the session", past=True),)),
        Step("conclude", "PsychologicalCounsellingConcluded", "结案评估", ("in_sessions",), "concluded",
             (Field("result", "choice", "how it ended", choices=("improved", "stable", "referred_on")),),
             closes_with="served"),
    ),
)

HEALTH_CHECK = CaseKind(
    name="health_check",
    label="健康查体",
    stages=(
        Stage("requested", "申请", 30),
        Stage("scheduled", "已预约", 30),
        Stage("checked", "已查体", 14),
        Stage("recorded", "已建档", None),
    ),
    steps=(
        Step("schedule_check", "HealthCheckScheduled", "预约查体", ("requested",), "scheduled",
             (Field("scheduled_for", "datetime", "when the check takes place"),
              Field("door_to_door", "boolean", "whether the doctor visits the home"))),
        Step("record_check", "HealthCheckRecorded", "记录查体", ("scheduled",), "checked",
             (_on("checked_on", "the day of the check", past=True), _findings("the doctor's findings"))),
        Step("update_health_record", "HealthRecordUpdated", "更新健康档案", ("checked",), "recorded",
             (Field("medicine_delivered", "boolean", "whether medicine was delivered to the door"),),
             closes_with="served"),
    ),
    serves_from=("checked",),
)

KINDS: dict[str, CaseKind] = {
    k.name: k
    for k in (
        CERTIFICATE, REHABILITATION, ASSISTIVE_DEVICE, HOME_MODIFICATION, MARRIAGE_COUNSELLING,
        HOME_CARE, EMPLOYMENT_TRAINING, PSYCHOLOGICAL_COUNSELLING, HEALTH_CHECK,
    )
}
STAGES = frozenset(stage.name for kind in KINDS.values() for stage in kind.stages)
