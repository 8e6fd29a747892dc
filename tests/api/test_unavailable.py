"""A store that does not answer is 503, for the client to try again; a fault of the code stays 500."""

import sqlite3
import threading
import time

import anyio
import psycopg
from psycopg_pool import PoolTimeout
import pytest
from eventsourcing import persistence
from fastapi.testclient import TestClient

from api.routes.health import READY_WAIT
from tests.api.conftest import Desk


def busy_sqlite(tmp_path) -> sqlite3.OperationalError:
    """SQLite's own answer while another connection holds the write lock."""
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        sqlite3.connect(path, timeout=0, isolation_level=None).execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as busy:
        return busy
    finally:
        holder.close()
    raise AssertionError("the second writer was let in")


def wrapped(cause: Exception) -> Exception:
    """As the library raises it: its own error, from the driver's."""
    try:
        raise persistence.OperationalError(str(cause)) from cause
    except persistence.OperationalError as error:
        return error


def unreachable(tmp_path) -> list[Exception]:
    dropped = psycopg.OperationalError("server closed the connection unexpectedly")
    return [dropped, wrapped(dropped), psycopg.InterfaceError("the connection is closed"),
            wrapped(PoolTimeout("couldn't get a connection after 5.00 sec")), psycopg.errors.AdminShutdown("x"),
            psycopg.errors.DeadlockDetected("x"), busy_sqlite(tmp_path), wrapped(busy_sqlite(tmp_path))]


def raising(error: Exception):
    def fail(*args, **kwargs):
        raise error

    return fail


def failing_case_reads(api, monkeypatch, error: Exception) -> None:
    monkeypatch.setattr(api.app, "get_case", raising(error))


def test_a_store_that_does_not_answer_is_503_with_when_to_try_again(api, monkeypatch, tmp_path):
    desk = Desk(api)
    case = desk.open()
    for error in unreachable(tmp_path):
        failing_case_reads(api, monkeypatch, error)
        r = desk.get(f"/v1/cases/{case['id']}")
        assert r.status_code == 503, (error, r.text)
        assert r.headers["retry-after"] == "1" and r.json()["title"] == "Store unavailable"
        assert r.headers["content-type"] == "application/problem+json"
    # a command without an Idempotency-Key may have been recorded: not "try again", but "look first"
    monkeypatch.setattr(api.app, "update_case", raising(psycopg.OperationalError("server closed the connection")))
    r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "x"})
    assert r.status_code == 503 and "retry-after" not in r.headers and "may have been recorded" in r.json()["detail"]
    r = desk.post(f"/v1/cases/{case['id']}/notes", {"text": "x"}, **{"Idempotency-Key": "k-1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_a_fault_of_the_code_behind_a_store_error_is_still_a_server_error(api, monkeypatch, tmp_path):
    try:
        sqlite3.connect(tmp_path / "x.db").execute("SELECT * FROM no_such_table")
    except sqlite3.OperationalError as missing:
        faults = [missing, wrapped(missing), wrapped(psycopg.errors.ProgramLimitExceeded("x")),
                  persistence.OperationalError("Can't do multi-row tracking with single-row tracking table")]
    desk = Desk(api)
    case = desk.open()
    served = TestClient(api.client.app, raise_server_exceptions=False)  # the app already started
    for error in faults:
        failing_case_reads(api, monkeypatch, error)
        r = served.get(f"/v1/cases/{case['id']}", headers=desk.auth)
        assert r.status_code == 500 and r.json()["title"] == "Server error", r.text


def test_connections_the_database_dropped_are_never_a_server_error(api, settings):
    """PostgreSQL restarted or failed over: every pooled connection is dead when next used."""
    if not settings.is_postgres:
        pytest.skip("SQLite has no server to drop connections")
    desk = Desk(api)
    case = desk.open()
    served = TestClient(api.client.app, raise_server_exceptions=False)
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                      "AND datname = current_database() AND backend_type = 'client backend'")
    answers = [served.get(f"/v1/cases/{case['id']}", headers=desk.auth).status_code for _ in range(3)]
    answers += [served.post(f"/v1/cases/{case['id']}/notes", json={"text": "x"},
                            headers={**desk.auth, "Idempotency-Key": f"n-{n}"}).status_code for n in range(3)]
    assert 500 not in answers and set(answers) <= {200, 503}, answers


class HangingStore:
    """Every look at where the views stand waits until released (a store that hangs); counted."""

    def __init__(self, api, monkeypatch):
        self.released, self.asked = threading.Event(), 0
        projector = api.client.app.state.readside.projector
        statuses = projector.statuses

        def hang():
            self.asked += 1
            self.released.wait(30)
            return statuses()

        monkeypatch.setattr(projector, "statuses", hang)


def test_readiness_says_not_ready_in_time_when_the_store_hangs(api, monkeypatch):
    store = HangingStore(api, monkeypatch)
    try:
        for _ in range(3):
            started = time.monotonic()
            r = api.client.get("/readyz")
            assert r.status_code == 503 and "did not answer" in r.json()["detail"], r.text
            assert time.monotonic() - started < READY_WAIT + 2
        assert store.asked == 1  # the later probes waited for the check already asking, in no thread of their own
    finally:
        store.released.set()
    deadline = time.monotonic() + 10
    while api.client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.client.get("/readyz").status_code == 200


def test_liveness_answers_while_every_worker_thread_waits_on_the_store(api, monkeypatch):
    """A live server that would recover by itself is not to be restarted for a store that hangs."""
    store = HangingStore(api, monkeypatch)
    limiter = api.client.portal.call(anyio.to_thread.current_default_thread_limiter)
    tokens, limiter.total_tokens = limiter.total_tokens, 1
    auditor = api.token("auditor")
    waiting = threading.Thread(target=lambda: api.client.get("/v1/projections", headers=auditor))
    try:
        waiting.start()
        while limiter.borrowed_tokens < 1:  # the one worker thread is taken
            time.sleep(0.01)
        started = time.monotonic()
        assert api.client.get("/healthz").status_code == 200
        assert time.monotonic() - started < 2
    finally:
        store.released.set()
        waiting.join()
        limiter.total_tokens = tokens


def test_metrics_keep_the_request_figures_while_the_store_does_not_answer(api, monkeypatch):
    def unreachable():
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(api.client.app.state.readside.projector, "statuses", unreachable)
    api.client.get("/healthz")
    r = api.client.get("/metrics")
    assert r.status_code == 200 and 'lastmeter_http_requests_total{method="GET",route="/healthz"' in r.text
    assert "lastmeter_projection_lag_events{" not in r.text
    assert 'lastmeter_projection_events_processed_total{view="audit"}' in r.text
