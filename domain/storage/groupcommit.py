"""Group commit: saves that arrive together share one transaction.

Every save of the application is handed to one writer thread, which takes
whatever saves are waiting and inserts all their events in one transaction
(one table lock, one commit on PostgreSQL), then tells each save its
positions. Under load, many commands share each commit; alone, a save
commits at once. The guarantees stay those of a save of its own: a save
whose aggregate version was already stored, in the database or earlier in
the same batch, gets IntegrityError (and its command is re-run); a batch
refused for such a conflict is retried one save at a time, so no other save
is lost with it. Any other failure (the store not answering) fails every save
of the batch: a command sent again under its Idempotency-Key then finds
whether it was stored.
"""

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventsourcing.persistence import IntegrityError, StoredEvent

# How a batch's events are inserted in one transaction: their positions, in order.
Insert = Callable[[Sequence[StoredEvent]], Sequence[int] | None]
MAX_EVENTS = 500  # per transaction: bounded, so one commit never grows without limit
REMEMBERED = 100_000  # aggregates whose last committed version the writer remembers


def _closed_latch() -> threading.Lock:
    latch = threading.Lock()
    latch.acquire()
    return latch


@dataclass
class _Save:
    events: Sequence[StoredEvent]
    # Released once, when the save is finished: a bare lock, several times cheaper than an Event's
    # condition for the writer thread, which finishes every save.
    latch: threading.Lock = field(default_factory=_closed_latch)
    positions: Sequence[int] = ()
    error: BaseException | None = None

    def finish(self, positions: Sequence[int] = (), error: BaseException | None = None) -> None:
        self.positions, self.error = positions, error
        self.latch.release()

    def wait(self) -> None:
        self.latch.acquire()


class GroupCommit:
    def __init__(self, insert_events: Insert):
        """`insert_events`: the recorder's, or one of the store's own (api.lockedinsert on PostgreSQL)."""
        self._insert_events = insert_events
        self._waiting: queue.SimpleQueue[_Save | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        # The last version this writer committed of recently saved aggregates: a save that starts at
        # or below it lost a race within this process and is refused without touching the database,
        # so that it does not fail the batch it would have joined.
        self._committed: OrderedDict[object, int] = OrderedDict()
        self.stored = threading.Event()  # set after each commit: a projector in this process may wake

    def insert(self, events: Sequence[StoredEvent]) -> Sequence[int]:
        """Inserts the events of one save, with others waiting at the same moment; their positions."""
        save = _Save(events)
        with self._lock:
            if self._closed:
                raise RuntimeError("the application is closed")
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, name="group-commit", daemon=True)
                self._writer.start()
            self._waiting.put(save)
        save.wait()
        if save.error is not None:
            raise save.error
        return save.positions

    def close(self) -> None:
        """Writes what is waiting, then stops; a save after this is refused."""
        with self._lock:
            self._closed = True
            if self._writer is not None:
                self._waiting.put(None)
        if self._writer is not None:
            self._writer.join()

    def _write(self) -> None:
        while (first := self._waiting.get()) is not None:
            batch, size = [first], len(first.events)
            while size < MAX_EVENTS:
                try:
                    following = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._waiting.put(None)  # stop once this batch is written
                    break
                batch.append(following)
                size += len(following.events)
            self._commit(batch)

    def _commit(self, batch: list[_Save]) -> None:
        written: set[tuple[object, int]] = set()
        admitted = []
        for save in batch:
            keys = {(e.originator_id, e.originator_version) for e in save.events}
            if keys & written or self._stale(save):  # another save of that version came first
                save.finish(error=IntegrityError("that aggregate version was already written"))
                continue
            written |= keys
            admitted.append(save)
        try:
            positions = self._insert_events([e for save in admitted for e in save.events]) or []
        except IntegrityError as error:
            if len(admitted) == 1:
                admitted[0].finish(error=error)
            else:
                for save in admitted:  # find the saves that conflict with stored events; the others go in
                    self._commit([save])
            return
        except BaseException as error:
            for save in admitted:
                save.finish(error=error)
            return
        self.stored.set()
        start = 0
        for save in admitted:
            self._remember(save)
            save.finish(positions[start:start + len(save.events)])
            start += len(save.events)

    def _stale(self, save: _Save) -> bool:
        return any(e.originator_version <= self._committed.get(e.originator_id, 0) for e in save.events)

    def _remember(self, save: _Save) -> None:
        for e in save.events:
            self._committed[e.originator_id] = max(e.originator_version, self._committed.get(e.originator_id, 0))
            self._committed.move_to_end(e.originator_id)
        while len(self._committed) > REMEMBERED:
            self._committed.popitem(last=False)
