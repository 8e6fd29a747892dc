"""The projector: reads the event log in batches and keeps every view up to date.

Each batch is applied to a view's tables and the view's position recorded in
the same transaction, so a crash anywhere leaves view and position
consistent and the run resumes where it stopped. A batch is read before the
transaction and applied only if the position is still the one it was read
from, so several projectors (API workers, `lastmeter projector`) can run at
once without applying anything twice.

Never skipping: the library's PostgreSQL recorder takes a table lock for
every insert, so positions become visible in commit order, and SQLite has a
single writer; a position seen is therefore never followed by a lower one
committing later. Gaps (inserts that failed) stay gaps.
"""

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper

from projections.store import Tx, ViewStore
from projections.view import NEXT, View

POSITIONS = "projection_positions"


@dataclass(frozen=True)
class Status:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return max(self.head - self.position, 0)


class Projector:
    def __init__(self, app: Application, store: ViewStore, views: Sequence[type[View]], batch_size: int = 2000,
                 mapper: Mapper | None = None):
        self.app = app
        self.mapper = mapper or app.mapper
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
                    self._create(tx, view_cls(), name)

    def _create(self, tx: Tx, view: View, tracking: str) -> None:
        view.drop(tx)
        view.create(tx, uuid.uuid4().hex[:8])
        tx.execute(f"DELETE FROM {POSITIONS} WHERE name=?", (tracking,))
        tx.execute(f"INSERT INTO {POSITIONS} (name, position, fingerprint) VALUES (?, 0, ?)",
                   (tracking, view.fingerprint()))

    # -- processing -------------------------------------------------------

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def position(self, tracking: str, tx: Tx | None = None) -> int:
        if tx is None:
            with self.store.read() as tx:
                return self.position(tracking, tx)
        row = tx.execute(f"SELECT position FROM {POSITIONS} WHERE name=?", (tracking,)).fetchone()
        return row[0] if row else 0

    def _lock_position(self, tx: Tx, tracking: str) -> int:
        suffix = " FOR UPDATE" if self.store.postgres else ""
        return tx.execute(f"SELECT position FROM {POSITIONS} WHERE name=?{suffix}", (tracking,)).fetchone()[0]

    def _read(self, after: int, limit: int, view: View) -> list[tuple[int, Any]]:
        notifications = self.app.recorder.select_notifications(after + 1, limit)
        if view.stored:
            return [(n.id, n) for n in notifications]
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def step(self, view: View, tracking: str) -> int:
        """Applies one batch to one view; returns how many events it applied."""
        start = self.position(tracking)
        events = self._read(start, self.batch_size, view)
        if not events:
            return 0
        with self.store.write() as tx:
            if self._lock_position(tx, tracking) != start:
                return 0  # another projector moved on; read again
            view.apply(tx, events)
            tx.execute(f"UPDATE {POSITIONS} SET position=? WHERE name=?", (events[-1][0], tracking))
        return len(events)

    def catch_up(self) -> int:
        """Brings every live view to the head of the log; returns events applied."""
        total = 0
        for name, view_cls in self.views.items():
            view = view_cls()
            while applied := self.step(view, name):
                self.processed[name] += applied
                total += applied
        with self._caught_up:
            self._caught_up.notify_all()
        return total

    def run(self, stop: threading.Event, poll: float = 0.05) -> None:
        """Follows the log until `stop` is set."""
        while not stop.is_set():
            if not self.catch_up():
                stop.wait(poll)

    def wait_for(self, position: int, timeout: float) -> bool:
        """Waits until every view has reached `position`; False on timeout."""
        deadline = time.monotonic() + timeout
        while min(s.position for s in self.statuses()) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._caught_up:
                self._caught_up.wait(min(remaining, 0.05))
        return True

    def statuses(self) -> list[Status]:
        head = self.head()
        with self.store.read() as tx:
            return [Status(name, self.position(name, tx), head) for name in self.views]

    # -- rebuilding -------------------------------------------------------

    def rebuild(self, name: str, progress: Callable[[int, int], None] = lambda done, head: None) -> int:
        """Builds the view afresh beside the live one, then swaps it in once caught up."""
        view_cls = self.views[name]
        fresh = view_cls(suffix=NEXT)
        tracking = name + NEXT
        with self.store.write() as tx:
            self._create(tx, fresh, tracking)
        done = 0
        while applied := self.step(fresh, tracking):
            done += applied
            progress(done, self.head())
        with self.store.write() as tx:
            self._lock_position(tx, name)
            position = self._lock_position(tx, tracking)
            while events := self._read(position, self.batch_size, fresh):
                fresh.apply(tx, events)
                position = events[-1][0]
                done += len(events)
            view_cls().drop(tx)
            fresh.rename_to_live(tx)
            tx.execute(f"UPDATE {POSITIONS} SET position=?, fingerprint=? WHERE name=?",
                       (position, view_cls.fingerprint(), name))
            tx.execute(f"DELETE FROM {POSITIONS} WHERE name=?", (tracking,))
        progress(done, self.head())
        return done
