"""The projector on both stores: never skips, exactly once, rebuilds that equal live views."""

import json
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

from api.readside import IDLE_POLL, STOP_CHECK, projector_in_this_process, waking
from domain.actor import Actor
from domain.client import Client
from domain.clock import today
from domain.kinds import KINDS
from domain.purchasing import DeliveryRow
from projections import VIEWS
from projections.audit import facts, search
from projections.cases import CaseView
from projections.runner import Projector, RebuildRunning, ViewChanged, _fold_elsewhere
from projections.store import ViewStore
from projections.timefmt import micros
from projections.view import NEXT, Table, View
from tests.helpers import id_number

WORKER = Actor("li-worker", "case_worker")


class EventCounter(View):
    """Counts every event it is given: the count must equal the events written."""

    name = "counter"
    tables = (Table("counter", "id INTEGER PRIMARY KEY, seen BIGINT NOT NULL"),)

    def apply(self, tx, events):
        table = self.table("counter")
        tx.execute(f"INSERT INTO {table} VALUES (1, ?) "
                   f"ON CONFLICT (id) DO UPDATE SET seen = {table}.seen + excluded.seen", (len(events),))


@pytest.fixture
def views(lastmeter):
    store = ViewStore(lastmeter.env)
    yield store
    store.close()


def snapshot(store: ViewStore, views=VIEWS) -> dict:
    """Every row of every view table, sorted, for comparison."""
    tables = {}
    with store.read() as tx:
        for view in views:
            for table in view.tables:
                tables[table.name] = sorted(tx.execute(f"SELECT * FROM view_{table.name}").fetchall(), key=repr)
    return tables


def busy_city(lastmeter, cases: int = 12) -> None:
    """Commands of every kind: steps, holds, closures, reopenings, reassignments, visits."""
    visited = datetime.now(timezone.utc) - timedelta(days=2)
    for i in range(cases):
        kind = list(KINDS)[i % len(KINDS)]
        client = lastmeter.register_client(WORKER, None, name="黄丽华", id_number=id_number(seed=i),
                                           phone="13700000000", org_unit="350502")
        case = lastmeter.open_case(WORKER, None, client_id=client.id, org_unit="350502", kind=kind, need="需求")
        act = lambda f: lastmeter.update_case(None, case.id, None, f)  # noqa: E731
        act(lambda c: c.assign(WORKER, f"liaison-{i % 3}"))
        act(lambda c: c.record_visit(WORKER, "door_to_door", visited, "走访"))
        first = KINDS[kind].steps[0]
        if not first.fields:
            lastmeter.take_step(WORKER, None, case.id, None, first.name, {})
        if i % 3 == 0:
            act(lambda c: c.put_on_hold(WORKER, "住院"))
            act(lambda c: c.resume(WORKER, "出院"))
        if i % 4 == 1:
            act(lambda c: c.close(WORKER, "withdrawn", "撤回"))
            act(lambda c: c.reopen(WORKER, "重新申请"))
            act(lambda c: c.assign(WORKER, "liaison-9"))
        if i % 5 == 2:
            act(lambda c: c.close(WORKER, "transferred"))
    paid_for(lastmeter)


def paid_for(lastmeter) -> None:
    """A home-care case referred to a contract, two deliveries reported, accepted and stated."""
    supervisor = Actor("li-supervisor", "supervisor")
    client = lastmeter.register_client(WORKER, None, name="陈美玲", id_number=id_number(seed=777),
                                       phone="13500000000", org_unit="350502")
    case = lastmeter.open_case(WORKER, None, client_id=client.id, org_unit="350502", kind="home_care", need="托养")
    contract = lastmeter.create_contract(supervisor, None, ["350502"], provider="ngo-p", service_kind="home_care",
                                         unit="hour", unit_price="50.00", budget="5000.00",
                                         starts_on=today() - timedelta(days=60), ends_on=today() + timedelta(days=60))
    lastmeter.refer_case(supervisor, None, case.id, None, contract.id)
    for reference in ("D-1", "D-2"):
        delivery = lastmeter.report_delivery(Actor("ngo-p-staff", "contractor"), None, contract.id,
                                             DeliveryRow(str(case.id), today(), 1, reference)).item
        lastmeter.review_delivery(supervisor, None, contract.id, delivery, None, True, None, lambda case: None)
    lastmeter.issue_statement(supervisor, None, contract.id, today().strftime("%Y-%m"))


class TestLiveAndRebuilt:
    @pytest.mark.parametrize("chunk", [10_000, 4], ids=["whole-log", "cases-split-across-chunks"])
    def test_every_view_rebuilt_from_the_log_equals_the_view_kept_live(self, lastmeter, views, chunk):
        projector = Projector(lastmeter, views, VIEWS, batch_size=7, rebuild_batch_size=chunk)
        projector.setup()
        busy_city(lastmeter)
        projector.catch_up()  # live, in small batches
        live = snapshot(views)
        projector.rebuild(list(projector.views))
        assert snapshot(views) == live
        assert len(live["cases"]) == 13 and len(live["liaison_spells"]) > 12 and len(live["audit_stated"]) == 2

    def test_a_fold_in_another_process_builds_the_same_views(self, lastmeter, views):
        """On PostgreSQL the fold runs in a process of its own (on SQLite, in a thread)."""
        projector = Projector(lastmeter, views, VIEWS, batch_size=7, rebuild_batch_size=4,
                              elsewhere=partial(projector_in_this_process, dict(lastmeter.env)))
        projector.setup()
        busy_city(lastmeter, cases=6)
        projector.catch_up()
        live = snapshot(views)
        projector.rebuild(list(projector.views))
        assert snapshot(views) == live

    def test_a_second_rebuild_at_once_is_refused_and_the_first_swaps_in_whole(self, lastmeter, views, cli):
        """Two at once dropped each other's fresh copies and ended in tracebacks (exit 1, the code of a
        chain found altered)."""
        projector = Projector(lastmeter, views, VIEWS)
        projector.setup()
        busy_city(lastmeter, cases=2)
        projector.catch_up()
        live = snapshot(views)
        other = ViewStore(lastmeter.env)  # another process's connections, or its own open file
        try:
            with other.rebuilding() as alone:
                assert alone
                with pytest.raises(RebuildRunning):
                    projector.rebuild(["cases"])
                result = cli("projections", "rebuild")
                assert result.exit_code == 2 and "another process is rebuilding" in result.output, result.output
                assert len(result.output.strip().splitlines()) == 1, result.output  # no bar after the error
        finally:
            other.close()
        projector.rebuild(list(projector.views))
        assert snapshot(views) == live

    def test_a_rebuild_drops_the_copies_one_killed_before_its_end_left(self, lastmeter, views):
        """Rebuilding one view left another's copy on disk until that view itself was rebuilt."""
        projector = Projector(lastmeter, views, VIEWS)
        projector.setup()
        busy_city(lastmeter, cases=2)
        projector.catch_up()
        left = projector._view("audit", NEXT)
        with views.write() as tx:  # as a rebuild of the audit view killed half way leaves it
            projector._create(tx, left, "audit" + NEXT, "killed")
        projector.rebuild(["cases"])
        with views.read() as tx:
            names = [name for (name,) in tx.execute("SELECT name FROM projection_positions").fetchall()]
            with pytest.raises(Exception):
                tx.execute(f"SELECT COUNT(*) FROM {left.table('audit_events')}")
        assert sorted(names) == sorted(projector.views)

    def test_a_fold_that_fails_elsewhere_fails_the_rebuild_and_swaps_nothing(self, lastmeter, views, store):
        if store != "postgres":
            pytest.skip("SQLite folds in a thread of the same process")
        broken = {**lastmeter.env, "POSTGRES_PORT": "1"}  # the other process cannot reach the store
        projector = Projector(lastmeter, views, VIEWS, batch_size=7, elsewhere=partial(projector_in_this_process, broken))
        projector.setup()
        busy_city(lastmeter, cases=2)
        projector.catch_up()
        live = snapshot(views)
        with pytest.raises(RuntimeError, match="fold"):
            projector.rebuild(list(projector.views))
        assert snapshot(views) == live

    def test_a_fold_elsewhere_stops_once_the_rebuild_that_started_it_is_gone(self, lastmeter, views, store):
        """A rebuild killed without a word (SIGKILL) leaves no fold running: its process folds nothing
        more once its parent is gone. (Given a parent, the same call would fold into copies that do
        not exist here, and fail.)"""
        if store != "postgres":
            pytest.skip("SQLite folds in a thread of the same process")
        projector = Projector(lastmeter, views, VIEWS)
        projector.setup()
        busy_city(lastmeter, cases=2)
        folded = multiprocessing.Value("q", 0)
        with pytest.raises(SystemExit, match="gone"):  # an exit code the rebuild, were it there, would refuse
            _fold_elsewhere(partial(projector_in_this_process, dict(lastmeter.env)), [(CaseView, "cases" + NEXT)],
                            projector.head(), 4, folded, parent=-1)
        assert folded.value == 0 and projector.head() > 0  # there were events to fold

    def test_events_written_while_a_rebuild_runs_are_in_the_view_it_swaps_in(self, lastmeter, views):
        projector = Projector(lastmeter, views, VIEWS, batch_size=7, rebuild_batch_size=5)
        projector.setup()
        busy_city(lastmeter, cases=4)
        case_id = lastmeter.open_case(WORKER, None, client_id=lastmeter.register_client(
            WORKER, None, name="x", id_number=id_number(seed=99), phone="13700000000", org_unit="350502").id,
            org_unit="350502", kind="certificate", need="需求").id
        written = []

        def write_once(done, total):
            if not written:  # while the first copies are being folded
                written.append(lastmeter.update_case(None, case_id, None, lambda c: c.assign(WORKER, "late")))

        projector.rebuild(list(projector.views), write_once)
        rebuilt = snapshot(views)
        projector.catch_up()
        assert snapshot(views) == rebuilt and written
        assert [r for r in rebuilt["cases"] if r[0] == str(case_id)][0][8] == "late"

    def test_readers_see_the_old_view_until_the_rebuild_swaps(self, lastmeter, views):
        projector = Projector(lastmeter, views, VIEWS, batch_size=5)
        projector.setup()
        busy_city(lastmeter, cases=4)
        projector.catch_up()
        before = snapshot(views)
        seen_during = []
        projector.rebuild(["cases"], lambda done, head: seen_during.append(snapshot(views)))
        assert all(s == before for s in seen_during[:-1]) and seen_during


class TestAuditView:
    def test_each_row_holds_what_the_decoded_event_says(self, lastmeter, views):
        """The view is copied in SQL (each store its own); the decoded events are the reference."""
        projector = Projector(lastmeter, views, VIEWS, batch_size=7)
        projector.setup()
        busy_city(lastmeter, cases=5)
        for seed, moment in ((1, datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)),  # no fraction of a second
                             (2, datetime(2026, 3, 1, 20, 0, 0, 5, tzinfo=timezone(timedelta(hours=8)))),
                             # SQLite's strftime rounds a fraction of .9995 and more up to the next second
                             (3, datetime(2026, 3, 1, 20, 0, 59, 999_700, tzinfo=timezone(timedelta(hours=8))))):
            client = Client.register(WORKER, name="x", id_number=id_number(seed=500 + seed), phone="13700000000",
                                     org_unit="350502")
            object.__setattr__(client._pending_events[0], "timestamp", moment)
            lastmeter.save(client)
        projector.catch_up()
        with views.read() as tx:
            rows = {r["position"]: r for r in search(tx, 0, 10_000)}
        notifications = lastmeter.recorder.select_notifications(1, 10_000)
        assert sorted(rows) == [n.id for n in notifications]
        for notification in notifications:
            event = lastmeter.mapper.to_domain_event(notification)
            kind, _, name = type(event).__qualname__.rpartition(".")
            actor = getattr(event, "actor", None) or {}
            expected = {k: v for k, v in vars(event).items()
                        if k not in ("originator_id", "originator_version", "originator_topic", "timestamp", "actor",
                                     "personal")}
            row = rows[notification.id]
            assert (row["at"], row["aggregate_id"], row["aggregate_type"], row["version"], row["type"],
                    row["actor_user"], row["actor_role"]) == (
                micros(event.timestamp), str(event.originator_id), kind, event.originator_version, name,
                actor.get("user"), actor.get("role"))
            assert facts(lastmeter.mapper.transcoder, row["data"]) == json.loads(
                json.dumps(expected, ensure_ascii=False, default=str))


class TestNeverSkips:
    def test_a_counting_view_counts_every_event_written_by_concurrent_writers(self, lastmeter, views):
        projector = Projector(lastmeter, views, [EventCounter], batch_size=3)
        projector.setup()
        client = lastmeter.register_client(WORKER, None, name="x", id_number=id_number(seed=1),
                                           phone="13700000000", org_unit="350502")
        cases = [lastmeter.open_case(WORKER, None, client_id=client.id, org_unit="350502",
                                     kind="home_care", need="n").id for _ in range(4)]
        stop = threading.Event()
        follower = threading.Thread(target=projector.run, args=(stop, 0.001))
        follower.start()

        def write(n: int) -> None:
            for k in range(15):
                lastmeter.update_case(None, cases[(n + k) % 4], None, lambda c: c.add_note(WORKER, f"{n}-{k}"))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(write, range(8)))
        stop.set()
        follower.join()
        projector.catch_up()
        written = len(lastmeter.recorder.select_notifications(1, 10_000))
        assert written == 1 + 4 + 8 * 15 + BOOKKEEPING
        with views.read() as tx:
            assert tx.execute("SELECT seen FROM view_counter").fetchone()[0] == written


BOOKKEEPING = 2  # events besides the client, cases and notes: the org registry founded, the registration's turn


class TestCrashAndResume:
    def test_a_crash_in_a_batch_leaves_view_and_position_as_before_and_the_run_resumes(self, lastmeter, views):
        projector = Projector(lastmeter, views, VIEWS, batch_size=10)
        projector.setup()
        busy_city(lastmeter, cases=6)
        reference = Projector(lastmeter, views, VIEWS, batch_size=1000)
        cases_view = projector.views["cases"]
        calls = {"n": 0}
        original = cases_view.apply

        def crash_on_third_batch(self, tx, events):
            calls["n"] += 1
            original(self, tx, events)
            if calls["n"] == 3:
                raise RuntimeError("killed mid-batch")

        cases_view.apply = crash_on_third_batch
        try:
            with pytest.raises(RuntimeError):
                projector.catch_up()
            position = projector.position("cases")
            assert position == 20  # two batches of ten committed, the third rolled back
            with views.read() as tx:
                rows = tx.execute("SELECT COUNT(*) FROM view_cases").fetchone()[0]
        finally:
            cases_view.apply = original
        projector.catch_up()
        resumed = snapshot(views)
        reference.rebuild(["cases"])
        assert snapshot(views) == resumed and rows < len(resumed["cases"])


class TestChangedViews:
    def test_a_view_whose_schema_changed_is_rebuilt_from_the_log_at_start(self, lastmeter, views, caplog):
        projector = Projector(lastmeter, views, VIEWS)
        projector.setup()
        assert "schema changed" not in caplog.text  # new views are made without a word
        busy_city(lastmeter, cases=3)
        projector.catch_up()
        before = snapshot(views)
        with views.write() as tx:  # as if the code's cases view had changed shape since
            tx.execute("UPDATE projection_positions SET fingerprint = 'old' WHERE name = 'cases'")
        projector.setup()
        assert projector.position("cases") == 0 and projector.position("audit") > 0
        assert "view cases: its schema changed" in caplog.text and "view audit" not in caplog.text
        projector.catch_up()
        assert snapshot(views) == before

    def test_a_view_another_version_made_anew_is_made_anew_for_this_one_by_the_projector_leading(
            self, lastmeter, views):
        """A process of the version before, started beside this one (or its command line), made the
        audit view anew for itself: this projector failed on it every second, for good, and every view
        stood still until the server was restarted."""
        import threading

        projector = Projector(lastmeter, views, VIEWS)
        projector.setup()
        busy_city(lastmeter, cases=1)
        with views.write() as tx:  # what the other version's start leaves: its own fingerprint, position 0
            tx.execute("UPDATE projection_positions SET fingerprint = 'older', position = 0 WHERE name = 'audit'")
        assert [s.name for s in projector.statuses() if not s.current] == ["audit"]
        stop = threading.Event()
        runner = threading.Thread(target=projector.run, args=(stop,), kwargs={"poll": 0.01})
        runner.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(s.current and not s.lag for s in projector.statuses()):
                time.sleep(0.02)
        finally:
            stop.set()
            runner.join()
        assert all(s.current and not s.lag for s in projector.statuses()), projector.statuses()

    def test_the_audit_view_is_made_anew_when_the_values_it_withholds_change(self, monkeypatch):
        """Rows copied before the counsellor matched was made personal kept it among their facts, shown
        to every auditor and past the person's erasure, until the view was rebuilt."""
        from projections.audit import AuditView

        assert "CounsellorMatched" in AuditView.rules
        now = AuditView.fingerprint()
        monkeypatch.setattr(AuditView, "rules", AuditView.rules.replace("CounsellorMatched", "Other"))
        assert AuditView.fingerprint() != now
        monkeypatch.setattr(AuditView, "rules", "")  # as the stores written before the rules were kept
        assert AuditView.fingerprint() != now

    def test_a_process_of_another_version_does_not_write_a_view_made_anew_for_this_one(self, lastmeter, views):
        """A process of the earlier version still running through an upgrade: its rows would lack what
        the new schema keeps, and the view, its fingerprint current, would never be rebuilt."""
        projector = Projector(lastmeter, views, VIEWS)
        projector.setup()
        busy_city(lastmeter, cases=1)
        with views.write() as tx:  # what a newer version's start leaves: its own fingerprint, position 0
            tx.execute("UPDATE projection_positions SET fingerprint = 'newer', position = 0 WHERE name = 'audit'")
        with pytest.raises(ViewChanged, match="view audit"):
            projector.catch_up()
        assert projector.position("audit") == 0


def test_a_projector_process_starts_without_making_the_logs_tables_another_start_may_be_making(lastmeter, views):
    """The library makes its tables, type and insert function whenever an application is made: a
    projector process (or a rebuild's fold) starting while another process opened the store failed
    on PostgreSQL with "tuple concurrently updated". Here another start holds the log's table."""
    if not views.postgres:
        pytest.skip("SQLite makes its tables under the database's write lock")
    recorder, opening = lastmeter.recorder, projector_in_this_process(dict(lastmeter.env))
    with recorder.datastore.get_connection() as conn, conn.transaction():
        conn.execute(f"LOCK TABLE {recorder.datastore.schema}.{recorder.events_table_name} IN ACCESS EXCLUSIVE MODE")
        # made no table, so waited on none (before the idle-in-transaction timeout, 5 s, lets the lock go)
        projector = ThreadPoolExecutor(1).submit(opening.__enter__).result(timeout=4)
    try:
        assert projector.head() == lastmeter.recorder.max_notification_id()
    finally:
        opening.__exit__(None, None, None)


def test_each_insert_wakes_a_projector_waiting_for_events(lastmeter, views):
    """PostgreSQL: the insert's notification; SQLite: this process's own commit."""
    from tests.conftest import ADMIN

    with waking(Projector(lastmeter, views, VIEWS)) as wake:
        wake(0)  # what was stored before this test
        assert wake(0.05) is False  # nothing stored since: the wait times out
        lastmeter.issue_token(ADMIN, "newcomer", "auditor")
        assert wake(10) is True


def test_a_projector_waiting_on_notifications_sees_its_stop_without_waiting_out_its_poll(lastmeter, views, store):
    """On PostgreSQL a caught-up projector looks at the log only every IDLE_POLL (each insert wakes it),
    so its wait must end at a stop: a server that shuts down would otherwise wait for it."""
    if store != "postgres":
        pytest.skip("SQLite's projector is a thread that polls every 50 ms")
    stop = threading.Event()
    with waking(Projector(lastmeter, views, VIEWS), stop) as wake:
        wake(0)  # what was stored before this test
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        assert wake(IDLE_POLL[True] * 10) is False
        assert 0.15 < time.monotonic() - started < 0.2 + 2 * STOP_CHECK


def test_a_projector_takes_what_landed_while_it_settled_in_one_round(lastmeter, views):
    """After a round that applied events the projector waits `settle` seconds; whatever was stored
    meanwhile is applied in the next round, and a round that finds nothing waits for the next event."""
    from tests.conftest import ADMIN

    class Rounds:
        """The run's stop signal: stores tokens during the first settle; stops the run at the first poll."""

        def __init__(self):
            self.waits, self.stopped = [], False

        def is_set(self):
            return self.stopped

        def wait(self, timeout=None):
            self.waits.append(timeout)
            if len(self.waits) == 1:
                for n in range(5):
                    lastmeter.issue_token(ADMIN, f"settler-{n}", "auditor")
            return False

    def poll(timeout):
        rounds.waits.append(("poll", timeout))
        rounds.stopped = True

    projector = Projector(lastmeter, views, (EventCounter,))
    projector.setup()
    lastmeter.issue_token(ADMIN, "first", "auditor")
    rounds, applied = Rounds(), []
    projector.run(rounds, poll=0.5, after_each=lambda: applied.append(projector.processed["counter"]), wake=poll,
                  settle=0.03)
    assert rounds.waits == [0.03, 0.03, ("poll", 0.5)]
    head = projector.head()
    assert applied == [head - 5, head, head]  # the five stored while it settled: in the second round
