"""Registering and reading persons (clients) through the API."""

import time
from uuid import UUID, uuid4

import pytest

from api.backend import open_backend
from domain.commands import Idempotency
from domain.errors import AlreadyRegistered
from projections.identities import SETTLED_AFTER
from tests.conftest import ADMIN
from tests.helpers import at_once, client_body, id_number


class TestRegisterClient:
    def test_answers_201_with_location_etag_and_position(self, api):
        worker = api.token("case_worker", "350502")
        r = api.client.post("/v1/clients", json=client_body(), headers=worker)
        assert r.status_code == 201
        body = r.json()
        assert r.headers["location"] == f"/v1/clients/{body['id']}"
        assert r.headers["etag"] == '"1"'
        assert int(r.headers["x-position"]) >= 1
        assert body["name"] == "林秀英" and body["org_unit"] == "350502"

    def test_refuses_an_id_number_with_a_wrong_check_digit(self, api):
        worker = api.token("case_worker", "350502")
        good = id_number(seed=7)
        bad = good[:17] + ("0" if good[17] != "0" else "1")
        r = api.client.post("/v1/clients", json=client_body(id_number=bad), headers=worker)
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["errors"][0]["field"] == "id_number"
        assert "check digit" in r.json()["detail"]

    def test_refuses_an_id_number_whose_birth_date_cannot_be_though_its_check_digit_is_right(self, api):
        worker = api.token("case_worker", "350502")
        born_9999_13_99 = "350502999913990018"  # its check digit is right
        r = api.client.post("/v1/clients", json=client_body(id_number=born_9999_13_99), headers=worker)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "id_number"
        assert "birth date" in r.json()["detail"]

    def test_refuses_an_unknown_org_unit(self, api):
        worker = api.token("case_worker", "350502")
        r = api.client.post("/v1/clients", json=client_body(org_unit="350502999"), headers=worker)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "org_unit"

    def test_refuses_a_missing_field_and_names_it(self, api):
        worker = api.token("case_worker", "350502")
        body = client_body()
        del body["phone"]
        r = api.client.post("/v1/clients", json=body, headers=worker)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "phone"

    def test_refuses_registration_outside_the_callers_scope(self, api):
        worker = api.token("case_worker", "350503")
        r = api.client.post("/v1/clients", json=client_body(org_unit="350502"), headers=worker)
        assert r.status_code == 403

    def test_an_auditor_may_not_register(self, api):
        r = api.client.post("/v1/clients", json=client_body(), headers=api.token("auditor"))
        assert r.status_code == 403


class TestReadClient:
    def test_an_auditor_reads_the_client_without_personal_fields(self, api):
        created = api.client.post("/v1/clients", json=client_body(), headers=api.token("case_worker", "350502")).json()
        r = api.client.get(f"/v1/clients/{created['id']}", headers=api.token("auditor"))
        assert r.status_code == 200
        assert r.json()["name"] is None and r.json()["id_number"] is None
        assert r.json()["personal_data_withheld"] is True

    def test_a_client_outside_scope_is_not_found(self, api):
        created = api.client.post("/v1/clients", json=client_body(), headers=api.token("case_worker", "350502")).json()
        r = api.client.get(f"/v1/clients/{created['id']}", headers=api.token("case_worker", "350503"))
        assert r.status_code == 404

    def test_without_a_token_answers_401(self, api):
        r = api.client.get("/v1/clients/00000000-0000-0000-0000-000000000000")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"


class TestTextThatCannotBeStored:
    def test_a_name_with_control_characters_is_422(self, api):
        worker = api.token("case_worker", "350502")
        r = api.client.post("/v1/clients", json=client_body(name="林\u0000秀英"), headers=worker)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "name"

    def test_a_lone_surrogate_in_a_step_payload_is_422_not_500(self, api):
        worker = api.token("case_worker", "350502")
        client = api.client.post("/v1/clients", json=client_body(), headers=worker).json()
        case = api.client.post("/v1/cases", json={"kind": "certificate", "client_id": client["id"],
                                                  "org_unit": "350502", "need": "x"}, headers=worker).json()
        r = api.client.post(f"/v1/cases/{case['id']}/steps/refuse", content=b'{"reason": "\\ud800"}',
                            headers={**worker, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"


class TestRetriedRegistration:
    def test_a_repeat_with_the_same_key_answers_the_first_answer(self, api):
        worker = {**api.token("case_worker", "350502"), "Idempotency-Key": "register-1"}
        body = client_body()
        first = api.client.post("/v1/clients", json=body, headers=worker)
        again = api.client.post("/v1/clients", json=body, headers=worker)
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["x-position"] == first.headers["x-position"]


class TestOnePersonOneRecord:
    def test_the_same_id_number_again_in_the_callers_scope_is_409_naming_the_client(self, api):
        worker = api.token("case_worker", "350502")
        body = client_body()
        first = api.client.post("/v1/clients", json=body, headers=worker).json()
        again = api.client.post("/v1/clients", json={**body, "name": "林秀瑛", "phone": "13900000000"},
                                headers={**worker, "Idempotency-Key": "lost-its-first-key"})
        assert again.status_code == 409 and first["id"] in again.json()["detail"]
        with_x = {**body, "id_number": "11010519491231002X"}  # the example of GB 11643
        assert api.client.post("/v1/clients", json=with_x, headers=worker).status_code == 201
        lower = api.client.post("/v1/clients", json={**with_x, "id_number": "11010519491231002x"}, headers=worker)
        assert lower.status_code in (409, 422)  # the same number, or refused as written

    def test_a_person_registered_in_another_district_is_neither_revealed_nor_in_the_way(self, api):
        body = client_body(org_unit="350503")
        api.client.post("/v1/clients", json=body, headers=api.token("case_worker", "350503"))
        moved = api.client.post("/v1/clients", json={**body, "org_unit": "350502"},
                                headers=api.token("case_worker", "350502"))
        assert moved.status_code == 201
        both = api.client.post("/v1/clients", json=body, headers=api.token("admin"))
        assert both.status_code == 409

    def test_once_erased_the_person_may_be_registered_again_and_the_index_forgets_them(self, api, settings):
        admin, body = api.token("admin"), client_body()
        first = api.client.post("/v1/clients", json=body, headers=admin).json()
        erased = api.client.post(f"/v1/clients/{first['id']}/erasure", json={"reason": "consent_withdrawn"},
                                 headers=admin)
        assert erased.status_code == 200
        with api.client.app.state.backend.views.read() as tx:
            assert tx.execute("SELECT COUNT(*) FROM person_identities WHERE person_id = ?",
                              (first["id"],)).fetchone()[0] == 0
        assert api.client.post("/v1/clients", json=body, headers=admin).status_code == 201

    def test_persons_registered_before_the_index_existed_are_found_in_it(self, api, settings):
        admin, body = api.token("admin"), client_body()
        first = api.client.post("/v1/clients", json=body, headers=admin).json()
        with api.client.app.state.backend.views.write() as tx:
            tx.execute("DROP TABLE person_identities")
            tx.execute("DELETE FROM upgrades_done")
        backend = open_backend(settings)  # a start on a store made before the index
        try:
            with pytest.raises(AlreadyRegistered, match=first["id"]):
                backend.lastmeter.register_client(ADMIN, None, **body)
        finally:
            backend.close()


def test_two_registrations_of_one_number_at_once_save_one_person(api):
    """Each looks for the other before either is saved: the turn each takes, saved with its person,
    lets only one be saved, and the other, looking again, finds it."""
    for _ in range(8):
        body = client_body()
        assert sorted(at_once(2, lambda: api.app.register_client(ADMIN, None, **body))) == [201, 409]


def test_a_registration_answered_by_its_twins_receipt_leaves_no_row_of_its_own(api):
    body, key = client_body(), Idempotency("li-worker", "twin", "fingerprint")
    first = api.app.register_client(ADMIN, key, **body)
    again = api.app.register_client(ADMIN, key, **body)
    assert again.id == first.id
    with api.client.app.state.backend.views.read() as tx:
        persons = {row[0] for row in tx.execute("SELECT person_id FROM person_identities").fetchall()}
    assert persons == {str(first.id)}


def test_a_registration_that_fails_after_its_commit_keeps_its_row_and_the_person_is_found_again(api, monkeypatch):
    """The connection lost as the commit was answered: the person is saved, and the same ID number
    registered again must still find them."""
    from psycopg import OperationalError

    save, body = api.app.save, client_body()

    def committed_then_lost(*aggregates):
        save(*aggregates)
        raise OperationalError("the connection was lost as the commit was answered")

    monkeypatch.setattr(api.app, "save", committed_then_lost)
    with pytest.raises(OperationalError):
        api.app.register_client(ADMIN, None, **body)
    monkeypatch.undo()
    fingerprint = api.app.identities.fingerprint(body["id_number"])
    (row,) = [row for row in rows_of(api.client.app.state.backend).values() if row[0] == fingerprint]
    assert row[1] is None  # settled at once: the person was saved
    with pytest.raises(AlreadyRegistered):
        api.app.register_client(ADMIN, None, **body)


def test_filling_the_index_gives_no_row_back_to_a_person_erased_meanwhile(api):
    """The fill reads the log, then writes: a person erased by another process in between keeps no row."""
    first = api.app.register_client(ADMIN, None, **client_body())
    backend = api.client.app.state.backend
    backend.keys.destroy(first.id)  # erased after the fill read the log
    api.app.identities._fill([("a-fingerprint", str(first.id))])
    with backend.views.read() as tx:
        assert tx.execute("SELECT COUNT(*) FROM person_identities WHERE person_id = ?",
                          (str(first.id),)).fetchone()[0] == 0


def test_the_turn_a_registration_takes_is_on_the_audit_trail_under_its_actor(api):
    worker = api.token("case_worker", "350502", user="wu-worker")
    registered = api.client.post("/v1/clients", json=client_body(), headers=worker)
    search = {"actor": "wu-worker", "min_position": registered.headers["x-position"]}
    items = api.client.get("/v1/audit/events", params=search, headers=api.token("auditor")).json()["items"]
    # the lot's first turn opens it; the person's answer records that its values were shown
    assert [i["type"] for i in items][1:] == ["ClientRegistered", "PersonalDataRead"]
    assert items[0]["type"] in ("Opened", "Taken") and items[0]["aggregate_type"] == "RegistrationTurns"
    assert {i["actor"]["user"] for i in items} == {"wu-worker"}


def rows_of(backend) -> dict[str, tuple[str, int | None]]:
    """person_id -> (fingerprint, pending_since) of every row of the identity index."""
    with backend.views.read() as tx:
        return {person: (fingerprint, pending) for fingerprint, person, pending in
                tx.execute("SELECT fingerprint, person_id, pending_since FROM person_identities").fetchall()}


def added_ago(backend, person: UUID, seconds: float) -> None:
    with backend.views.write() as tx:
        tx.execute("UPDATE person_identities SET pending_since = ? WHERE person_id = ?",
                   (int((time.time() - seconds) * 1_000_000), str(person)))


def test_a_registration_saved_leaves_its_row_settled(api):
    person = api.app.register_client(ADMIN, None, **client_body()).id
    assert rows_of(api.client.app.state.backend)[str(person)][1] is None


def test_a_start_drops_the_rows_of_registrations_cut_short_an_hour_ago_and_keeps_those_saved(api, settings):
    """A process stopped between a registration's row and its save left a row naming no one: no
    erasure of the person, registered again later, would remove it."""
    backend, body = api.client.app.state.backend, client_body()
    index = api.app.identities
    fingerprint = index.fingerprint(body["id_number"])
    cut_short, in_flight = uuid4(), uuid4()
    index.add(fingerprint, cut_short)
    added_ago(backend, cut_short, SETTLED_AFTER + 60)
    index.add(fingerprint, in_flight)  # another process's registration, still being saved
    saved = api.app.register_client(ADMIN, None, **body).id
    added_ago(backend, saved, SETTLED_AFTER + 60)  # stopped after the save, before its row settled
    restarted = open_backend(settings)
    try:
        rows = rows_of(restarted)
    finally:
        restarted.close()
    assert str(cut_short) not in rows
    assert rows[str(saved)] == (fingerprint, None)
    assert rows[str(in_flight)][1] is not None


def test_registrations_settle_rows_hourly_while_the_process_runs(api):
    backend, index = api.client.app.state.backend, api.app.identities
    cut_short = uuid4()
    index.add(index.fingerprint(id_number(seed=11)), cut_short)
    added_ago(backend, cut_short, SETTLED_AFTER + 60)
    api.app.register_client(ADMIN, None, **client_body())
    assert str(cut_short) in rows_of(backend)  # settled at the start, less than an hour ago
    index._settled_at -= SETTLED_AFTER
    api.app.register_client(ADMIN, None, **client_body())
    assert str(cut_short) not in rows_of(backend)


def test_an_index_made_before_rows_were_pending_gets_the_column_and_its_rows_count_as_saved(api, settings):
    first = api.app.register_client(ADMIN, None, **client_body()).id
    with api.client.app.state.backend.views.write() as tx:
        rows = tx.execute("SELECT fingerprint, person_id FROM person_identities").fetchall()
        tx.execute("DROP TABLE person_identities")
        tx.execute("CREATE TABLE person_identities (fingerprint TEXT NOT NULL, person_id TEXT NOT NULL, "
                   "PRIMARY KEY (fingerprint, person_id))")
        tx.executemany("INSERT INTO person_identities (fingerprint, person_id) VALUES (?, ?)", rows)
        tx.execute("DELETE FROM upgrades_done WHERE name = 'person identities pending until saved'")
    cut_short = uuid4()  # an earlier version's registration stopped between its row and its save
    with api.client.app.state.backend.views.write() as tx:
        tx.execute("INSERT INTO person_identities (fingerprint, person_id) VALUES (?, ?)", (rows[0][0], str(cut_short)))
    upgraded = open_backend(settings)
    try:
        rows = rows_of(upgraded)
        assert rows[str(first)][1] is None and rows[str(cut_short)][1] is not None  # pending from now on
        second = upgraded.lastmeter.register_client(ADMIN, None, **client_body()).id
        assert rows_of(upgraded)[str(second)][1] is None
        added_ago(upgraded, cut_short, SETTLED_AFTER + 60)  # an hour on, still not saved
        upgraded.lastmeter.identities.settle(upgraded.lastmeter.is_registered)
        assert str(cut_short) not in rows_of(upgraded)
    finally:
        upgraded.close()


def test_the_receipt_of_a_keyed_command_is_on_the_audit_trail_under_its_caller(api):
    worker = api.token("case_worker", "350502", user="xu-worker")
    registered = api.client.post("/v1/clients", json=client_body(), headers={**worker, "Idempotency-Key": "r-1"})
    search = {"actor": "xu-worker", "min_position": registered.headers["x-position"]}
    items = api.client.get("/v1/audit/events", params=search, headers=api.token("auditor")).json()["items"]
    receipts = [i for i in items if i["type"] == "CommandAnswered"]
    assert [r["actor"] for r in receipts] == [{"user": "xu-worker", "role": "case_worker"}]
