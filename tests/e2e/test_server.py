"""End to end: the real `lastmeter serve` process over HTTP, and the command line, on both stores."""

import json
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.e2e.conftest import Cli, start, stop, store_env
from tests.helpers import client_body

pytestmark = pytest.mark.e2e

UNIT = "350502"  # Licheng


def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: " \
        f"{response.status_code} {response.text}"
    return response.json()


def etag_version(response: httpx.Response) -> int:
    return int(response.headers["ETag"].strip('"'))


def new_client(http: httpx.Client) -> dict:
    body = client_body(UNIT)
    client = ok(http.post("/v1/clients", json=body), 201)
    client["id_number"] = body["id_number"]
    return client


def open_case(http: httpx.Client, client_id: str, **headers: str) -> httpx.Response:
    return http.post(
        "/v1/cases",
        json={"kind": "certificate", "client_id": client_id, "org_unit": UNIT, "need": "办理残疾人证"},
        headers=headers,
    )


def history(http: httpx.Client, case_id: str) -> list[dict]:
    page = ok(http.get(f"/v1/cases/{case_id}/history", params={"limit": 500}))
    assert page["next_cursor"] is None
    return page["items"]


def audited(server, auditor: dict, user: str, event_type: str, seen: list[httpx.Response]) -> list[str]:
    """The aggregates the audit log shows `user` causing `event_type` for, once it has caught up with `seen`."""
    caught_up = max(int(r.headers["X-Position"]) for r in seen)
    with server.client(auditor) as http:
        page = ok(http.get("/v1/audit/events", params={"actor": user, "min_position": caught_up, "limit": 1000}))
    assert page["next_cursor"] is None
    return [e["aggregate_id"] for e in page["items"] if e["type"] == event_type]


def in_parallel(server, headers: dict, count: int, call) -> list:
    """Runs `call(i, http)` in `count` threads released together, each with its own connection, already open."""
    clients = [server.client(headers) for _ in range(count)]
    for client in clients:
        ok(client.get("/healthz"))
    start = threading.Barrier(count)

    def run(i: int):
        start.wait()
        return call(i, clients[i])

    try:
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(run, range(count)))
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="module")
def worker(server) -> dict:
    """A case worker of Licheng: their user id and headers."""
    user = f"cw-{uuid.uuid4().hex[:6]}"
    return {"user": user, "headers": server.headers("case_worker", UNIT, user=user)}


@pytest.fixture(scope="module")
def auditor(server) -> dict:
    return server.headers("auditor")


@pytest.fixture
def fresh_worker(server) -> dict:
    """A case worker of Licheng of this test alone, so the audit log shows only what this test did."""
    user = f"cw-{uuid.uuid4().hex[:6]}"
    return {"user": user, "headers": server.headers("case_worker", UNIT, user=user)}


@pytest.fixture
def http(server, worker):
    with server.client(worker["headers"]) as client:
        yield client


def test_certificate_from_application_to_issue(http, worker):
    person = new_client(http)
    assert person["org_unit"] == UNIT and person["name"] == "林秀英"

    opened = open_case(http, person["id"])
    case = ok(opened, 201)
    assert opened.headers["Location"] == f"/v1/cases/{case['id']}"
    assert (case["stage"], case["status"], case["outcome"], case["version"]) == ("applied", "open", None, 1)
    assert etag_version(opened) == 1 and int(opened.headers["X-Position"]) > 0
    url = f"/v1/cases/{case['id']}/steps"

    scheduled_for = (datetime.now(timezone.utc) + timedelta(days=7)).isoformat()
    walk = [
        ("verify_documents", {}, "documents_verified"),
        ("schedule_assessment", {"scheduled_for": scheduled_for}, "assessment_scheduled"),
        ("record_assessment", {"category": "physical", "grade": 2}, "assessed"),
        ("issue_certificate", {"certificate_number": person["id_number"] + "42"}, "issued"),
    ]
    positions = [int(opened.headers["X-Position"])]
    for version, (step, payload, stage) in enumerate(walk, start=2):
        response = http.post(f"{url}/{step}", json=payload)
        case = ok(response)
        assert case["stage"] == stage, step
        assert case["version"] == etag_version(response) == version
        positions.append(int(response.headers["X-Position"]))
    assert positions == sorted(positions) and len(set(positions)) == 5

    assert (case["status"], case["outcome"]) == ("closed", "served")
    now = ok(http.get(f"/v1/cases/{case['id']}"))
    assert (now["stage"], now["status"], now["outcome"], now["version"]) == ("issued", "closed", "served", 5)

    entries = history(http, case["id"])
    assert [e["version"] for e in entries] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in entries] == [
        "CaseOpened", "DocumentsVerified", "AssessmentScheduled", "AssessmentRecorded", "CertificateIssued"
    ]
    for entry in entries:
        assert set(entry) >= {"version", "type", "at", "actor", "data"}
        assert entry["actor"] == {"user": worker["user"], "role": "case_worker"}
        assert datetime.fromisoformat(entry["at"]).utcoffset() is not None
        assert isinstance(entry["data"], dict)
    moments = [datetime.fromisoformat(e["at"]) for e in entries]
    assert moments == sorted(moments)
    assert "physical" in json.dumps(entries[3]["data"])
    assert person["id_number"] + "42" in json.dumps(entries[4]["data"])  # a staff reader sees personal data

    # A closed case takes no more steps.
    refused = http.post(f"{url}/refuse", json={"reason": "too late"})
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_concurrent_commands_on_one_case_are_all_kept(server, worker, http):
    case = ok(open_case(http, new_client(http)["id"]), 201)
    texts = [f"note {i} {uuid.uuid4().hex[:8]}" for i in range(20)]

    def post_note(i: int, own: httpx.Client) -> httpx.Response:
        return own.post(f"/v1/cases/{case['id']}/notes", json={"text": texts[i]})

    responses = in_parallel(server, worker["headers"], 20, post_note)

    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    versions = sorted(etag_version(r) for r in responses)
    assert versions == list(range(2, 22))
    assert len({int(r.headers["X-Position"]) for r in responses}) == 20
    for response in responses:
        assert response.json()["version"] == etag_version(response)

    entries = history(http, case["id"])
    assert len(entries) == 21
    assert [e["version"] for e in entries] == list(range(1, 22))
    assert [e["type"] for e in entries[1:]] == ["NoteAdded"] * 20
    written = [e["data"].get("text") for e in entries[1:]]
    assert sorted(written) == sorted(texts)
    assert ok(http.get(f"/v1/cases/{case['id']}"))["notes"] == 20


def same_answer(responses: list[httpx.Response]) -> None:
    first = responses[0]
    for response in responses:
        assert response.status_code == first.status_code, response.text
        assert response.json() == first.json()
        assert response.headers["ETag"] == first.headers["ETag"]
        assert response.headers["X-Position"] == first.headers["X-Position"]
        assert response.headers.get("Location") == first.headers.get("Location")


def test_a_retried_open_creates_one_case(server, fresh_worker, auditor):
    worker = fresh_worker
    http = server.client(worker["headers"])
    person = new_client(http)

    # Sent twice, one after the other.
    key = f"open-{uuid.uuid4()}"
    twice = [open_case(http, person["id"], **{"Idempotency-Key": key}) for _ in range(2)]
    ok(twice[0], 201)
    same_answer(twice)

    # The same key with another body is refused.
    other = http.post("/v1/cases", headers={"Idempotency-Key": key},
                      json={"kind": "rehabilitation", "client_id": person["id"], "org_unit": UNIT, "need": "康复"})
    assert other.status_code == 422, other.text
    assert other.headers["content-type"].startswith("application/problem+json")

    # Sent five times at once from threads.
    key = f"open-{uuid.uuid4()}"

    def send(_: int, own: httpx.Client) -> httpx.Response:
        return open_case(own, person["id"], **{"Idempotency-Key": key})

    five = in_parallel(server, worker["headers"], 5, send)
    ok(five[0], 201)
    same_answer(five)
    assert five[0].json()["id"] != twice[0].json()["id"]
    assert len(history(http, five[0].json()["id"])) == 1
    http.close()

    # Two keys, two cases: the audit log shows nothing else opened by this user.
    opened = audited(server, auditor, worker["user"], "CaseOpened", twice + five)
    assert sorted(opened) == sorted([twice[0].json()["id"], five[0].json()["id"]])


def test_a_retried_note_is_appended_once(server, worker, http):
    case = ok(open_case(http, new_client(http)["id"]), 201)
    url = f"/v1/cases/{case['id']}/notes"

    key = f"note-{uuid.uuid4()}"
    twice = [http.post(url, json={"text": "电话回访"}, headers={"Idempotency-Key": key}) for _ in range(2)]
    ok(twice[0])
    same_answer(twice)
    assert etag_version(twice[0]) == 2

    key = f"note-{uuid.uuid4()}"

    def send(_: int, own: httpx.Client) -> httpx.Response:
        return own.post(url, json={"text": "上门走访"}, headers={"Idempotency-Key": key})

    five = in_parallel(server, worker["headers"], 5, send)
    ok(five[0])
    same_answer(five)
    assert etag_version(five[0]) == 3

    entries = history(http, case["id"])
    assert [e["type"] for e in entries] == ["CaseOpened", "NoteAdded", "NoteAdded"]
    assert [e["data"].get("text") for e in entries[1:]] == ["电话回访", "上门走访"]


def test_a_retried_registration_registers_one_person(server, fresh_worker, auditor):
    body = client_body(UNIT)
    key = f"register-{uuid.uuid4()}"
    with server.client(fresh_worker["headers"]) as http:
        first = http.post("/v1/clients", json=body, headers={"Idempotency-Key": key})
        ok(first, 201)
        again = http.post("/v1/clients", json=body, headers={"Idempotency-Key": key})
    same_answer([first, again])
    registered = audited(server, auditor, fresh_worker["user"], "ClientRegistered", [first])
    assert registered == [first.json()["id"]]


def replayed_state(output: str) -> dict:
    """The case state that `audit replay` prints as JSON after its history table."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if line.strip() == "{")
    return json.loads("\n".join(lines[start:]))


def test_audit_replay_shows_the_case_as_it_stood(server, http):
    case = ok(open_case(http, new_client(http)["id"]), 201)
    url = f"/v1/cases/{case['id']}/steps"
    ok(http.post(f"{url}/verify_documents", json={}))
    scheduled_for = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    ok(http.post(f"{url}/schedule_assessment", json={"scheduled_for": scheduled_for}))

    entries = history(http, case["id"])
    verified, scheduled = (datetime.fromisoformat(entries[i]["at"]) for i in (1, 2))
    assert verified < scheduled
    between = verified + (scheduled - verified) / 2

    done = server.cli.run("audit", "replay", case["id"], "--as-of", between.isoformat())
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    state = replayed_state(done.stdout)
    assert state["id"] == case["id"]
    assert (state["stage"], state["version"]) == ("documents_verified", 2)
    assert "DocumentsVerified" in done.stdout
    assert "AssessmentScheduled" not in done.stdout and "assessment_scheduled" not in done.stdout

    # The API says the same about that moment; and without --as-of the replay shows the stage now.
    past = ok(http.get(f"/v1/cases/{case['id']}", params={"as_of": between.isoformat()}))
    assert (past["stage"], past["version"]) == ("documents_verified", 2)
    now = server.cli.run("audit", "replay", case["id"])
    assert now.returncode == 0, f"{now.stdout}\n{now.stderr}"
    assert (replayed_state(now.stdout)["stage"], replayed_state(now.stdout)["version"]) == ("assessment_scheduled", 3)

    # A moment before the case existed is an error, said plainly.
    before = datetime.fromisoformat(entries[0]["at"]) - timedelta(seconds=1)
    early = server.cli.run("audit", "replay", case["id"], "--as-of", before.isoformat())
    assert early.returncode != 0
    assert "did not exist" in early.stdout + early.stderr
    assert "Traceback" not in early.stdout + early.stderr


def test_audit_replay_of_a_moment_without_offset_answers_without_a_traceback(server, http):
    case = ok(open_case(http, new_client(http)["id"]), 201)
    later = datetime.now(timezone.utc) + timedelta(days=1)

    done = server.cli.run("audit", "replay", case["id"], "--as-of", later.strftime("%Y-%m-%dT%H:%M:%S"))
    said = done.stdout + done.stderr
    assert "Traceback" not in said and "TypeError" not in said, said[-1500:]
    if done.returncode == 0:  # read as a local moment
        assert replayed_state(done.stdout)["stage"] == "applied"
    else:  # or refused, saying why
        assert "error" in said.lower(), said


@pytest.mark.parametrize(
    "args, says",
    [
        (["--role", "boss"], "role"),
        (["--role", "case_worker"], "org_unit"),
        (["--role", "case_worker", "--org-unit", "999999"], "999999"),
    ],
    ids=["bad-role", "scoped-role-without-unit", "unknown-unit"],
)
def test_tokens_create_refuses_clearly(server, args, says):
    done = server.cli.run("tokens", "create", "--user", "someone", *args)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "error" in said.lower() and says in said
    assert "Traceback" not in said
    assert "lm_" not in said  # no token was printed


def test_a_token_made_by_the_command_line_is_what_the_server_accepts(server):
    token = server.token("auditor")
    with server.client() as anonymous:
        assert anonymous.get("/v1/case-kinds").status_code == 401
        assert anonymous.get("/v1/case-kinds", headers={"Authorization": "Bearer lm_not-a-token"}).status_code == 401
        assert anonymous.get("/v1/case-kinds", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_access_log_names_routes_not_the_ids_asked_for(server, http):
    case = ok(open_case(http, new_client(http)["id"]), 201)
    ok(http.get(f"/v1/cases/{case['id']}"))
    line = "GET /v1/cases/{case_id} 200"
    deadline = time.monotonic() + 5  # the server writes its log as it goes
    while line not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert line in server.output()
    assert case["id"] not in server.output() and case["client_id"] not in server.output()


def test_served_by_uvicorn_by_hand_the_access_log_is_still_lastmeters(tmp_path):
    cli = Cli(store_env(f"sqlite:///{tmp_path / 'lastmeter.db'}"), tmp_path)
    served = start(cli, tmp_path / "server.log", "sqlite", by_hand=True)
    try:
        with served.client(served.headers("case_worker", "350502")) as http:
            missing = uuid.uuid4()
            assert http.get(f"/v1/cases/{missing}").status_code == 404
            line = "GET /v1/cases/{case_id} 404"
            deadline = time.monotonic() + 5
            while line not in served.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert line in served.output() and str(missing) not in served.output(), served.output()
    finally:
        stop(served.process)


def test_a_server_stops_cleanly_and_quietly(server, tmp_path):
    """SIGTERM: the server and its projector stop at once, after a graceful shutdown (uvicorn then dies
    of the signal it caught, as a process should), and leave nothing behind that the log would warn
    of (the semaphores a projector process shared were once reported leaked)."""
    from tests.e2e.conftest import start, stop

    second = start(server.cli, tmp_path / "second.log", server.store)  # beside the module's server, same store
    stopped = time.monotonic()
    stop(second.process)
    assert second.process.returncode in (0, -signal.SIGTERM), second.output()
    assert time.monotonic() - stopped < 3, second.output()
    assert "Application shutdown complete" in second.output()
    assert "leaked" not in second.output() and "Traceback" not in second.output()


def test_a_request_that_is_not_http_gets_a_problem_too(server):
    """A control character in a header stops uvicorn's parser before the app sees the request."""
    url = httpx.URL(server.base_url)
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        sock.sendall(b"GET /v1/case-kinds HTTP/1.1\r\nHost: lastmeter\r\nX-Note: a\x01b\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after it
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/problem+json" in head.lower()
    document = json.loads(body)
    assert document["status"] == 400 and {"type", "title", "detail"} <= set(document)
