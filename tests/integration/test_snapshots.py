"""Case snapshots: a faster read of a long case that never says anything a replay of the log would not."""

from datetime import datetime, timedelta, timezone

import pytest

from api.backend import open_backend
from domain.actor import Actor
from domain.case import ServiceCase
from domain.client import RegistrationTurns
from domain.clock import local
from domain.errors import AlreadyRegistered, CommandRefused
from domain.purchasing import DeliveryRow
from tests.helpers import id_number

WORKER = Actor("li-worker", "case_worker")


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"case_snapshot_interval": 3})


def long_case(lastmeter, notes: int = 10):
    client = lastmeter.register_client(WORKER, None, name="陈美玲", id_number=id_number(seed=7),
                                       phone="13500000000", org_unit="350502")
    case = lastmeter.open_case(WORKER, None, client_id=client.id, org_unit="350502", kind="certificate",
                               need="办证")
    for i in range(notes):
        lastmeter.update_case(None, case.id, None, lambda c, i=i: c.add_note(WORKER, f"note {i}"))
    lastmeter.update_case(None, case.id, None, lambda c: c.take_step(WORKER, "verify_documents", {}))
    return client, case


def snapshot_versions(lastmeter, case_id) -> list[int]:
    return [s.originator_version for s in lastmeter.snapshots.get(case_id)]


def state(case: ServiceCase) -> dict:
    return {k: v for k, v in vars(case).items() if k != "_pending_events"}


def test_every_version_read_with_snapshots_equals_the_replay_of_the_log(lastmeter):
    _, case = long_case(lastmeter)
    assert snapshot_versions(lastmeter, case.id) == [3, 6, 9, 12]
    lastmeter.repository.cache.__init__(lastmeter.repository.cache.maxsize)  # nothing cached: snapshots are read
    for version in range(1, 13):
        assert state(lastmeter.get_case(case.id, version)) == state(lastmeter.get_case(case.id, version, from_log=True))
    assert state(lastmeter.get_case(case.id)).get("need") == "办证"


def test_as_of_a_moment_reads_the_same_with_or_without_snapshots(lastmeter):
    _, case = long_case(lastmeter, notes=4)
    now = datetime.now(timezone.utc)
    assert state(lastmeter.case_as_of(case.id, now)) == state(lastmeter.case_as_of(case.id, now, from_log=True))


def test_a_snapshot_keeps_nothing_of_an_erased_person_readable(backend):
    lastmeter = backend.lastmeter
    client, case = long_case(lastmeter, notes=4)
    lastmeter.erase_client(WORKER, None, client.id, "service_ended")
    backend.keys.destroy(client.id)
    snapshot = next(iter(lastmeter.snapshots.get(case.id, desc=True, limit=1)))
    assert snapshot.personal["need"] is None
    assert lastmeter.get_case(case.id, snapshot.originator_version).need is None


def test_a_snapshot_that_cannot_be_stored_does_not_fail_the_command_it_follows(lastmeter, settings):
    _, case = long_case(lastmeter, notes=0)  # version 2
    table = lastmeter.snapshots.recorder.events_table_name
    if settings.is_postgres:
        table = f"{settings.postgres_schema}.{table}"
    with lastmeter.snapshots.recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(f"DROP TABLE {table}")
    written = lastmeter.update_case(None, case.id, None, lambda c: c.add_note(WORKER, "third"))
    assert written.version == 3 and lastmeter.get_case(case.id, from_log=True).notes == 1


def test_a_delivery_is_bounded_by_the_referral_day_the_log_holds_whatever_snapshot_the_case_is_read_from(
        lastmeter, settings, monkeypatch):
    """Snapshots stored before referral days were kept restore a case without them; the day the
    delivery rule needs is then read from the log, so the answer is the one a replay gives."""
    taken = ServiceCase.Snapshot.take.__func__

    def as_before(cls, case):
        snapshot = taken(cls, case)
        del snapshot.state["referred_on"]
        return snapshot

    monkeypatch.setattr(ServiceCase.Snapshot, "take", classmethod(as_before))
    supervisor, contractor = Actor("li-supervisor", "supervisor"), Actor("ngo-p-staff", "contractor")
    client = lastmeter.register_client(WORKER, None, name="陈美玲", id_number=id_number(seed=8),
                                       phone="13500000000", org_unit="350502")
    case = lastmeter.open_case(WORKER, None, client_id=client.id, org_unit="350502", kind="home_care", need="托养")
    today = local(datetime.now(timezone.utc)).date()
    contract = lastmeter.create_contract(supervisor, None, ["350502"], provider="ngo-p", service_kind="home_care",
                                         unit="hour", unit_price="50.00", budget="5000.00",
                                         starts_on=today - timedelta(days=60), ends_on=today + timedelta(days=60))
    lastmeter.refer_case(supervisor, None, case.id, None, contract.id)
    for i in range(3):  # a snapshot at version 3 or later, without the day
        lastmeter.update_case(None, case.id, None, lambda c, i=i: c.add_note(WORKER, f"note {i}"))
    restarted = open_backend(settings)  # nothing cached: the case is read from its snapshot
    try:
        app = restarted.lastmeter
        assert app.get_case(case.id).referred_on == {}
        assert app.get_case(case.id, from_log=True).referred_on == {str(contract.id): today.isoformat()}
        before = DeliveryRow(str(case.id), today - timedelta(days=30), 1, "R-1")
        with pytest.raises(CommandRefused, match="before the case was referred"):
            app.report_delivery(contractor, None, contract.id, before)
        assert app.report_delivery(contractor, None, contract.id, DeliveryRow(str(case.id), today, 1, "R-2"))
    finally:
        restarted.close()


def test_a_registration_lot_is_snapshotted_and_still_keeps_one_record_per_person(lastmeter):
    """A lot takes a turn per person registered in it: read whole, it would grow with the city."""
    index, numbers = lastmeter.identities, {}
    for seed in range(5000):  # four ID numbers whose fingerprints fall in one lot
        number = id_number(seed=seed)
        numbers.setdefault(index.fingerprint(number)[:2], set()).add(number)
        lot = next((lot for lot, found in numbers.items() if len(found) == 4), None)
        if lot:
            break
    for number in sorted(numbers[lot]):
        lastmeter.register_client(WORKER, None, name="王芳", id_number=number, phone="13500000000", org_unit="350502")
    assert snapshot_versions(lastmeter, RegistrationTurns.id_for(lot)) == [3]
    lastmeter.repository.cache.__init__(lastmeter.repository.cache.maxsize)  # the lot is read from its snapshot
    with pytest.raises(AlreadyRegistered):
        lastmeter.register_client(WORKER, None, name="王芳", id_number=min(numbers[lot]), phone="13500000000",
                                  org_unit="350502")
    assert lastmeter.repository.get(RegistrationTurns.id_for(lot)).version == 4
