"""No personal value in plaintext anywhere in the store: every table and file, on both stores."""

import hashlib
import json
import logging
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from api.backend import open_backend
from domain.actor import Actor
from domain.application import LastMeter
from domain.clock import today
from domain.commands import Idempotency
from domain.purchasing import DeliveryRow
from domain.receipt import CommandReceipt
from tests.helpers import id_number

NAME, ADDRESS = "欧阳明珠", "洛江区万安街道双阳社区17号"
PHONE, ID_NUMBER = "13655512345", id_number("350504", seed=424242)
NEED, NOTE, SUMMARY, REASON = "需要康复训练与辅具", "右腿截肢后情绪低落", "上门评估居家环境", "住院治疗中"
WORKS, COURSE, REJECTED = "卫生间加装扶手与坡道", "盲人按摩初级班", "服务对象当日住院未上门"
TODAY = datetime.now(timezone.utc).astimezone(timezone(timedelta(hours=8))).date()


def write_everything(desk) -> str:
    """Sends every kind of personal value through the API; returns the last position."""
    client = desk.post("/v1/clients", {"name": NAME, "id_number": ID_NUMBER, "phone": PHONE, "address": ADDRESS,
                                       "org_unit": "350502"}).json()
    case = desk.post("/v1/cases", {"kind": "certificate", "client_id": client["id"], "org_unit": "350502",
                                   "need": NEED}, **{"Idempotency-Key": "open-private"}).json()
    base = f"/v1/cases/{case['id']}"
    visited = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    desk.post(f"{base}/notes", {"text": NOTE})
    desk.post(f"{base}/visits", {"mode": "door_to_door", "visited_at": visited, "summary": SUMMARY})
    desk.post(f"{base}/hold", {"reason": REASON})
    desk.post(f"{base}/resume", {"reason": REASON + "结束"})
    for step, payload in [("verify_documents", {}),
                          ("schedule_assessment", {"scheduled_for": "2026-12-01T09:00:00+08:00"}),
                          ("record_assessment", {"category": "physical", "grade": 2}),
                          ("issue_certificate", {"certificate_number": ID_NUMBER + "42"})]:
        last = desk.post(f"{base}/steps/{step}", payload)
        assert last.status_code == 200, last.text
    last = step_values_and_a_rejected_delivery(desk, client["id"])
    desk.get("/v1/cases", min_position=last.headers["x-position"])  # every view has caught up
    return last.headers["x-position"]


def step_values_and_a_rejected_delivery(desk, client_id: str):
    """The works planned at the person's home, their course, and why a delivery for them was rejected."""
    def opened(kind: str) -> str:
        return desk.post("/v1/cases", {"kind": kind, "client_id": client_id, "org_unit": "350502",
                                       "need": NEED}).json()["id"]

    home = opened("home_modification")
    desk.post(f"/v1/cases/{home}/steps/survey_home", {"surveyed_on": TODAY.isoformat()})
    assert desk.post(f"/v1/cases/{home}/steps/quote_plan", {"items": WORKS, "quote": "5000"}).status_code == 200
    assert desk.post(f"/v1/cases/{opened('employment_training')}/steps/enrol",
                     {"course": COURSE, "starts_on": TODAY.isoformat()}).status_code == 200
    rejected = desk.post(f"{pending_delivery(desk, client_id)}/review", {"accepted": False, "reason": REJECTED})
    assert rejected.status_code == 200 and rejected.json()["reason"] == REJECTED
    return rejected


def pending_delivery(desk, client_id: str) -> str:
    """A contractor's delivery for a home-care case of the person, not yet reviewed: its path."""
    supervisor = desk.api.token("supervisor", "350502")
    contract = desk.http.post("/v1/contracts", headers=supervisor, json={
        "provider": "ngo-p", "service_kind": "home_care", "unit": "hour", "unit_price": "80.00", "budget": "800.00",
        "starts_on": (TODAY - timedelta(days=1)).isoformat(), "ends_on": (TODAY + timedelta(days=1)).isoformat(),
        "org_units": ["350502"]}).json()
    care = desk.post("/v1/cases", {"kind": "home_care", "client_id": client_id, "org_unit": "350502",
                                   "need": NEED}).json()["id"]
    desk.post(f"/v1/cases/{care}/referral", {"contract_id": contract["id"]})
    delivery = desk.http.post(f"/v1/contracts/{contract['id']}/deliveries",
                              headers=desk.api.token("contractor", provider="ngo-p"),
                              json={"case_id": care, "delivered_on": today().isoformat(), "units": 1,
                                    "reference": "P-1"}).json()
    return f"/v1/contracts/{contract['id']}/deliveries/{delivery['id']}"


def needles() -> list[bytes]:
    values = [NAME, ADDRESS, PHONE, ID_NUMBER, NEED, NOTE, SUMMARY, REASON, WORKS, COURSE, REJECTED]
    forms = []
    for value in values:
        forms.append(value.encode())
        forms.append(json.dumps(value).strip('"').encode())  # as JSON would escape it
    return forms


def found_in(blob: bytes) -> list[bytes]:
    return [needle for needle in needles() if needle in blob]


def test_no_personal_value_is_stored_or_logged_in_plaintext(desk, settings, caplog):
    caplog.set_level(logging.DEBUG)
    write_everything(desk)
    assert store_leaks(settings) == {}
    assert found_in(caplog.text.encode()) == []
    # and the values are there for those who may read them
    client = desk.get("/v1/cases", status="closed").json()["items"][0]
    assert desk.get(f"/v1/clients/{client['client_id']}").json()["name"] == NAME


def store_leaks(settings) -> dict[str, list[bytes]]:
    """Where in the store (file or table) a personal value was found in plaintext."""
    if settings.is_postgres:
        leaks = postgres_leaks(settings)
    else:
        folder = Path(settings.sqlite_path).parent
        leaks = {path.name: found_in(path.read_bytes()) for path in folder.iterdir() if path.is_file()}
    return {where: hits for where, hits in leaks.items() if hits}


def test_an_import_row_refused_for_what_it_held_leaves_no_copy_of_it(api, desk, settings):
    """A shifted column can put a name and an ID number where the reference belongs: the row is
    refused, and the receipt that keeps the import's answer must not keep them."""
    contractor = Actor("ngo-p-staff", "contractor")
    contract = api.app.create_contract(Actor("li-supervisor", "supervisor"), None, ["350502"], provider="ngo-p",
                                       service_kind="home_care", unit="hour", unit_price="80.00", budget="800.00",
                                       starts_on=TODAY, ends_on=TODAY)
    rows = {2: DeliveryRow(str(uuid4()), TODAY, 1, f"{NAME} {ID_NUMBER}")}
    key = Idempotency(contractor.user, "shifted-columns", "fingerprint")
    _, first = api.app.import_deliveries(contractor, key, contract.id, rows)
    _, again = api.app.import_deliveries(contractor, key, contract.id, rows)
    assert first == again and first[0].result == "refused" and first[0].reference == f"{NAME} {ID_NUMBER}"
    assert store_leaks(settings) == {}


def postgres_leaks(settings) -> dict[str, list[bytes]]:
    leaks = {}
    with psycopg.connect(settings.database_url) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                              (settings.postgres_schema,)).fetchall()
        assert len(tables) >= 5
        for (table,) in tables:
            rows = conn.execute(f'SELECT * FROM "{settings.postgres_schema}"."{table}"').fetchall()
            blob = b"\n".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
                              for row in rows for v in row)
            leaks[table] = found_in(blob)
    return leaks


def test_a_receipt_keeps_no_digest_of_its_request_to_check_a_guess_against(api, desk):
    """An idempotency receipt fingerprints its request with a key of the server's: a plain hash of a
    body that carries personal values would confirm a guess of them to anyone who reads the log."""
    case = desk.open()
    path, body = f"/v1/cases/{case['id']}/notes", {"text": NOTE}
    written = desk.post(path, body, **{"Idempotency-Key": "note-1"})
    assert written.status_code == 200
    guess = f"POST {path}\n".encode() + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    plain = hashlib.sha256(guess).hexdigest().encode()
    assert not any(plain in n.state for n in api.app.recorder.select_notifications(1, 100_000))
    receipt = CommandReceipt.id_for(desk.user, "note-1")
    audited = api.client.get("/v1/audit/events", headers=api.token("auditor"),
                             params={"case_id": str(receipt), "min_position": written.headers["x-position"]})
    (answered,) = audited.json()["items"]
    assert answered["type"] == "CommandAnswered" and "request_hash" not in answered["data"]


def test_a_new_sqlite_store_and_its_journal_are_readable_by_their_owner_alone(desk, settings):
    if settings.is_postgres:
        pytest.skip("PostgreSQL's files are the server's")
    write_everything(desk)
    folder = Path(settings.sqlite_path).parent
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir() if path.is_file()}
    assert {"lastmeter.db", "lastmeter.db-wal"} <= modes.keys()
    assert {name: mode for name, mode in modes.items() if mode & 0o077} == {}


def test_an_application_given_no_mapper_that_seals_refuses_to_store_personal_data(settings):
    app = LastMeter(env=settings.eventsourcing_env())
    try:
        app.found()
        with pytest.raises(RuntimeError, match="stored only sealed"):
            app.register_client(Actor("li-worker", "case_worker"), None, name=NAME, id_number=id_number(seed=3),
                                phone="13500000000", org_unit="350502")
    finally:
        app.close()


def test_an_older_store_others_may_read_is_named_at_start(settings, tmp_path, caplog):
    if settings.is_postgres:
        pytest.skip("PostgreSQL's files are the server's")
    store = tmp_path / "older.db"
    store.touch()
    store.chmod(0o644)
    backend = open_backend(settings.model_copy(update={"database_url": f"sqlite:///{store}"}))
    backend.close()
    assert f"the store {store} can be read by other users" in caplog.text
    assert stat.S_IMODE(store.stat().st_mode) == 0o644  # left as it is: its owner decides
