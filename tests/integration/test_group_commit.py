"""Group commit on both stores: shared transactions never lose or duplicate a save."""

import uuid

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from api.lockedinsert import insert_for
from domain.storage.groupcommit import GroupCommit, _Save


def event(aggregate: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(originator_id=aggregate, originator_version=version, topic="test:Event", state=b"{}")


@pytest.fixture
def group(lastmeter):
    return GroupCommit(insert_for(lastmeter.recorder))


def test_saves_in_one_batch_get_their_own_positions_in_order(group, lastmeter):
    a, b = uuid.uuid4(), uuid.uuid4()
    saves = [_Save([event(a, 1), event(a, 2)]), _Save([event(b, 1)])]
    group._commit(saves)
    assert [s.error for s in saves] == [None, None]
    first, second = saves[0].positions, saves[1].positions
    assert len(first) == 2 and len(second) == 1 and first[0] < first[1] < second[0]


def test_the_later_of_two_saves_of_one_version_in_a_batch_loses_the_race(group, lastmeter):
    a = uuid.uuid4()
    saves = [_Save([event(a, 1)]), _Save([event(a, 1)])]
    group._commit(saves)
    assert saves[0].error is None and isinstance(saves[1].error, IntegrityError)
    assert len(lastmeter.recorder.select_events(a)) == 1


def test_a_save_that_conflicts_with_the_store_fails_alone(group, lastmeter):
    stored, fresh = uuid.uuid4(), uuid.uuid4()
    group._commit([_Save([event(stored, 1)])])
    saves = [_Save([event(fresh, 1)]), _Save([event(stored, 1)]), _Save([event(fresh, 2)])]
    group._commit(saves)
    assert [type(s.error) for s in saves] == [type(None), IntegrityError, type(None)]
    assert [e.originator_version for e in lastmeter.recorder.select_events(fresh)] == [1, 2]


def test_through_the_writer_thread(group, lastmeter):
    a = uuid.uuid4()
    assert len(group.insert([event(a, 1)])) == 1
    with pytest.raises(IntegrityError):
        group.insert([event(a, 1)])
    group.close()


def test_a_save_of_a_version_this_writer_committed_is_refused_before_the_database(group, lastmeter):
    a, b = uuid.uuid4(), uuid.uuid4()
    group._commit([_Save([event(a, 1)])])
    saves = [_Save([event(b, 1)]), _Save([event(a, 1)])]
    calls = []
    insert = group._insert_events
    group._insert_events = lambda events: calls.append(len(events)) or insert(events)
    group._commit(saves)
    assert saves[0].error is None and isinstance(saves[1].error, IntegrityError)
    assert calls == [1]  # one transaction, with the fresh save only


def test_a_save_after_close_is_refused_not_left_waiting(group):
    group.insert([event(uuid.uuid4(), 1)])
    group.close()
    with pytest.raises(RuntimeError):
        group.insert([event(uuid.uuid4(), 1)])
