"""The projector: reads the event log in batches and keeps every view up to date.

Each batch is applied to a view's tables and the view's position recorded in
the same transaction, so a crash anywhere leaves view and position
consistent and the run resumes where it stopped. A batch is read before the
transaction and applied only if the position is still the one it was read
from, so several projectors (API workers, `lastmeter projector`) can run at
once without applying anything twice.

Never skipping: every insert on PostgreSQL takes a table lock (in the
database function of api/lockedinsert.py, as the library's recorder
does), so positions become visible in commit order, and SQLite has a single
writer; a position seen is therefore never followed by a lower one
committing later. Gaps (inserts that failed) stay gaps.
"""

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from eventsourcing.utils import get_topic

from projections.eventlog import by_aggregate
from projections.store import Tx, ViewStore
from projections.view import NEXT, View

log = logging.getLogger("lastmeter.projector")


class RebuildRunning(RuntimeError):
    """Another process is rebuilding views of this store: two would drop each other's fresh copies."""


class ViewChanged(RuntimeError):
    """A view's tables were made anew for another schema than this process's: it must not write them."""


class Stop(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class UntilOrphaned:
    """A stop signal, also set once the process that started this one is gone: a daemon child is
    stopped by a parent that exits, but a parent killed without a word (SIGKILL, or SIGTERM's default)
    leaves it running."""

    def __init__(self, stop: Stop, parent: int):
        self.stop, self.parent = stop, parent

    def is_set(self) -> bool:
        return self.stop.is_set() or os.getppid() != self.parent

    def wait(self, timeout: float | None = None) -> bool:
        return self.stop.wait(timeout) or self.is_set()


POSITIONS = "projection_positions"


@dataclass(frozen=True)
class Status:
    name: str
    position: int
    head: int
    current: bool = True  # False: made by another version of lastmeter, its rows what that one keeps

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


class Projector:
    def __init__(self, app: Application, store: ViewStore, views: Sequence[type[View]], batch_size: int = 2000,
                 mapper: Mapper | None = None, rebuild_batch_size: int = 10_000,
                 elsewhere: Callable[[], AbstractContextManager["Projector"]] | None = None):
        """`elsewhere` opens an equivalent projector in another process (it must pickle): with it, a
        rebuild on PostgreSQL folds in a process of its own, on a core of its own."""
        self.app = app
        self.elsewhere = elsewhere
        self.mapper = mapper or app.mapper
        self.rebuild_batch_size = rebuild_batch_size  # a rebuild's batch, and about the events of a fold's chunk
        self.store = store
        self.views = {v.name: v for v in views}
        self.batch_size = batch_size
        self.processed: dict[str, int] = {name: 0 for name in self.views}
        self._caught_up = threading.Condition()

    # -- setup ------------------------------------------------------------

    def setup(self) -> None:
        """Creates the tracking table, and any view that is missing or whose schema changed."""
        with self.store.write() as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {POSITIONS} "
                       "(name TEXT PRIMARY KEY, position BIGINT NOT NULL, fingerprint TEXT NOT NULL)")
            rows = dict((n, f) for n, f in tx.execute(f"SELECT name, fingerprint FROM {POSITIONS}").fetchall())
            for name, view_cls in self.views.items():
                if rows.get(name) != view_cls.fingerprint():
                    if name in rows:  # said, for an auditor reading the log: the chain view is one of them
                        log.warning("view %s: its schema changed since it was built; it is built anew from the "
                                    "event log", name)
                    self._create(tx, self._view(name), name)

    def _create(self, tx: Tx, view: View, tracking: str, build: str | None = None) -> None:
        """Creates the view's tables and its position 0; a rebuild (`build`) indexes them at the swap."""
        view.drop(tx)
        view.create(tx, build or uuid.uuid4().hex[:8], indexed=build is None)
        tx.execute(f"DELETE FROM {POSITIONS} WHERE name=?", (tracking,))
        tx.execute(f"INSERT INTO {POSITIONS} (name, position, fingerprint) VALUES (?, 0, ?)",
                   (tracking, view.fingerprint()))

    # -- processing -------------------------------------------------------

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def position(self, tracking: str) -> int:
        with self.store.read() as tx:
            return self._positions(tx, [tracking]).get(tracking, 0)

    def _positions(self, tx: Tx, trackings: Sequence[str], lock: bool = False) -> dict[str, int]:
        """The positions of several copies in one statement; `lock`: locked for this transaction, in
        the order of their names whoever asks, so that projectors never deadlock (SQLite has one
        writer at a time anyway), and refused (ViewChanged) for a copy whose tables a newer version
        of lastmeter made anew since this process set up (an upgrade while it still runs): its rows
        would lack what the new schema keeps, and the view, its fingerprint current, would never be
        rebuilt."""
        tracked = self._tracked(tx, trackings, lock)
        for name, (_, fingerprint) in tracked.items() if lock else ():
            if not self._made_by_this_version(name, fingerprint):
                raise ViewChanged(f"the view {name} was made anew by another version of lastmeter")
        return {name: position for name, (position, _) in tracked.items()}

    def _tracked(self, tx: Tx, trackings: Sequence[str], lock: bool = False) -> dict[str, tuple[int, str]]:
        """The position and fingerprint of each copy that has them, in one statement (see _positions)."""
        names = sorted(set(trackings))
        locking = " ORDER BY name FOR UPDATE" if lock and self.store.postgres else ""
        rows = tx.execute(f"SELECT name, position, fingerprint FROM {POSITIONS} "
                          f"WHERE name IN ({', '.join('?' * len(names))}){locking}", names).fetchall()
        return {name: (position, fingerprint) for name, position, fingerprint in rows}

    def _made_by_this_version(self, tracking: str, fingerprint: str | None) -> bool:
        return fingerprint == self.views[tracking.removesuffix(NEXT)].fingerprint()

    def _read(self, copies: Sequence[tuple[View, str]], starts: dict[str, int],
              limit: int) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
        """A batch of the log after the lowest start: as stored, and decoded from where the first
        copy that reads decoded events stands (none at all if every copy reads them as stored)."""
        notifications = self.app.recorder.select_notifications(min(starts.values()) + 1, limit)
        stored = [(n.id, n) for n in notifications]
        decode_after = min((starts[t] for v, t in copies if not v.stored), default=None)
        decoded = [] if decode_after is None else \
            [(n.id, self.mapper.to_domain_event(n)) for n in notifications if n.id > decode_after]
        return stored, decoded

    def advance(self, copies: Sequence[tuple[View, str]], batch_size: int | None = None) -> int:
        """One batch for several views at once: the log read and decoded once, one transaction.

        Each copy is (view, tracking name); returns how many positions the batch spanned.
        """
        with self.store.read() as tx:
            starts = self._positions(tx, [tracking for _, tracking in copies])
        stored, decoded = self._read(copies, starts, batch_size or self.batch_size)
        if not stored:
            return 0
        with self.store.write() as tx:
            # A copy that another projector moved on since it was read is left to the next round.
            locked = self._positions(tx, list(starts), lock=True)
            unmoved = [(v, t) for v, t in copies if locked[t] == starts[t]]
            self._apply(tx, unmoved, starts, stored, decoded)
        return len(stored)

    def _apply(self, tx: Tx, copies: Sequence[tuple[View, str]], starts: dict[str, int],
               stored: list[tuple[int, Any]], decoded: list[tuple[int, Any]]) -> None:
        moved = []
        for view, tracking in copies:
            batch = [e for e in (stored if view.stored else decoded) if e[0] > starts[tracking]]
            if batch:
                view.apply(tx, batch)
                moved.append((batch[-1][0], tracking))
                self.processed[tracking.removesuffix(NEXT)] += len(batch)
        tx.executemany(f"UPDATE {POSITIONS} SET position=? WHERE name=?", moved)

    def _view(self, name: str, suffix: str = "") -> View:
        return self.views[name](suffix, events_table=self.app.recorder.events_table_name)

    def live(self) -> list[tuple[View, str]]:
        return [(self._view(name), name) for name in self.views]

    def catch_up(self) -> int:
        """Brings every live view to the head of the log; returns positions read."""
        total = 0
        while read := self.advance(self.live()):
            total += read
        with self._caught_up:
            self._caught_up.notify_all()
        return total

    def run(self, stop: Stop, poll: float = 0.05, after_each: Callable[[], None] = lambda: None,
            wake: Callable[[float], Any] | None = None, settle: float = 0.0) -> None:
        """Follows the log until `stop` is set; `after_each` is called after every round. Caught up, it
        waits `poll` seconds, or less with `wake`, which returns early when new events are stored.
        After a round that applied events it waits `settle` seconds, for more to batch."""
        while not stop.is_set():
            try:
                read = self.catch_up()
            except ViewChanged as changed:
                self._made_anew_for_this_version(changed)
                continue
            after_each()
            if not read:
                (wake or stop.wait)(poll)
            elif settle:
                stop.wait(settle)

    def _made_anew_for_this_version(self, changed: ViewChanged) -> None:
        """A process of another version made a view anew (one of the version before, started beside
        this one, or its command line): its rows are not what this version keeps, and it would stand
        still for good. The projector leading makes it anew for this version, and keeps the lead, so
        that two versions do not take turns rebuilding it; the other version's projector refuses to
        write it, and its readiness says so, until it is stopped."""
        log.warning("%s; it is made anew for this version", changed)
        with self.store.setup_lock():
            self.setup()

    def wait_for(self, position: int, timeout: float, poll: float = 0.05) -> bool:
        """Waits until every view has reached `position`; False on timeout. A projector in this
        process wakes the wait when it catches up; one elsewhere is seen by polling every `poll`."""
        deadline = time.monotonic() + timeout
        while min(self._live_positions().values()) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._caught_up:
                self._caught_up.wait(min(remaining, poll))
        return True

    def _live_positions(self) -> dict[str, int]:
        with self.store.read() as tx:
            positions = self._positions(tx, list(self.views))
        return {name: positions.get(name, 0) for name in self.views}

    def statuses(self) -> list[Status]:
        head = self.head()
        with self.store.read() as tx:
            tracked = self._tracked(tx, list(self.views))
        statuses = []
        for name in self.views:
            position, fingerprint = tracked.get(name, (0, None))  # none yet: not made, by no version
            statuses.append(Status(name, position, head, self._made_by_this_version(name, fingerprint)))
        return statuses

    # -- rebuilding -------------------------------------------------------

    def rebuild(self, names: Sequence[str], progress: Callable[[int, int], None] = lambda done, total: None) -> int:
        """Builds the views afresh beside the live ones, then swaps them all in, in one transaction,
        once caught up; readers never see a half-built view. Returns the log position reached.

        A view that folds one aggregate's events (`View.folds`) is first fed the log up to the head
        aggregate by aggregate, so each of its rows is written once rather than once per batch that
        touches it; then every copy follows the log in order from where it stands.
        `progress(done, total)` counts events folded and positions read, from either of two threads.
        One rebuild at a time in a store (RebuildRunning for a second): two dropped each other's copies.
        """
        with self.store.rebuilding() as alone:
            if not alone:
                raise RebuildRunning("another process is rebuilding the views of this store; wait for it to end")
            return self._rebuild(names, progress)

    def _rebuild(self, names: Sequence[str], progress: Callable[[int, int], None]) -> int:
        fresh = [(self._view(name, NEXT), name + NEXT) for name in names]
        build = uuid.uuid4().hex[:8]
        with self.store.write() as tx:
            for name in set(self.views) - set(names):  # copies a rebuild killed before its end left (none runs now)
                self._drop_copy(tx, self._view(name, NEXT), name + NEXT)
            for view, tracking in fresh:
                self._create(tx, view, tracking, build)
        head = self.head()
        folding = [(view, tracking) for view, tracking in fresh if view.folds is not None]
        in_order = [(view, tracking) for view, tracking in fresh if view.folds is None]
        total = head * (2 if folding and in_order else 1)
        done, counting = [0], threading.Lock()  # events folded and positions read, by either thread

        def advanced(count: int) -> None:
            with counting:
                done[0] += count
                progress(min(done[0], total), total)

        # The fold and the copies that read the log in order share nothing until the fold ends, so they
        # run side by side: in another process where one can be opened, else in a thread.
        with self._folding_beside(folding, head, advanced) as folded:
            while in_order and (read := self.advance(in_order, self.rebuild_batch_size)):
                advanced(read)
                folded(wait=False)  # a fold that failed stops the rebuild now, not after this pass
            folded(wait=True)
        while read := self.advance(fresh, self.rebuild_batch_size):
            advanced(read)
        try:
            with self.store.write() as tx:
                self._positions(tx, names, lock=True)  # the live views: no projector moves them until the swap
                self._finish(tx, fresh)
                positions = self._positions(tx, [tracking for _, tracking in fresh])  # locked by _finish
                for (view, tracking), name in zip(fresh, names):
                    view.index(tx, build)
                    view.check_against(tx, self._view(name))
                    self._view(name).drop(tx)
                    view.rename_to_live(tx)
                    tx.execute(f"UPDATE {POSITIONS} SET position=?, fingerprint=? WHERE name=?",
                               (positions[tracking], view.fingerprint(), name))
                    tx.execute(f"DELETE FROM {POSITIONS} WHERE name=?", (tracking,))
        except Exception:  # refused (a copy disagreeing with what it would replace) or failed: nothing swapped in
            with self.store.write() as tx:
                for view, tracking in fresh:
                    self._drop_copy(tx, view, tracking)
            raise
        self.store.refresh_statistics([f"view_{t.name}" for name in names for t in self.views[name].tables])
        progress(total, total)
        return max(positions.values(), default=head)

    @staticmethod
    def _drop_copy(tx: Tx, view: View, tracking: str) -> None:
        """A rebuild's copy of a view gone, with its position."""
        view.drop(tx)
        tx.execute(f"DELETE FROM {POSITIONS} WHERE name=?", (tracking,))

    @contextmanager
    def _folding_beside(self, copies: Sequence[tuple[View, str]], head: int,
                        advanced: Callable[[int], None]) -> Iterator[Callable[..., None]]:
        """Starts folding `copies`; yields `folded(wait)`, which raises if the fold failed and, with
        `wait`, waits for it to end. Leaving early (an error here) stops the fold."""
        if not copies:
            yield lambda wait: None
        elif self.elsewhere is None or not self.store.postgres:
            stop = threading.Event()
            with ThreadPoolExecutor(1, thread_name_prefix="rebuild-fold") as beside:
                fold = beside.submit(self._fold, copies, head, advanced, stop)
                try:
                    yield lambda wait: fold.result() if wait or fold.done() else None
                finally:
                    stop.set()
        else:
            # Spawned: nothing of this process's connections is shared, and this process is the fold's
            # parent, which the fold watches (a fork server would be its parent instead).
            context = multiprocessing.get_context("spawn")
            count = context.Value("q", 0)
            process = context.Process(target=_fold_elsewhere, name="rebuild-fold", daemon=True,
                                      args=(self.elsewhere, [(type(v), t) for v, t in copies], head,
                                            self.rebuild_batch_size, count, os.getpid()))
            process.start()
            reported = [0]

            def folded(wait: bool) -> None:
                while wait and process.is_alive():
                    process.join(0.5)
                    folded(wait=False)
                with count.get_lock():
                    now = count.value
                advanced(now - reported[0])
                reported[0] = now
                if not process.is_alive() and process.exitcode != 0:
                    raise RuntimeError(f"the fold of {', '.join(t for _, t in copies)} failed "
                                       f"(exit code {process.exitcode}); nothing was swapped in")

            try:
                yield folded
            finally:
                if process.is_alive():  # the rebuild failed in this process: stop the fold too
                    process.terminate()
                process.join()
                process.close()

    def _fold(self, copies: Sequence[tuple[View, str]], head: int, advanced: Callable[[int], None],
              stop: Stop | None = None) -> None:
        """Feeds each copy its aggregates' events up to `head`, aggregate by aggregate, then sets its
        position to `head`. Positions stay 0 until then: a crash (or `stop`) leaves a copy that the
        next rebuild drops; the live views are untouched either way."""
        by_topic: dict[str, list[tuple[View, str]]] = {}
        for view, tracking in copies:
            by_topic.setdefault(get_topic(view.folds) + ".", []).append((view, tracking))
        for prefix, group in by_topic.items():
            for chunk in by_aggregate(self.app.recorder, head, prefix, self.rebuild_batch_size):
                events = [(n.id, self.mapper.to_domain_event(n)) for n in chunk]
                writes = [view.fold(events) for view, _ in group]
                if stop is not None and stop.is_set():  # as late as can be: nothing more is written
                    return
                with self.store.write() as tx:
                    for write in writes:
                        write(tx)
                for _, tracking in group:
                    self.processed[tracking.removesuffix(NEXT)] += len(chunk)
                advanced(len(chunk))
        with self.store.write() as tx:
            for _, tracking in copies:
                tx.execute(f"UPDATE {POSITIONS} SET position=? WHERE name=?", (head, tracking))

    def _finish(self, tx: Tx, copies: Sequence[tuple[View, str]]) -> None:
        """Inside the swap's transaction: applies what was written since the last batch."""
        while True:
            starts = self._positions(tx, [tracking for _, tracking in copies], lock=True)
            stored, decoded = self._read(copies, starts, self.batch_size)
            if not stored:
                return
            self._apply(tx, copies, starts, stored, decoded)


def _fold_elsewhere(elsewhere: Callable[[], AbstractContextManager[Projector]], copies: list[tuple[type[View], str]],
                    head: int, chunk: int, count: Any, parent: int) -> None:
    """A rebuild's fold, in a process of its own (see Projector._folding_beside); it stops once the
    rebuild's process is gone, leaving its copies for the next rebuild to drop."""

    def advanced(folded: int) -> None:
        with count.get_lock():
            count.value += folded

    with elsewhere() as projector:
        projector.rebuild_batch_size = chunk
        events_table = projector.app.recorder.events_table_name
        orphaned = UntilOrphaned(threading.Event(), parent)
        projector._fold([(cls(NEXT, events_table=events_table), tracking) for cls, tracking in copies], head, advanced,
                        orphaned)
        if orphaned.is_set():  # stopped short: never an exit that looks like a finished fold
            raise SystemExit("the rebuild that started this fold is gone; it stopped unfinished")
