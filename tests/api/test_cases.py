"""The case contract of DESIGN.md, through the API, on both stores."""

import base64
import hashlib
import threading
import time
from datetime import datetime, timedelta, timezone
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest

from domain.actor import Actor
from domain.access import token_id
from domain.commands import Idempotency
from domain.errors import InvalidInput
from domain.orgs import OrgUnit
from domain.roster import RECHECK as ROSTER_RECHECK
from tests.conftest import ADMIN
from tests.helpers import client_body


class TestOpenCase:
    def test_answers_201_with_the_case_at_its_first_stage(self, desk):
        case = desk.open()
        for field in ("id", "kind", "client_id", "org_unit", "stage", "status", "outcome", "assignee",
                      "version", "opened_at", "updated_at", "due_at"):
            assert field in case
        assert (case["stage"], case["status"], case["outcome"], case["version"]) == ("applied", "open", None, 1)
        assert case["due_at"].endswith("+08:00")

    def test_null_for_an_optional_field_takes_its_default(self, desk):
        """Phone forms send every field, null for one not chosen."""
        case = desk.open(service_mode=None, priority=None)
        assert (case["service_mode"], case["priority"]) == (None, "normal")
        r = desk.post("/v1/cases", {"kind": "certificate", "client_id": case["client_id"], "org_unit": "350502",
                                    "need": "x", "priority": "whenever"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "priority"

    def test_refuses_an_unknown_kind(self, desk):
        client = desk.register()
        r = desk.post("/v1/cases", {"kind": "haircut", "client_id": client["id"], "org_unit": "350502", "need": "x"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "kind"

    def test_refuses_an_unknown_client_as_it_refuses_one_outside_scope(self, desk, api):
        r = desk.post("/v1/cases", {"kind": "certificate", "client_id": "00000000-0000-0000-0000-000000000001",
                                    "org_unit": "350502", "need": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "client_id"
        elsewhere = api.client.post("/v1/clients", json=client_body(org_unit="350503"),
                                    headers=api.token("case_worker", "350503")).json()
        r = desk.post("/v1/cases", {"kind": "certificate", "client_id": elsewhere["id"], "org_unit": "350502",
                                    "need": "x"})
        assert r.status_code == 422 and r.json()["detail"] == "client_id: no such client in your scope"

    def test_refuses_an_unknown_org_unit(self, desk):
        client = desk.register()
        r = desk.post("/v1/cases", {"kind": "certificate", "client_id": client["id"], "org_unit": "350599", "need": "x"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "org_unit"

    def test_refuses_a_malformed_client_id(self, desk):
        r = desk.post("/v1/cases", {"kind": "certificate", "client_id": "nope", "org_unit": "350502", "need": "x"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "client_id"


class TestCertificateWorkflow:
    def test_walks_from_application_to_issued(self, desk):
        case = desk.open()
        number = case["_client"]["id_number"] + "42"
        steps = [("verify_documents", {}),
                 ("schedule_assessment", {"scheduled_for": "2026-12-01T09:00:00+08:00"}),
                 ("record_assessment", {"category": "physical", "grade": 2}),
                 ("issue_certificate", {"certificate_number": number})]
        for step, payload in steps:
            r = desk.post(f"/v1/cases/{case['id']}/steps/{step}", payload)
            assert r.status_code == 200, r.text
        state = r.json()
        assert (state["stage"], state["status"], state["outcome"]) == ("issued", "closed", "served")
        assert state["details"]["certificate_number"] == number
        assert state["due_at"] is None

    def test_a_step_from_the_wrong_stage_is_409(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/steps/record_assessment", {"category": "visual", "grade": 1})
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert "applied" in r.json()["detail"]

    def test_a_grade_out_of_range_is_422_naming_grade(self, desk):
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/steps/verify_documents")
        desk.post(f"/v1/cases/{case['id']}/steps/schedule_assessment", {"scheduled_for": "2026-12-01T09:00:00+08:00"})
        r = desk.post(f"/v1/cases/{case['id']}/steps/record_assessment", {"category": "visual", "grade": 5})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "grade"

    def test_a_certificate_number_not_of_the_person_is_422(self, desk):
        case = desk.open()
        for step, payload in [("verify_documents", {}),
                              ("schedule_assessment", {"scheduled_for": "2026-12-01T09:00:00+08:00"}),
                              ("record_assessment", {"category": "hearing", "grade": 3})]:
            desk.post(f"/v1/cases/{case['id']}/steps/{step}", payload)
        other = "11010519491231002X"
        r = desk.post(f"/v1/cases/{case['id']}/steps/issue_certificate", {"certificate_number": other + "23"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "certificate_number"

    def test_refuse_closes_the_case_as_refused(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/steps/refuse", {"reason": "材料不全，本人放弃"})
        assert (r.json()["stage"], r.json()["status"], r.json()["outcome"]) == ("refused", "closed", "refused")

    def test_an_unknown_step_is_422(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/steps/fly")
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "step"


class TestStepDays:
    def counselled(self, desk) -> dict:
        """A psychological counselling case at the stage where sessions are held."""
        case = desk.open(kind="psychological_counselling")
        assert desk.post(f"/v1/cases/{case['id']}/steps/assess", {"risk_level": "low"}).status_code == 200
        return case

    @pytest.mark.parametrize("held_on", ["2026-W48-7", "20261129", "2026-11-29T10:00:00+08:00"])
    def test_a_step_day_is_written_as_yyyy_mm_dd(self, desk, held_on):
        """As its refusal says, and as a contract's days are: Python 3.11 reads ISO week and basic forms."""
        case = self.counselled(desk)
        r = desk.post(f"/v1/cases/{case['id']}/steps/record_session", {"held_on": held_on})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "held_on", r.text

    def test_a_session_is_not_held_after_today_in_shanghai(self, desk):
        """As a visit in the future is refused; today is Shanghai's, wherever the phone is."""
        case = self.counselled(desk)
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
        r = desk.post(f"/v1/cases/{case['id']}/steps/record_session", {"held_on": str(today + timedelta(days=1))})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "held_on", r.text
        r = desk.post(f"/v1/cases/{case['id']}/steps/record_session", {"held_on": str(today)})
        assert r.status_code == 200 and r.json()["details"]["held_on"] == str(today)


class TestCommonCommands:
    def test_a_note_of_zero_width_spaces_alone_is_422(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "\u200b\u200b"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"

    def test_assign_note_and_visit(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/assignment", {"assignee": "wang-liaison"})
        assert r.json()["assignee"] == "wang-liaison" and r.headers["etag"] == '"2"'
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "家属要求上门"})
        assert r.json()["notes"] == 1
        visited = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
        r = desk.post(f"/v1/cases/{case['id']}/visits", {"mode": "door_to_door", "visited_at": visited, "summary": "入户"})
        assert r.status_code == 200 and r.json()["visits"] == 1

    def test_a_case_is_assigned_to_any_user_a_token_can_name(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/assignment", {"assignee": "licheng:wang.2"})
        assert r.status_code == 200 and r.json()["assignee"] == "licheng:wang.2"
        r = desk.post(f"/v1/cases/{case['id']}/assignment", {"assignee": "w" * 65})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "assignee"

    def test_a_case_is_not_assigned_to_a_known_user_who_could_not_see_it(self, api, desk):
        """The case left every queue, and its liaison subsidy went to someone who never saw it."""
        case = desk.open()  # in 350502
        api.app.add_org_units(ADMIN, [OrgUnit("350502001", "海滨街道", "township")])
        api.token("case_worker", "350502001", user="lin-worker")  # one township: the case lies above it
        api.token("case_worker", "350503", user="zhou-worker")  # another district
        api.token("auditor", user="wu-auditor")
        url = f"/v1/cases/{case['id']}/assignment"
        for assignee in ("zhou-worker", "wu-auditor", "lin-worker"):
            r = desk.post(url, {"assignee": assignee})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "assignee", (assignee, r.text)
        assert desk.get(f"/v1/cases/{case['id']}").json()["assignee"] is None
        api.token("supervisor", "350502", user="zhou-worker")  # moved here: issued after the refusal
        r = desk.post(url, {"assignee": "zhou-worker"})
        assert r.status_code == 200 and r.json()["assignee"] == "zhou-worker", r.text

    def test_a_refusal_is_never_decided_on_a_read_begun_before_the_request(self, api, monkeypatch):
        """A request waiting for another thread's read took that read for its own: one begun before a
        token the request should see was issued, and refused the user that token lets in."""
        app, roster = api.app, api.app.roster
        app.issue_token(ADMIN, "mover", "case_worker", "350503")
        with pytest.raises(InvalidInput):
            roster.check_assignee("mover", "350502")  # known, elsewhere
        head_of, sampled, release = app.recorder.max_notification_id, threading.Event(), threading.Event()

        def slow_head():
            head = head_of()
            if threading.current_thread().name == "earlier-read":
                sampled.set()
                release.wait(5)
            return head

        monkeypatch.setattr(app.recorder, "max_notification_id", slow_head)
        earlier = threading.Thread(target=roster._read_logged, args=(time.monotonic(),), name="earlier-read")
        earlier.start()
        assert sampled.wait(5)  # a read under way, its head taken
        app.issue_token(ADMIN, "mover", "case_worker", "350502")  # moved here, before the request below
        outcome = []

        def request():
            try:
                roster.check_assignee("mover", "350502")
                outcome.append("accepted")
            except InvalidInput as error:
                outcome.append(f"refused: {error}")

        asked = threading.Thread(target=request)
        asked.start()
        time.sleep(0.3)  # it waits for the read under way
        release.set()
        earlier.join(5)
        asked.join(5)
        assert outcome == ["accepted"]

    def test_nor_to_a_user_whose_only_token_for_its_unit_was_revoked(self, api, desk):
        case = desk.open()  # in 350502
        secret = api.app.issue_token(ADMIN, "gone-worker", "case_worker", "350502")
        api.app.issue_token(ADMIN, "gone-worker", "case_worker", "350503")  # still works, elsewhere
        url = f"/v1/cases/{case['id']}/assignment"
        assert desk.post(url, {"assignee": "gone-worker"}).status_code == 200
        api.app.revoke_token(ADMIN, token_id(secret))  # left Licheng
        time.sleep(ROSTER_RECHECK)  # how stale an acceptance may be
        assert desk.post(url, {"assignee": "lin"}).status_code == 200  # away from them, to assign again
        r = desk.post(url, {"assignee": "gone-worker"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "assignee", r.text

    def test_a_visit_needs_a_known_mode_and_an_offset(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/visits", {"mode": "telepathy", "visited_at": "2026-01-01T10:00:00+08:00", "summary": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "mode"
        r = desk.post(f"/v1/cases/{case['id']}/visits", {"mode": "proxy", "visited_at": "2026-01-01T10:00:00", "summary": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "visited_at"

    @pytest.mark.parametrize("visited_at", [0, 1700000000, "1700000000", "0001-01-01T00:00:00+14:00"])
    def test_a_visit_moment_is_iso_8601_text_of_a_plausible_day(self, desk, visited_at):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/visits", {"mode": "proxy", "visited_at": visited_at, "summary": "x"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "visited_at", r.text
        assert desk.get(f"/v1/cases/{case['id']}").json()["version"] == 1

    def test_hold_stops_steps_and_resume_restarts_them(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/hold", {"reason": "住院"})
        assert r.json()["status"] == "on_hold"
        assert desk.post(f"/v1/cases/{case['id']}/steps/verify_documents").status_code == 409
        assert desk.post(f"/v1/cases/{case['id']}/hold", {"reason": "again"}).status_code == 409
        r = desk.post(f"/v1/cases/{case['id']}/resume", {"reason": "出院"})
        assert r.json()["status"] == "open"
        assert r.json()["due_at"] >= case["due_at"]
        assert desk.post(f"/v1/cases/{case['id']}/steps/verify_documents").status_code == 200

    def test_close_and_reopen(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "withdrawn", "reason": "本人撤回"})
        assert (r.json()["status"], r.json()["outcome"], r.json()["due_at"]) == ("closed", "withdrawn", None)
        assert desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "withdrawn"}).status_code == 409
        r = desk.post(f"/v1/cases/{case['id']}/reopening", {"reason": "重新申请"})
        assert (r.json()["status"], r.json()["outcome"], r.json()["stage"]) == ("open", None, "applied")
        assert r.json()["due_at"] is not None

    def test_closing_as_served_before_the_kind_allows_it_is_409(self, desk):
        case = desk.open(kind="rehabilitation")
        r = desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "served"})
        assert r.status_code == 409

    def test_an_unknown_outcome_is_422(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "vanished"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "outcome"

    def test_unknown_body_fields_are_422(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "x", "colour": "red"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "colour"

    def test_a_body_past_a_megabyte_is_413_whoever_sends_it(self, api, desk):
        """It is refused as it arrives: read whole and parsed, even without a token, it took memory."""
        url = f"/v1/cases/{desk.open()['id']}/notes"
        big = b'{"text": "' + b"x" * 1024 * 1024 + b'"}'
        for caller in ({}, desk.auth):
            for body in (big, iter([big[:4096]] * 300)):  # with its length declared, and chunked
                r = api.client.post(url, content=body, headers={**caller, "Content-Type": "application/json"})
                assert (r.status_code, r.headers["content-type"]) == (413, "application/problem+json")
        assert desk.get(f"{url.removesuffix('/notes')}/history").json()["items"][-1]["type"] != "NoteAdded"

    def test_malformed_json_is_422(self, desk):
        case = desk.open()
        r = desk.http.post(f"/v1/cases/{case['id']}/notes", content=b"{not json",
                           headers={**desk.auth, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"

    @pytest.mark.parametrize(("sent", "content_type", "reason"), [
        ('{"text": "上门"}'.encode(), "text/plain;charset=UTF-8", "Content-Type: application/json (it came as text/plain)"),
        ('{"text": "上门"}'.encode("gbk"), "application/json", "is not JSON in UTF-8"),
    ])
    def test_a_body_not_sent_as_json_in_utf_8_is_told_so(self, desk, sent, content_type, reason):
        """A browser's fetch sends a string as text/plain: the object in it was said to be no object."""
        case = desk.open()
        r = desk.http.post(f"/v1/cases/{case['id']}/notes", content=sent, headers={**desk.auth, "Content-Type": content_type})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body" and reason in r.json()["detail"], r.text


class TestConcurrencyHeaders:
    def test_if_match_with_the_current_version_succeeds(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "a"}, **{"If-Match": '"1"'})
        assert r.status_code == 200 and r.headers["etag"] == '"2"'

    def test_a_stale_if_match_is_412_and_appends_nothing(self, desk):
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/notes", {"text": "a"})
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "b"}, **{"If-Match": '"1"'})
        assert r.status_code == 412
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "version 1 is not current; the current version is 2"
        assert desk.get(f"/v1/cases/{case['id']}").json()["version"] == 2
        far = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "c"}, **{"If-Match": '"12345678901"'})
        assert far.status_code == 412

    @pytest.mark.parametrize("if_match", ["yesterday", '"1', '1"', 'W/"1', "W/1"])
    def test_a_malformed_if_match_is_422(self, desk, if_match):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "a"}, **{"If-Match": if_match})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "If-Match"

    @pytest.mark.parametrize("if_match", ['"1"', 'W/"1"', "1", " 1 "])
    def test_if_match_takes_a_version_quoted_weak_or_bare(self, desk, if_match):
        """A proxy may weaken the ETag it passed on; some clients send the version bare."""
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "a"}, **{"If-Match": if_match})
        assert r.status_code == 200 and r.headers["etag"] == '"2"'

    def test_x_position_grows_with_each_write(self, desk):
        case = desk.open()
        first = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "a"})
        second = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "b"})
        assert int(second.headers["x-position"]) > int(first.headers["x-position"])


class TestIdempotencyKey:
    def test_a_repeat_returns_the_first_answer_and_appends_nothing(self, desk, api):
        case = desk.open()
        first = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "once"}, **{"Idempotency-Key": "note-1"})
        head = api.app.recorder.max_notification_id()
        again = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "once"}, **{"Idempotency-Key": "note-1"})
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["x-position"] == first.headers["x-position"]
        # Nothing at all: not even a record of the answer's read, which the first answer's transaction holds.
        assert api.app.recorder.max_notification_id() == head
        assert desk.get(f"/v1/cases/{case['id']}").json()["version"] == 2

    @pytest.mark.parametrize("expected", [None, 1])
    def test_a_twin_answered_while_this_request_was_under_way_gives_this_one_its_answer(self, desk, api,
                                                                                      monkeypatch, expected):
        """Two sends of one request race: the second looks for a receipt, finds none, and then the first
        commits. Refused by the state the first left (documents already verified, or If-Match no longer
        current), the second answers the first's answer, not 409 or 412."""
        case_id = UUID(desk.open()["id"])
        worker, idem = Actor(desk.user, "case_worker"), Idempotency(desk.user, "twin-1", "fingerprint")
        looked_up, twin = api.app._receipt, []

        def receipt_then_the_twin_commits(claim):
            found = looked_up(claim)
            if not twin:
                twin.append(None)
                twin[0] = api.app.take_step(worker, idem, case_id, expected, "verify_documents", {})
            return found

        monkeypatch.setattr(api.app, "_receipt", receipt_then_the_twin_commits)
        second = api.app.take_step(worker, idem, case_id, expected, "verify_documents", {})
        assert second.replayed and (second.id, second.version) == (twin[0].id, twin[0].version) == (case_id, 2)

    def test_a_repeated_creation_answers_201_again_with_the_same_case(self, desk):
        client = desk.register()
        body = {"kind": "home_care", "client_id": client["id"], "org_unit": "350502", "need": "托养"}
        first = desk.post("/v1/cases", body, **{"Idempotency-Key": "open-1"})
        again = desk.post("/v1/cases", body, **{"Idempotency-Key": "open-1"})
        assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]

    def test_a_retry_of_a_request_answered_before_fingerprints_were_keyed_finds_its_answer(self, desk, api):
        """A receipt written before 2026-11-29 kept a plain SHA-256 of route and canonical body."""
        case = desk.open()
        path = f"/v1/cases/{case['id']}/notes"
        plain = hashlib.sha256(f"POST {path}\n".encode() + b'{"text":"old"}').hexdigest()
        first = api.app.update_case(Idempotency(desk.user, "old-1", plain), UUID(case["id"]), None,
                                    lambda c: c.add_note(Actor(desk.user, "case_worker"), "old"))
        again = desk.post(path, {"text": "old"}, **{"Idempotency-Key": "old-1"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["version"] == first.version == 2
        assert desk.post(path, {"text": "new"}, **{"Idempotency-Key": "old-1"}).status_code == 422

    def test_a_refused_command_keeps_no_answer_so_its_repeat_is_judged_afresh(self, desk):
        """README's example: a visit refused while its case was closed is recorded by a repeat once the case is
        reopened (a note would not do: notes are taken on closed cases)."""
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "withdrawn"})
        visit = {"mode": "door_to_door", "visited_at": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(),
                 "summary": "入户"}
        assert desk.post(f"/v1/cases/{case['id']}/visits", visit, **{"Idempotency-Key": "v-1"}).status_code == 409
        desk.post(f"/v1/cases/{case['id']}/reopening", {"reason": "家属要求"})
        r = desk.post(f"/v1/cases/{case['id']}/visits", visit, **{"Idempotency-Key": "v-1"})
        assert r.status_code == 200 and r.json()["visits"] == 1 and "idempotent-replayed" not in r.headers

    def test_the_same_key_with_another_body_is_422(self, desk):
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/notes", {"text": "one"}, **{"Idempotency-Key": "k"})
        r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "two"}, **{"Idempotency-Key": "k"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"

    def test_the_answer_replayed_is_the_state_then_not_now(self, desk):
        case = desk.open()
        first = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "one"}, **{"Idempotency-Key": "k1"})
        desk.post(f"/v1/cases/{case['id']}/notes", {"text": "two"})
        again = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "one"}, **{"Idempotency-Key": "k1"})
        assert again.json() == first.json() and again.json()["notes"] == 1

    def test_keys_belong_to_their_caller(self, desk, api):
        case = desk.open()
        other = api.token("case_worker", "350502")
        desk.post(f"/v1/cases/{case['id']}/notes", {"text": "mine"}, **{"Idempotency-Key": "shared"})
        r = desk.http.post(f"/v1/cases/{case['id']}/notes", json={"text": "theirs"},
                           headers={**other, "Idempotency-Key": "shared"})
        assert r.status_code == 200 and r.json()["notes"] == 2


class TestReadingThePast:
    def test_version_gives_the_case_as_it_was(self, desk):
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/steps/verify_documents")
        past = desk.get(f"/v1/cases/{case['id']}", version=1).json()
        assert (past["stage"], past["version"]) == ("applied", 1)
        assert desk.get(f"/v1/cases/{case['id']}", version=9).status_code == 404
        assert desk.get(f"/v1/cases/{case['id']}", version=0).status_code == 422

    def test_as_of_gives_the_case_as_it_stood(self, desk):
        case = desk.open()
        time.sleep(0.01)
        between = datetime.now(timezone.utc).isoformat()
        time.sleep(0.01)
        desk.post(f"/v1/cases/{case['id']}/steps/verify_documents")
        assert desk.get(f"/v1/cases/{case['id']}", as_of=between).json()["stage"] == "applied"
        assert desk.get(f"/v1/cases/{case['id']}").json()["stage"] == "documents_verified"

    def test_as_of_before_the_case_existed_is_404(self, desk):
        case = desk.open()
        assert desk.get(f"/v1/cases/{case['id']}", as_of="2001-01-01T00:00:00+08:00").status_code == 404

    @pytest.mark.parametrize("as_of", ["2026-01-01T00:00:00", "1700000000", "2026-01-01"])
    def test_as_of_without_an_offset_or_not_iso_8601_is_422(self, desk, as_of):
        case = desk.open()
        r = desk.get(f"/v1/cases/{case['id']}", as_of=as_of)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "as_of"


class TestHistory:
    def test_lists_every_event_with_actor_and_time_in_pages(self, desk):
        case = desk.open()
        for text in ("a", "b", "c"):
            desk.post(f"/v1/cases/{case['id']}/notes", {"text": text})
        page = desk.get(f"/v1/cases/{case['id']}/history", limit=3).json()
        assert [e["type"] for e in page["items"]] == ["CaseOpened", "NoteAdded", "NoteAdded"]
        assert page["items"][0]["actor"] == {"user": "li-worker", "role": "case_worker"}
        assert page["items"][1]["data"] == {"text": "a"}
        rest = desk.get(f"/v1/cases/{case['id']}/history", limit=3, cursor=page["next_cursor"]).json()
        assert [e["version"] for e in rest["items"]] == [4] and rest["next_cursor"] is None

    def test_a_forged_cursor_is_422(self, desk):
        case = desk.open()
        r = desk.get(f"/v1/cases/{case['id']}/history", cursor="!!!")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"
        digits_not_ours = base64.urlsafe_b64encode("v1:²".encode()).decode()  # a digit to isdigit, not to int
        r = desk.get(f"/v1/cases/{case['id']}/history", cursor=digits_not_ours)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"

    def test_an_auditor_sees_history_with_personal_text_withheld(self, desk, api):
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/notes", {"text": "病情说明"})
        items = api.client.get(f"/v1/cases/{case['id']}/history", headers=api.token("auditor")).json()["items"]
        assert items[1]["data"] == {"text": None} and items[1]["type"] == "NoteAdded"

    def test_withheld_step_values_stay_in_the_shape_as_null(self, desk, api):
        """Withheld is null, as the need is: a reader tells "withheld" from "none recorded" (the plan's goals)."""
        case = desk.open(kind="rehabilitation")
        desk.post(f"/v1/cases/{case['id']}/steps/assess", {"function_level": "mild", "findings": "left arm weak"})
        desk.post(f"/v1/cases/{case['id']}/steps/plan", {"sessions_planned": 10})
        auditor = api.token("auditor")
        state = api.client.get(f"/v1/cases/{case['id']}", headers=auditor).json()
        assert state["details"] == {"function_level": "mild", "findings": None, "sessions_planned": 10}
        assert desk.get(f"/v1/cases/{case['id']}").json()["details"]["findings"] == "left arm weak"
        items = api.client.get(f"/v1/cases/{case['id']}/history", headers=auditor).json()["items"]
        assert items[0]["data"]["need"] is None
        assert [e["data"].get("findings", "absent") for e in items[1:]] == [None, "absent"]


class TestScope:
    def test_a_case_outside_scope_is_404_for_reads_and_commands(self, desk, api):
        case = desk.open()
        outsider = api.token("case_worker", "350503")
        assert api.client.get(f"/v1/cases/{case['id']}", headers=outsider).status_code == 404
        r = api.client.post(f"/v1/cases/{case['id']}/notes", json={"text": "x"}, headers=outsider)
        assert r.status_code == 404

    def test_a_supervisor_above_sees_cases_below(self, desk, api):
        case = desk.open(org_unit="350502")
        city = api.token("supervisor", "350500")
        assert api.client.get(f"/v1/cases/{case['id']}", headers=city).status_code == 200

    def test_an_auditor_reads_but_may_not_act(self, desk, api):
        case = desk.open()
        auditor = api.token("auditor")
        assert api.client.get(f"/v1/cases/{case['id']}", headers=auditor).status_code == 200
        r = api.client.post(f"/v1/cases/{case['id']}/notes", json={"text": "x"}, headers=auditor)
        assert (r.status_code, r.json()["detail"]) == (403, "an auditor may not update case")

    def test_a_role_that_may_not_act_is_told_so_before_anything_about_its_headers(self, desk, api):
        case, auditor = desk.open(), api.token("auditor")
        bad = {**auditor, "Idempotency-Key": "not a key", "If-Match": "three"}
        for path, body in ((f"/v1/cases/{case['id']}/notes", {"text": "x"}), ("/v1/clients", {}), ("/v1/cases", {})):
            r = api.client.post(path, json=body, headers=bad)
            assert (r.status_code, r.headers["content-type"]) == (403, "application/problem+json"), path

    @pytest.mark.parametrize("path", ["/v1/cases", "/v1/cases/{case}/notes", "/v1/clients"])
    def test_a_malformed_body_is_401_without_a_token_and_403_for_a_role_refused(self, api, desk, path):
        """FastAPI parses a JSON body before it checks the caller: the caller still comes first."""
        url = path.format(case=desk.open()["id"])
        bad = {"Content-Type": "application/json"}
        r = api.client.post(url, content=b"{bad", headers=bad)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert api.client.post(url, content=b"{bad", headers={**bad, **api.token("auditor")}).status_code == 403
        r = api.client.post(url, content=b"{bad", headers={**bad, **desk.auth})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
        unreadable = b'{"need": "\xc3"}'  # not UTF-8: Starlette's 400, before any dependency too
        assert api.client.post(url, content=unreadable, headers=bad).status_code == 401
        assert api.client.post(url, content=unreadable, headers={**bad, **api.token("auditor")}).status_code == 403

    def test_a_read_for_ones_writes_without_a_token_is_401_whatever_position_it_names(self, api):
        for position in (1, 10**12):
            assert api.client.get("/v1/workload", params={"min_position": position}).status_code == 401

    def test_a_revoked_or_unknown_token_is_401(self, api):
        assert api.client.get("/v1/case-kinds", headers={"Authorization": "Bearer lm_forged"}).status_code == 401
        assert api.client.get("/v1/case-kinds", headers={"Authorization": "Basic abc"}).status_code == 401


class TestReferenceData:
    def test_case_kinds_serves_the_nine_declarations(self, api):
        items = api.client.get("/v1/case-kinds", headers=api.token("contractor", provider="ngo-1")).json()["items"]
        assert len(items) == 9
        certificate = next(k for k in items if k["name"] == "certificate")
        assert [s["name"] for s in certificate["stages"]][:4] == ["applied", "documents_verified", "assessment_scheduled", "assessed"]

    def test_case_kinds_says_which_days_are_of_what_happened(self, api):
        """A client can check before sending that a session held is not after today, and that a plan may be."""
        items = api.client.get("/v1/case-kinds", headers=api.token("auditor")).json()["items"]
        days = {(k["name"], s["name"], p["name"]): p for k in items for s in k["steps"] for p in s["payload"]}
        assert days[("rehabilitation", "record_session", "held_on")]["past"] is True
        assert days[("home_care", "start_care", "starts_on")]["past"] is False
        assert days[("certificate", "schedule_assessment", "scheduled_for")]["past"] is False

    def test_org_units_lists_the_built_in_tree(self, api):
        items = api.client.get("/v1/org-units", headers=api.token("auditor")).json()["items"]
        codes = {u["code"]: u for u in items}
        assert codes["350590"]["parent"] == "350500" and codes["350500"]["parent"] is None
        assert len([u for u in items if u["kind"] == "county"]) == 12


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints_answer(api, path):
    assert api.client.get(path).status_code == 200
    probed = api.client.head(path)  # as load balancers and uptime checks ask
    assert probed.status_code == 200 and probed.content == b"", probed.text


def test_a_head_of_a_case_is_not_allowed(api, desk):
    """A HEAD of a read would record a disclosure of values no one was shown."""
    case = desk.open()
    probed = api.client.head(f"/v1/cases/{case['id']}", headers=desk.auth)
    assert probed.status_code == 405
