"""No personal value in plaintext anywhere in the store: every table and file, on both stores."""

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from tests.helpers import id_number

NAME, ADDRESS = "欧阳明珠", "洛江区万安街道双阳社区17号"
PHONE, ID_NUMBER = "13655512345", id_number("350504", seed=424242)
NEED, NOTE, SUMMARY, REASON = "需要康复训练与辅具", "右腿截肢后情绪低落", "上门评估居家环境", "住院治疗中"


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
    desk.get("/v1/cases", min_position=last.headers["x-position"])  # every view has caught up
    return last.headers["x-position"]


def needles() -> list[bytes]:
    values = [NAME, ADDRESS, PHONE, ID_NUMBER, NEED, NOTE, SUMMARY, REASON]
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
    if settings.is_postgres:
        leaks = postgres_leaks(settings)
    else:
        folder = Path(settings.database_url.removeprefix("sqlite:///")).parent
        leaks = {path.name: found_in(path.read_bytes()) for path in folder.iterdir() if path.is_file()}
    assert {where: hits for where, hits in leaks.items() if hits} == {}
    assert found_in(caplog.text.encode()) == []
    # and the values are there for those who may read them
    client = desk.get("/v1/cases", status="closed").json()["items"][0]
    assert desk.get(f"/v1/clients/{client['client_id']}").json()["name"] == NAME


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
