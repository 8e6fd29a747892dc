"""The command loop on both stores: no accepted command lost or duplicated."""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from uuid import uuid4

import pytest
from eventsourcing.postgres import PostgresApplicationRecorder

from api.backend import open_backend
from domain.actor import Actor
from domain.application import Idempotency
from domain.errors import NotFound, StaleVersion
from tests.helpers import id_number

WORKER = Actor("li-worker", "case_worker")


def open_case(lastmeter) -> object:
    client = lastmeter.register_client(WORKER, None, name="陈美玲", id_number=id_number(seed=3),
                                       phone="13500000000", org_unit="350502")
    return lastmeter.open_case(WORKER, None, client_id=client.id, org_unit="350502", kind="certificate", need="办证")


@contextmanager
def failing_after_the_insert(lastmeter, monkeypatch):
    """Every insert of events fails after its rows are written, before its transaction commits: on
    PostgreSQL by a trigger in the database (the insert is one statement there), on SQLite inside
    the library's insert."""
    if isinstance(lastmeter.recorder, PostgresApplicationRecorder):
        table = f"{lastmeter.recorder.datastore.schema}.{lastmeter.recorder.events_table_name}"
        with lastmeter.recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"CREATE FUNCTION {table}_cut() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$ BEGIN RAISE EXCEPTION 'power cut'; END $$")
            cursor.execute(f"CREATE TRIGGER cut AFTER INSERT ON {table} EXECUTE FUNCTION {table}_cut()")
        yield
        with lastmeter.recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"DROP TRIGGER cut ON {table}")
        return
    original = lastmeter.recorder._insert_events

    def insert_then_crash(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("power cut")

    monkeypatch.setattr(lastmeter.recorder, "_insert_events", insert_then_crash)
    yield
    monkeypatch.undo()


def note(text: str):
    return lambda case: case.add_note(WORKER, text)


class TestConcurrentCommands:
    def test_twenty_racing_commands_are_all_kept_once(self, lastmeter):
        case = open_case(lastmeter)
        texts = [f"note {i}" for i in range(20)]
        with ThreadPoolExecutor(max_workers=20) as pool:
            written = list(pool.map(lambda t: lastmeter.update_case(None, case.id, None, note(t)), texts))
        assert sorted(w.version for w in written) == list(range(2, 22))
        notes = [e.personal["text"] for e in lastmeter.case_events(case.id)[1:]]
        assert sorted(notes) == sorted(texts)

    def test_a_command_that_names_a_stale_version_is_refused(self, lastmeter):
        case = open_case(lastmeter)
        lastmeter.update_case(None, case.id, 1, note("first"))
        with pytest.raises(StaleVersion):
            lastmeter.update_case(None, case.id, 1, note("second"))
        assert lastmeter.get_case(case.id).version == 2


class TestAnotherProcessWroteSince:
    """Commands act first on this process's cached case; another process's writes must still count."""

    @pytest.fixture
    def other(self, settings):
        backend = open_backend(settings)
        yield backend.lastmeter
        backend.close()

    def test_a_command_on_a_case_another_process_moved_on_is_re_run_on_the_newest_state(self, lastmeter, other):
        case = open_case(lastmeter)
        lastmeter.update_case(None, case.id, None, note("cached here at version 2"))
        other.update_case(None, case.id, None, note("written there as version 3"))
        written = lastmeter.update_case(None, case.id, None, note("version 4"))
        assert written.version == 4 and lastmeter.get_case(case.id).notes == 3

    def test_a_refusal_is_said_of_the_newest_state_not_of_the_cached_one(self, lastmeter, other):
        case = open_case(lastmeter)
        lastmeter.update_case(None, case.id, None, lambda c: c.close(WORKER, "withdrawn"))  # closed, here
        other.update_case(None, case.id, None, lambda c: c.reopen(WORKER, "重新申请"))  # open again, there
        written = lastmeter.update_case(None, case.id, None, lambda c: c.put_on_hold(WORKER, "住院"))
        assert written.version == 4 and lastmeter.get_case(case.id).status == "on_hold"

    def test_if_match_is_checked_against_the_newest_version(self, lastmeter, other):
        case = open_case(lastmeter)
        lastmeter.get_case(case.id)  # cached at version 1
        other.update_case(None, case.id, None, note("version 2"))
        assert lastmeter.update_case(None, case.id, 2, note("version 3")).version == 3
        with pytest.raises(StaleVersion):
            lastmeter.update_case(None, case.id, 2, note("stale"))


class TestIdempotencyAcrossCrashes:
    def test_a_repeat_after_a_lost_answer_appends_nothing(self, lastmeter):
        case = open_case(lastmeter)
        key = Idempotency(WORKER.user, "retry-1", "hash-a")
        first = lastmeter.update_case(key, case.id, None, note("once"))
        again = lastmeter.update_case(key, case.id, None, note("once"))
        assert again.replayed and (again.id, again.version) == (first.id, first.version)
        assert lastmeter.get_case(case.id).version == 2

    def test_a_crash_inside_the_save_stores_neither_events_nor_receipt(self, lastmeter, monkeypatch):
        case = open_case(lastmeter)
        key = Idempotency(WORKER.user, "crash-1", "hash-b")
        with failing_after_the_insert(lastmeter, monkeypatch):
            with pytest.raises(Exception, match="power cut"):
                lastmeter.update_case(key, case.id, None, note("during the cut"))
        assert lastmeter.get_case(case.id).version == 1
        retried = lastmeter.update_case(key, case.id, None, note("during the cut"))
        assert not retried.replayed and retried.version == 2
        assert lastmeter.update_case(key, case.id, None, note("during the cut")).replayed
        assert lastmeter.get_case(case.id).version == 2

    def test_racing_repeats_of_one_key_append_once(self, lastmeter):
        case = open_case(lastmeter)
        key = Idempotency(WORKER.user, f"race-{uuid4()}", "hash-c")
        with ThreadPoolExecutor(max_workers=8) as pool:
            written = list(pool.map(lambda _: lastmeter.update_case(key, case.id, None, note("one")), range(8)))
        assert {w.version for w in written} == {2}
        assert sum(not w.replayed for w in written) == 1
        assert lastmeter.get_case(case.id).version == 2


def now() -> datetime:
    time.sleep(0.002)  # moments apart from the events around them
    return datetime.now(timezone.utc)


class TestCaseAsOf:
    def noted(self, lastmeter, notes: int):
        """A case noted `notes` times, and the moments it stood at versions 1, 2, ...: before each
        note, and after the last."""
        case = open_case(lastmeter)
        moments = []
        for i in range(notes):
            moments.append(now())
            lastmeter.update_case(None, case.id, None, note(f"n{i}"))
        return case, moments + [now()]

    def test_finds_the_version_that_stood_at_each_moment(self, lastmeter):
        case, moments = self.noted(lastmeter, 9)
        for version, moment in enumerate(moments, start=1):
            assert lastmeter.case_as_of(case.id, moment).version == version

    def test_a_guess_at_the_version_is_taken_only_where_the_log_confirms_it(self, lastmeter, monkeypatch):
        before = now()
        case, moments = self.noted(lastmeter, 5)
        bisected = []
        bisect = lastmeter._bisected
        monkeypatch.setattr(lastmeter, "_bisected", lambda *args: bisected.append(args) or bisect(*args))
        for version, moment in enumerate(moments, start=1):
            assert lastmeter.case_as_of(case.id, moment, near=version).version == version
            assert not bisected  # a right guess is confirmed, not searched for
            for near in (version - 1, version + 1, 0, 1, 6, 7, -1, 10 ** 9):
                assert lastmeter.case_as_of(case.id, moment, near=near).version == version, (moment, near)
            bisected.clear()
        for near in (0, 1, 6, None):
            with pytest.raises(NotFound):
                lastmeter.case_as_of(case.id, before, near=near)

    def test_a_caller_that_has_just_read_the_case_spares_a_read_of_it(self, lastmeter, monkeypatch):
        case, moments = self.noted(lastmeter, 3)
        current = lastmeter.get_case(case.id).version
        reads = []
        get_case = lastmeter.get_case
        monkeypatch.setattr(lastmeter, "get_case", lambda *args, **kw: reads.append(args) or get_case(*args, **kw))
        for version, moment in enumerate(moments, start=1):
            assert lastmeter.case_as_of(case.id, moment, near=version, current=current).version == version
        assert reads == [(case.id, version, False) for version in range(1, len(moments) + 1)]  # each past state, once
