"""The read side through the API: lists, workload, subsidies, audit search, operations."""

import csv
import io
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from openpyxl import load_workbook

from domain.clock import SHANGHAI, local
from domain.orgs import OrgUnit
from projections.subsidies import liaison_work
from projections.timefmt import micros
from tests.api.conftest import Desk
from tests.conftest import ADMIN
from tests.helpers import client_body


def fresh(desk, response) -> dict:
    """Read-your-writes: the position of a write, for min_position."""
    return {"min_position": response.headers["x-position"]}


class TestCaseList:
    def test_lists_newest_first_with_filters_and_cursor_paging(self, desk):
        opened = [desk.open(kind=k) for k in ("certificate", "home_care", "certificate")]
        last = desk.post(f"/v1/cases/{opened[0]['id']}/assignment", {"assignee": "chen"})
        page = desk.get("/v1/cases", limit=2, **fresh(desk, last)).json()
        assert [c["id"] for c in page["items"]] == [opened[2]["id"], opened[1]["id"]]
        rest = desk.get("/v1/cases", limit=2, cursor=page["next_cursor"]).json()
        assert [c["id"] for c in rest["items"]] == [opened[0]["id"]] and rest["next_cursor"] is None
        assert [c["id"] for c in desk.get("/v1/cases", kind="home_care").json()["items"]] == [opened[1]["id"]]
        assert [c["id"] for c in desk.get("/v1/cases", assignee="chen").json()["items"]] == [opened[0]["id"]]
        assert desk.get("/v1/cases", status="closed").json()["items"] == []
        mine = desk.get("/v1/cases", client_id=opened[1]["client_id"]).json()["items"]  # one person's cases
        assert [c["id"] for c in mine] == [opened[1]["id"]]
        bad = desk.get("/v1/cases", client_id="someone")
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "client_id"

    def test_an_export_holds_every_case_up_to_ten_thousand_and_json_pages_hold_fifty(self, desk, api, monkeypatch):
        monkeypatch.setattr("api.routes.cases.PAGE_LIMIT", 2)  # the default page, made small
        opened = [desk.open() for _ in range(3)]
        last = desk.post(f"/v1/cases/{opened[0]['id']}/notes", {"text": "x"})
        assert len(desk.get("/v1/cases", **fresh(desk, last)).json()["items"]) == 2
        exported = desk.get("/v1/cases", format="csv")
        assert len(exported.text.strip().splitlines()) == 1 + 3 and "x-next-cursor" not in exported.headers
        assert desk.get("/v1/cases", format="csv", limit=10_000).status_code == 200
        too_many = desk.get("/v1/cases", limit=501)
        assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "limit"

    def test_lists_the_unassigned_and_the_active_cases_the_workload_counts(self, desk):
        assigned, unassigned, closed = (desk.open() for _ in range(3))
        desk.post(f"/v1/cases/{assigned['id']}/assignment", {"assignee": "chen"})
        desk.post(f"/v1/cases/{unassigned['id']}/hold", {"reason": "in hospital"})
        last = desk.post(f"/v1/cases/{closed['id']}/closure", {"outcome": "withdrawn"})

        def listed(**filters) -> list[str]:
            return [c["id"] for c in desk.get("/v1/cases", **fresh(desk, last), **filters).json()["items"]]

        assert listed(unassigned="true", status="active") == [unassigned["id"]]
        assert listed(unassigned="false") == [assigned["id"]]
        assert listed(status="active") == [unassigned["id"], assigned["id"]]
        row = next(r for r in desk.get("/v1/workload", by="assignee").json()["items"] if r["key"] is None)
        assert row["open"] == len(listed(unassigned="true", status="active"))
        both = desk.get("/v1/cases", unassigned="true", assignee="chen")
        assert both.status_code == 422 and both.json()["errors"][0]["field"] == "unassigned"

    def test_shows_only_the_callers_scope(self, desk, api):
        desk.open(org_unit="350502")
        last = api.client.post("/v1/clients", json=client_body(org_unit="350503"), headers=api.token("admin"))
        elsewhere = api.token("case_worker", "350503")
        items = api.client.get("/v1/cases", params=fresh(desk, last), headers=elsewhere).json()["items"]
        assert items == []

    def test_bad_filters_are_422(self, desk):
        assert desk.get("/v1/cases", kind="haircut").status_code == 422
        assert desk.get("/v1/cases", status="lost").status_code == 422
        assert desk.get("/v1/cases", org_unit="999999").status_code == 422
        assert desk.get("/v1/cases", cursor="zzz").status_code == 422


class TestReadYourWrites:
    def test_min_position_beyond_the_log_is_422(self, desk):
        r = desk.get("/v1/cases", min_position=10**9)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "min_position"

    def test_a_write_is_visible_at_its_position(self, desk):
        case = desk.open()
        r = desk.post(f"/v1/cases/{case['id']}/steps/verify_documents")
        listed = desk.get("/v1/cases", **fresh(desk, r)).json()["items"]
        assert listed[0]["stage"] == "documents_verified" and listed[0]["version"] == 2


class TestWorkload:
    @pytest.fixture
    def villages(self, api):
        api.app.add_org_units(ADMIN, [OrgUnit("350502001", "海滨街道", "township"),
                                      OrgUnit("350502001001", "新华社区", "community"),
                                      OrgUnit("350502002", "开元街道", "township")])

    def test_a_township_row_includes_its_villages(self, desk, villages):
        desk.open(org_unit="350502001001")
        desk.open(org_unit="350502001")
        last = desk.open(org_unit="350502002")
        rows = {r["key"]: r for r in desk.get("/v1/workload", by="org_unit", min_position=last["_position"]).json()["items"]}
        assert rows["350502001001"]["open"] == 1
        assert rows["350502001"]["open"] == 2
        assert rows["350502002"]["open"] == 1
        assert rows["350502"]["open"] == 3
        assert "350500" not in rows  # above the case worker's scope
        assert set(rows["350502"]) == {"key", "open", "overdue", "due_soon", "closed_this_month"}

    def test_a_unit_whose_cases_all_closed_before_this_month_keeps_a_row_of_zeros(self, desk, villages, monkeypatch):
        """DESIGN.md: a row for every unit in the caller's scope that has cases at or below it (a
        dashboard joining on units showed a village missing rather than at nought)."""
        case = desk.open(org_unit="350502001001")
        last = desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "withdrawn"})

        class NextMonth(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.now(tz) + timedelta(days=40)

        monkeypatch.setattr("api.routes.workload.datetime", NextMonth)
        rows = {r["key"]: r for r in desk.get("/v1/workload", by="org_unit", **fresh(desk, last)).json()["items"]}
        zeros = {"open": 0, "overdue": 0, "due_soon": 0, "closed_this_month": 0}
        for unit in ("350502001001", "350502001", "350502"):
            assert rows[unit] == {"key": unit, **zeros}, rows
        assert "350502002" not in rows  # no case was ever opened there

    def test_a_village_alone_rolls_up_to_its_county(self, desk, villages):
        last = desk.open(org_unit="350502001001")
        rows = {r["key"]: r for r in desk.get("/v1/workload", by="org_unit", min_position=last["_position"]).json()["items"]}
        assert [rows[u]["open"] for u in ("350502001001", "350502001", "350502")] == [1, 1, 1]

    def test_a_township_directly_under_the_city_rolls_up_to_the_city(self, api):
        api.app.add_org_units(ADMIN, [OrgUnit("350500001", "开发区街道", "township")])
        city = Desk(api)
        city.auth = api.token("supervisor", "350500")
        last = city.open(org_unit="350500001")
        rows = {r["key"]: r for r in city.get("/v1/workload", by="org_unit", min_position=last["_position"]).json()["items"]}
        assert rows["350500001"]["open"] == 1 and rows["350500"]["open"] == 1 and None not in rows

    def test_counts_closed_this_month_and_on_hold_cases_are_not_overdue(self, desk):
        a, b = desk.open(), desk.open()
        desk.post(f"/v1/cases/{a['id']}/closure", {"outcome": "withdrawn"})
        last = desk.post(f"/v1/cases/{b['id']}/hold", {"reason": "外出务工"})
        row = desk.get("/v1/workload", by="kind", **fresh(desk, last)).json()["items"][0]
        assert (row["key"], row["open"], row["closed_this_month"], row["overdue"]) == ("certificate", 1, 1, 0)

    def test_by_assignee(self, desk):
        a = desk.open()
        last = desk.post(f"/v1/cases/{a['id']}/assignment", {"assignee": "lin"})
        rows = desk.get("/v1/workload", by="assignee", **fresh(desk, last)).json()["items"]
        assert {"key": "lin", "open": 1, "overdue": 0, "due_soon": 0, "closed_this_month": 0} in rows

    def test_keys_come_in_order_with_the_unassigned_last(self, desk):
        desk.open()
        for assignee in ("zhao", "an"):
            last = desk.post(f"/v1/cases/{desk.open()['id']}/assignment", {"assignee": assignee})
        rows = desk.get("/v1/workload", by="assignee", **fresh(desk, last)).json()["items"]
        assert [(r["key"], r["open"]) for r in rows] == [("an", 1), ("zhao", 1), (None, 1)]

    def test_a_key_with_only_closed_cases_counts_them_in_closed_this_month(self, desk):
        a = desk.open()
        desk.post(f"/v1/cases/{a['id']}/assignment", {"assignee": "wu"})
        last = desk.post(f"/v1/cases/{a['id']}/closure", {"outcome": "withdrawn"})
        rows = desk.get("/v1/workload", by="assignee", **fresh(desk, last)).json()["items"]
        assert {"key": "wu", "open": 0, "overdue": 0, "due_soon": 0, "closed_this_month": 1} in rows

    def test_an_unknown_grouping_is_422(self, desk):
        r = desk.get("/v1/workload", by="colour")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "by"


class TestLiaisonSubsidies:
    def work(self, desk, visits: int) -> str:
        case = desk.open()
        desk.post(f"/v1/cases/{case['id']}/assignment", {"assignee": desk.user})
        visited = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()
        last = None
        for _ in range(visits):
            last = desk.post(f"/v1/cases/{case['id']}/visits", {"mode": "door_to_door", "visited_at": visited,
                                                                "summary": "走访"})
        return last.headers["x-position"]

    def test_work_and_subsidy_by_the_default_tiers(self, desk, api):
        position = self.work(desk, visits=9)
        month = local(datetime.now(timezone.utc)).strftime("%Y-%m")
        supervisor = api.token("supervisor", "350502")
        r = api.client.get("/v1/reports/liaison-subsidies", params={"month": month, "min_position": position},
                           headers=supervisor)
        row = next(i for i in r.json()["items"] if i["liaison"] == desk.user)
        assert row == {"liaison": desk.user, "cases_handled": 1, "visits": 9, "subsidy": "100.00"}

    def test_a_liaisons_subsidy_is_the_same_whichever_township_asks(self, desk, api):
        """Six cases in one township and five in another: 11 cases, 100 yuan, not 50 + 50."""
        townships = [OrgUnit(f"35050200{n}", f"街道{n}", "township") for n in (1, 2)]
        api.app.add_org_units(ADMIN, townships)
        last = None
        for township, count in zip(townships, (6, 5)):
            for _ in range(count):
                case = desk.open(org_unit=township.code)
                last = desk.post(f"/v1/cases/{case['id']}/assignment", {"assignee": "liaison-c"})
        month = local(datetime.now(timezone.utc)).strftime("%Y-%m")
        for scope in ("350502", "350502001", "350502002"):
            r = api.client.get("/v1/reports/liaison-subsidies", headers=api.token("supervisor", scope),
                               params={"month": month, "min_position": last.headers["x-position"]})
            row = next(i for i in r.json()["items"] if i["liaison"] == "liaison-c")
            assert (row["cases_handled"], row["subsidy"]) == (11, "100.00"), scope
        elsewhere = api.client.get("/v1/reports/liaison-subsidies", headers=api.token("supervisor", "350503"),
                                   params={"month": month})
        assert all(i["liaison"] != "liaison-c" for i in elsewhere.json()["items"])

    def test_no_one_has_earned_anything_in_a_month_not_yet_begun(self, desk, api):
        position = self.work(desk, visits=1)  # an assignment still open: it lasts until now, not beyond
        now = local(datetime.now(timezone.utc))
        following = (now.replace(day=1) + timedelta(days=32)).strftime("%Y-%m")
        supervisor = api.token("supervisor", "350502")
        for month, expected in ((now.strftime("%Y-%m"), True), (following, False), ("9998-12", False)):
            r = api.client.get("/v1/reports/liaison-subsidies", params={"month": month, "min_position": position},
                               headers=supervisor)
            assert any(i["liaison"] == desk.user for i in r.json()["items"]) is expected, month

    def test_csv_and_xlsx_carry_the_same_rows(self, desk, api):
        position = self.work(desk, visits=1)
        month = local(datetime.now(timezone.utc)).strftime("%Y-%m")
        params = {"month": month, "min_position": position}
        admin = api.token("admin")
        text = api.client.get("/v1/reports/liaison-subsidies", params={**params, "format": "csv"}, headers=admin)
        assert text.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(text.content.decode("utf-8-sig"))))
        assert {"liaison": desk.user, "cases_handled": "1", "visits": "1", "subsidy": "50.00"} in rows
        book = api.client.get("/v1/reports/liaison-subsidies", params={**params, "format": "xlsx"}, headers=admin)
        sheet = load_workbook(io.BytesIO(book.content)).active
        values = [tuple(c.value for c in row) for row in sheet.iter_rows()]
        assert values[0] == ("liaison", "cases_handled", "visits", "subsidy")
        assert (desk.user, 1, 1, 50) in values  # a number a spreadsheet sums, shown as 50.00
        assert {row[3].number_format for row in sheet.iter_rows(min_row=2)} == {"0.00"}

    def test_a_bad_month_is_422_and_a_case_worker_may_not_read_it(self, desk, api):
        r = api.client.get("/v1/reports/liaison-subsidies", params={"month": "2026-13"}, headers=api.token("admin"))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "month"
        assert desk.get("/v1/reports/liaison-subsidies", month="2026-01").status_code == 403


class TestAuditSearch:
    def test_finds_a_cases_events_by_case_and_actor_without_personal_text(self, desk, api):
        case = desk.open()
        last = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "病情说明"})
        auditor = api.token("auditor")
        params = {"case_id": case["id"], "min_position": last.headers["x-position"]}
        items = api.client.get("/v1/audit/events", params=params, headers=auditor).json()["items"]
        # each answer showed the case worker the person's values: recorded, and found by the case too
        assert [i["type"] for i in items] == ["CaseOpened", "PersonalDataRead", "NoteAdded", "PersonalDataRead"]
        assert {i["data"]["resource_id"] for i in items if i["type"] == "PersonalDataRead"} == {case["id"]}
        assert items[2]["actor"] == {"user": "li-worker", "role": "case_worker"}
        assert "病情说明" not in str(items)
        by_actor = api.client.get("/v1/audit/events", params={"actor": "li-worker", "limit": 2}, headers=auditor).json()
        assert len(by_actor["items"]) == 2 and by_actor["next_cursor"]

    def test_time_range_and_roles(self, desk, api):
        last = desk.open()
        auditor = api.token("auditor")
        future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
        r = api.client.get("/v1/audit/events", params={"from": future, "min_position": last["_position"]},
                           headers=auditor)
        assert r.json()["items"] == []
        assert desk.get("/v1/audit/events").status_code == 403
        for field, value in (("from", "0"), ("to", "1700000000"), ("from", "2026-01-01")):  # not ISO 8601 moments
            r = api.client.get("/v1/audit/events", params={field: value}, headers=auditor)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, (field, value)


class TestOperations:
    def test_projections_report_position_and_lag(self, desk, api):
        case = desk.open()
        desk.get("/v1/cases", min_position=case["_position"])
        items = api.client.get("/v1/projections", headers=api.token("auditor")).json()["items"]
        assert {i["name"] for i in items} == {"cases", "audit", "liaisons", "chain"}
        assert all(i["position"] >= int(case["_position"]) for i in items)

    def test_metrics_show_http_figures_and_lag(self, desk, api):
        desk.open()
        text = api.client.get("/metrics").text
        assert "lastmeter_http_requests_total" in text
        assert 'lastmeter_projection_lag_events{view="cases"}' in text

    def test_the_command_line_rebuilds_every_view_to_the_same_rows(self, desk, api, cli):
        case = desk.open()
        last = desk.post(f"/v1/cases/{case['id']}/assignment", {"assignee": "lin"})
        before = desk.get("/v1/cases", **fresh(desk, last)).json()["items"]
        result = cli("projections", "rebuild")
        assert result.exit_code == 0, result.output
        assert "rebuilt cases, audit, liaisons, chain: the log up to position" in result.output
        assert desk.get("/v1/cases").json()["items"] == before
        status = cli("projections", "status")
        assert status.exit_code == 0 and "chain" in status.output

    def test_ready_once_the_views_follow(self, api):
        r = api.client.get("/readyz")
        assert r.status_code == 200 and set(r.json()["views"]) == {"cases", "audit", "liaisons", "chain"}


class TestSpreadsheetLists:
    def test_the_case_list_and_the_workload_come_as_csv_and_xlsx_too(self, desk):
        case = desk.open()
        text = desk.get("/v1/cases", format="csv", min_position=case["_position"])
        assert text.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(text.content.decode("utf-8-sig"))))
        assert rows[0]["id"] == case["id"]
        book = desk.get("/v1/workload", by="kind", format="xlsx")
        sheet = load_workbook(io.BytesIO(book.content)).active
        assert [c.value for c in next(sheet.iter_rows())] == ["key", "open", "overdue", "due_soon",
                                                                "closed_this_month"]


def test_not_ready_once_the_projector_has_stopped(api):
    assert api.client.get("/readyz").status_code == 200
    api.client.app.state.readside._stop.set()  # the projector thread ends, as if it had died
    api.client.app.state.readside._runner.join(timeout=10)
    r = api.client.get("/readyz")
    assert r.status_code == 503 and "not running" in r.json()["detail"]


def test_not_ready_while_the_projector_keeps_failing_and_ready_again_once_it_does_not(api, desk, monkeypatch):
    from api import readside as following

    monkeypatch.setattr(following, "RETRY_AFTER_FAILURE", 0.02)
    readside = api.client.app.state.readside
    desk.get("/v1/cases", min_position=desk.open()["_position"])

    def chain_position(change: str) -> None:  # lowered, the chain's next link is one it holds: every round fails
        with readside.store.write() as tx:
            tx.execute(f"UPDATE projection_positions SET position = position {change} WHERE name = 'chain'")

    chain_position("- 1")
    deadline = time.monotonic() + 10
    while readside.failing < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = api.client.get("/readyz")
    assert r.status_code == 503 and "failed" in r.json()["detail"], r.text
    chain_position("+ 1")
    deadline = time.monotonic() + 10
    while api.client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.client.get("/readyz").status_code == 200 and readside.failing == 0


def test_the_projector_process_keeps_the_views_up_and_stops_with_the_server(settings, lastmeter):
    """The server's own projector as deployed: on PostgreSQL a process of its own, on SQLite a thread."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    deployed = settings.model_copy(update={"projector_process": True, "min_position_wait": 60})  # a slow start
    with TestClient(create_app(deployed)) as client:
        readside = client.app.state.readside
        assert readside.in_a_process == settings.is_postgres and readside.following
        auditor = {"Authorization": f"Bearer {lastmeter.issue_token(ADMIN, 'auditor-p', 'auditor')}"}
        head = lastmeter.recorder.max_notification_id()
        r = client.get("/v1/audit/events", params={"min_position": head}, headers=auditor)
        assert r.status_code == 200, r.text
        assert client.get("/readyz").status_code == 200 and readside.failing == 0
        deadline = time.monotonic() + 5  # the process shares its counts just after it commits
        while readside.processed()["audit"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert readside.processed()["audit"] >= 1
        metrics = client.get("/metrics").text
        assert 'lastmeter_projection_events_processed_total{view="audit"}' in metrics
    assert not readside.following


def test_a_projector_process_whose_server_is_killed_stops(settings):
    """A server killed without a word (SIGKILL) leaves no projector process behind."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not settings.is_postgres:
        pytest.skip("on SQLite the projector is a thread of the server")
    server = subprocess.Popen(
        [sys.executable, "-c", "import time\n"
         "from api.backend import open_backend\nfrom api.readside import ReadSide\n"
         "from api.settings import Settings\n"
         "readside = ReadSide(open_backend(Settings()), in_a_process=True)\nreadside.start()\n"
         "print(readside._runner.pid, flush=True)\ntime.sleep(600)\n"],
        env={**os.environ, "LASTMETER_DATABASE_URL": settings.database_url,
             "LASTMETER_POSTGRES_SCHEMA": settings.postgres_schema, "LASTMETER_MASTER_KEY": settings.master_key},
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    projector = int(server.stdout.readline())
    server.kill()
    server.wait()

    def running(pid: int) -> bool:  # a zombie waiting for its new parent to reap it is not running
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while running(projector) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(projector)


def test_a_projector_process_that_dies_is_started_again(settings, lastmeter, monkeypatch):
    """Killed (SIGKILL, the out-of-memory killer), the projector is started again: the views follow
    the log on without a restart of the server, and readiness comes back."""
    import os
    import signal

    from fastapi.testclient import TestClient

    from api import readside as following
    from api.app import create_app

    if not settings.is_postgres:
        pytest.skip("on SQLite the projector is a thread of the server")
    monkeypatch.setattr(following, "WATCH", 0.1)
    deployed = settings.model_copy(update={"projector_process": True, "min_position_wait": 15})
    with TestClient(create_app(deployed)) as client:
        readside = client.app.state.readside
        first = readside._runner.pid
        os.kill(first, signal.SIGKILL)
        auditor = {"Authorization": f"Bearer {lastmeter.issue_token(ADMIN, 'auditor-k', 'auditor')}"}
        head = lastmeter.recorder.max_notification_id()
        r = client.get("/v1/audit/events", params={"min_position": head}, headers=auditor)
        assert r.status_code == 200, r.text
        assert readside._runner.pid != first
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 200
    assert not readside.following


@contextmanager
def another_leads(settings, env: dict[str, str]) -> Iterator[None]:
    """Holds the lead of the store's projectors, as another server's projector would."""
    import psycopg

    from projections.store import LEAD_LOCK

    if not settings.is_postgres:
        pytest.skip("on SQLite the projector is a thread of the server, and leads alone")
    with psycopg.connect(f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/"
                         f"{env['POSTGRES_DBNAME']}", autocommit=True) as leader:
        leader.execute(f"SET search_path TO {env['POSTGRES_SCHEMA'] or 'public'}")
        leader.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", (LEAD_LOCK,))
        yield


def test_a_server_whose_projector_was_killed_while_it_waited_still_stops(settings, lastmeter):
    """A projector waiting for another to stop leading waits on the stop signal; killed then (kill -9),
    it left a multiprocessing.Event broken, and the server's shutdown hung for good on setting it."""
    import os
    import signal
    import threading

    from fastapi.testclient import TestClient

    from api.app import create_app

    with another_leads(settings, lastmeter.env):
        client = TestClient(create_app(settings.model_copy(update={"projector_process": True})))
        client.__enter__()
        time.sleep(2)  # the projector process has started and waits on the stop signal for the lead
        os.kill(client.app.state.readside._runner.pid, signal.SIGKILL)
        stopping = threading.Thread(target=client.__exit__, args=(None, None, None), daemon=True)
        stopping.start()
        stopping.join(timeout=30)
        assert not stopping.is_alive()


def test_a_projector_process_that_keeps_dying_is_started_again_less_and_less_often(backend, monkeypatch):
    """Dying soon after each start (the same batch too big for memory), it is not started every second."""
    import threading
    from types import SimpleNamespace

    from api import readside as following
    from api.readside import ReadSide

    monkeypatch.setattr(following, "WATCH", 0.02)
    monkeypatch.setattr(following, "LONGEST_PAUSE", 0.32)
    readside, starts = ReadSide(backend), []
    dead = SimpleNamespace(is_alive=lambda: False, exitcode=-9)
    monkeypatch.setattr(readside, "_projector_process", lambda: starts.append(time.monotonic()) or dead)
    readside._runner = dead
    watchdog = threading.Thread(target=readside._watch)
    watchdog.start()
    time.sleep(1.5)
    readside._stop.set()
    watchdog.join()
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert len(gaps) >= 4 and gaps[0] < 0.15 and all(gap > 0.28 for gap in gaps[3:]), gaps
    assert readside.failing in (len(starts), len(starts) + 1)  # each death counted (the last maybe not yet replaced)


def test_one_projector_at_a_time_follows_a_store_and_another_takes_over_when_it_ends(backend, settings):
    """`serve --workers N`, two servers, or `lastmeter projector` beside them: each process has a
    projector, and all but one wait (each of them read every batch, and all but one wrote nothing)."""
    import threading
    from functools import partial
    from types import SimpleNamespace

    from api.readside import ReadSide, follow, projector_in_this_process

    if not settings.is_postgres:
        pytest.skip("SQLite's projector is a thread of the one process that writes")
    readside = ReadSide(backend)  # the views, set up
    app, views = backend.lastmeter, readside.projector
    opening = partial(projector_in_this_process, dict(app.env))
    stops, counts = [threading.Event(), threading.Event()], [[0] * len(views.views), [0] * len(views.views)]
    followers = [threading.Thread(target=follow, args=(opening, stop, count, SimpleNamespace(value=0)))
                 for stop, count in zip(stops, counts)]

    def written_and_followed() -> None:
        app.issue_token(ADMIN, f"u-{uuid.uuid4().hex[:6]}", "auditor")
        assert views.wait_for(app.recorder.max_notification_id(), 20)

    try:
        followers[0].start()
        written_and_followed()
        followers[1].start()
        time.sleep(1)  # it has opened, and waits its turn
        for _ in range(10):  # ten races it would have won some of
            written_and_followed()
        assert sum(counts[0]) > 0 and sum(counts[1]) == 0, counts
        stops[0].set()
        followers[0].join()
        written_and_followed()
        assert sum(counts[1]) > 0, counts
    finally:
        for stop, follower in zip(stops, followers):
            stop.set()
            if follower.is_alive():
                follower.join()


def test_a_projector_standing_by_once_the_store_answers_is_no_longer_failing(backend, settings, lastmeter):
    """Failures while the store restarted are over once it answers; a projector that then stands by
    for another (`serve --workers 2`: each worker has one) is not failing, and its worker is ready."""
    import threading
    from functools import partial
    from types import SimpleNamespace

    from api.readside import ReadSide, follow, projector_in_this_process

    ReadSide(backend)  # the views, set up
    stop, failing = threading.Event(), SimpleNamespace(value=3)  # it failed while the store restarted
    with another_leads(settings, lastmeter.env):
        follower = threading.Thread(target=follow, args=(partial(projector_in_this_process, dict(lastmeter.env)),
                                                         stop, None, failing))
        follower.start()
        try:
            deadline = time.monotonic() + 10
            while failing.value and time.monotonic() < deadline:
                time.sleep(0.01)
            assert failing.value == 0
        finally:
            stop.set()
            follower.join()


def test_a_projector_process_that_cannot_reach_the_store_keeps_trying(backend, settings):
    from api.readside import ReadSide

    if not settings.is_postgres:
        pytest.skip("on SQLite the projector is a thread of the server")
    readside = ReadSide(backend, in_a_process=True)
    readside.env["POSTGRES_PORT"] = "1"  # nothing listens there: every start fails at once
    readside.start()
    try:
        time.sleep(3)  # several failed starts, a second apart
        assert readside.following
    finally:
        readside.close()
    assert not readside.following


def test_a_projector_process_stops_once_its_parent_is_gone():
    import os
    import threading

    from projections.runner import UntilOrphaned

    assert not UntilOrphaned(threading.Event(), os.getppid()).is_set()
    gone = UntilOrphaned(threading.Event(), parent=-1)
    assert gone.is_set() and gone.wait(0)


def test_not_ready_while_a_view_is_far_behind(settings, lastmeter):
    """With the projector in its own process (`lastmeter projector`), readiness follows the lag."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import ADMIN

    apart = settings.model_copy(update={"run_projector": False, "ready_max_lag": 2})
    with TestClient(create_app(apart)) as client:
        assert client.get("/readyz").status_code == 200
        for user in ("a", "b", "c"):
            lastmeter.issue_token(ADMIN, user, "auditor")
        r = client.get("/readyz")
    assert r.status_code == 503 and "far behind" in r.json()["detail"]


def test_not_ready_while_a_view_is_another_version_s(settings, lastmeter):
    """A process of the version before, started beside this one, made the audit view anew for itself
    and leads the projectors: this server answered from rows that version keeps (values this one
    withholds among them) and said it was ready."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    apart = settings.model_copy(update={"run_projector": False})
    with TestClient(create_app(apart)) as client:
        assert client.get("/readyz").status_code == 200
        with client.app.state.readside.store.write() as tx:
            tx.execute("UPDATE projection_positions SET fingerprint = 'older' WHERE name = 'audit'")
        r = client.get("/readyz")
    assert r.status_code == 503 and "another version of lastmeter: audit" in r.json()["detail"], r.text


def test_a_read_waiting_for_a_position_the_views_do_not_reach_is_503(settings, lastmeter):
    """With no projector running, a min_position just written is never reached: 503 with Retry-After."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import ADMIN

    apart = settings.model_copy(update={"run_projector": False, "min_position_wait": 0.2})
    with TestClient(create_app(apart)) as client:
        auditor = {"Authorization": f"Bearer {lastmeter.issue_token(ADMIN, 'auditor-w', 'auditor')}"}
        head = lastmeter.recorder.max_notification_id()
        r = client.get("/v1/audit/events", params={"min_position": head}, headers=auditor)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.headers["content-type"].startswith("application/problem+json")


class TestEveryListPages:
    """Lists made whole per request (reference data, workload, reports, views) page with limit and
    cursor like the others; without a limit they answer whole, as a spreadsheet export wants."""

    LISTS = [("/v1/case-kinds", {}), ("/v1/org-units", {}), ("/v1/workload", {"by": "org_unit"}),
             ("/v1/workload", {"by": "assignee"}), ("/v1/reports/liaison-subsidies", {"month": "this"}),
             ("/v1/projections", {})]

    @pytest.mark.parametrize("path,params", LISTS, ids=[f"{p}{q}" for p, q in LISTS])
    def test_pages_add_up_to_the_whole_list(self, desk, api, path, params):
        for assignee in ("lin", "wu", desk.user):
            last = desk.post(f"/v1/cases/{desk.open()['id']}/assignment", {"assignee": assignee})
        admin = api.token("admin")
        if params.get("month"):
            params = {"month": local(datetime.now(timezone.utc)).strftime("%Y-%m")}
        if path != "/v1/projections":  # the views' own positions move while they are read
            params["min_position"] = last.headers["x-position"]
        whole = api.client.get(path, params=params, headers=admin).json()
        assert whole["next_cursor"] is None and len(whole["items"]) >= 2
        pages, cursor = [], None
        while True:
            page = api.client.get(path, params={**params, "limit": 1, **({"cursor": cursor} if cursor else {})},
                                  headers=admin).json()
            assert len(page["items"]) == 1
            pages += page["items"]
            if (cursor := page["next_cursor"]) is None:
                break
        key = "name" if path == "/v1/projections" else None
        assert [p[key] if key else p for p in pages] == [w[key] if key else w for w in whole["items"]]
        r = api.client.get(path, params={**params, "limit": 1, "cursor": "not-a-cursor"}, headers=admin)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"

    def test_an_item_that_joins_before_the_cursor_shifts_nothing_after_it(self, desk, api):
        for assignee in ("lin", "wu"):
            desk.post(f"/v1/cases/{desk.open()['id']}/assignment", {"assignee": assignee})
        admin, params = api.token("admin"), {"by": "assignee", "limit": 1}
        settled = desk.post(f"/v1/cases/{desk.open()['id']}/notes", {"text": "x"}).headers["x-position"]
        first = api.client.get("/v1/workload", params={**params, "min_position": settled}, headers=admin).json()
        assert [i["key"] for i in first["items"]] == ["lin"]
        last = desk.post(f"/v1/cases/{desk.open()['id']}/assignment", {"assignee": "an"})  # sorts before "lin"
        second = api.client.get("/v1/workload", params={**params, "cursor": first["next_cursor"],
                                                        "min_position": last.headers["x-position"]}, headers=admin)
        assert [i["key"] for i in second.json()["items"]] == ["wu"]

    def test_a_cursor_of_another_kind_of_list_is_refused(self, desk, api):
        opened = [desk.open() for _ in range(2)]
        cases = desk.get("/v1/cases", limit=1, min_position=opened[-1]["_position"]).json()
        assert cases["next_cursor"] is not None
        r = api.client.get("/v1/case-kinds", params={"limit": 1, "cursor": cases["next_cursor"]}, headers=desk.auth)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"


def test_an_assignment_counts_in_the_months_it_was_held_and_no_other(api):
    """Spells of assignment, held from and to the first instant of a month (Asia/Shanghai)."""
    store = api.client.app.state.readside.store
    july, august = (datetime(2025, month, 1, tzinfo=SHANGHAI) for month in (7, 8))
    spells = [("c1", "ended-at-july", july - timedelta(days=3), july),  # ends as July begins: June's only
              ("c2", "into-july", july - timedelta(days=3), july + timedelta(microseconds=1)),
              ("c3", "open-since-june", july - timedelta(days=3), None)]
    with store.write() as tx:
        tx.insert("view_liaison_spells", ("case_id", "assignee", "org_unit", "started_at", "ended_at"),
                  [(case, who, "350502", micros(start), micros(end) if end else None)
                   for case, who, start, end in spells])
    with store.read() as tx:
        now = july + timedelta(days=40)  # in August
        in_july = liaison_work(tx, july, august, now=now)
        in_september = liaison_work(tx, august + timedelta(days=31), august + timedelta(days=61), now=now)
    assert set(in_july) == {"into-july", "open-since-june"} and in_september == {}


def test_a_projector_failure_is_logged_with_its_traceback_and_without_its_message(caplog):
    """A fault in a view (a KeyError, say) would otherwise fail round after round with its type alone."""
    import threading
    from types import SimpleNamespace

    from api.readside import follow

    stop, given = threading.Event(), "350502198001011235"  # a message may carry what a person gave

    def opening():
        stop.set()
        raise KeyError(given)

    with caplog.at_level(logging.ERROR, logger="lastmeter.projector"):
        follow(opening, stop, None, SimpleNamespace(value=0))
    (record,) = [r for r in caplog.records if r.name == "lastmeter.projector"]
    assert "in opening" in record.exc_text and "KeyError (message withheld)" in record.exc_text
    assert given not in caplog.text
