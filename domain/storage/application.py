"""The library's Application as lastmeter stores with it: saves through one group commit, a locking
cache, a mapper that seals personal data (or refuses it), snapshots that never fail a save."""

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from eventsourcing.application import Application, ProcessingEvent, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import ApplicationRecorder, Notification, Recording

from domain.storage.groupcommit import GroupCommit, Insert
from domain.storage.repository import PlaintextRefusingMapper, LockingRepository, fold

SNAPSHOT_INTERVAL = "CASE_SNAPSHOT_INTERVAL"  # env: an aggregate `snapshotted` every this many events (0: never)

logger = logging.getLogger(f"lastmeter.{__name__}")  # under the logger `serve` configures


class StoredApplication(Application):
    snapshotted: ClassVar[tuple[type, ...]] = ()  # the aggregates snapshotted every SNAPSHOT_INTERVAL events

    def __init__(self, env: dict[str, str] | None = None, mapper_factory: Callable[[Any], Any] | None = None,
                 insert_for: Callable[[ApplicationRecorder], Insert] | None = None):
        """`mapper_factory` builds the mapper from the transcoder: how personal data is sealed;
        `insert_for` how the group commit inserts into the recorder's store (default: the library's
        insert)."""
        self._mapper_factory = mapper_factory
        super().__init__(env)
        interval = int(self.env.get(SNAPSHOT_INTERVAL) or 0)
        self.snapshotting_intervals = dict.fromkeys(self.snapshotted, interval) if interval and self.snapshots else {}
        self.snapshotting_projectors = dict.fromkeys(self.snapshotted, fold)
        self._group_commit = GroupCommit(insert_for(self.recorder) if insert_for else self.recorder.insert_events)

    @property
    def events_stored(self) -> threading.Event:
        """Set whenever this application has committed events (clear it to wait for the next)."""
        return self._group_commit.stored

    def construct_repository(self) -> Repository:
        return LockingRepository.adopt(super().construct_repository())

    def construct_mapper(self) -> Any:
        if self._mapper_factory is None:
            return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=PlaintextRefusingMapper)
        return self._mapper_factory(self.construct_transcoder())

    def save(self, *aggregates: Aggregate | None, **kwargs: Any) -> list[Recording]:
        """The library's save, for aggregates (all this application saves), without its two
        isinstance checks of each against runtime Protocols: in Python 3.11 each walks the protocol's
        attributes, 13 us a pair, and they were a tenth of a command's Python in its worker thread.
        (The library's deprecated `notify` hook, a no-op never overridden here, is not called.)"""
        processing_event = ProcessingEvent()
        for aggregate in aggregates:
            if aggregate is None:
                continue
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _record(self, processing_event: ProcessingEvent) -> list[Recording]:
        """Stores a save's events through the group commit (the library's own _record, batched).

        Events are mapped (and personal values sealed) here, in the command's thread, so that an
        error belongs to its command alone.
        """
        events = processing_event.events
        stored = [self.mapper.to_stored_event(e) for e in events]
        positions = self._group_commit.insert(stored) if stored else []
        return [
            Recording(e, Notification(originator_id=s.originator_id, originator_version=s.originator_version,
                                      topic=s.topic, state=s.state, id=position))
            for e, s, position in zip(events, stored, positions, strict=True)
        ]

    def _take_snapshots(self, processing_event: ProcessingEvent) -> None:
        """A snapshot only makes reads faster: one not taken (another process took it first, the
        connection dropped) must not turn a command already committed into an error."""
        try:
            super()._take_snapshots(processing_event)
        except Exception as error:  # noqa: BLE001 - the save itself succeeded
            logger.warning("a snapshot was not taken (%s); reads replay more events", type(error).__name__)

    def close(self) -> None:
        self._group_commit.close()
        super().close()
