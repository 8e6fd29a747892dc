"""One record per person: who is registered under each resident ID number, by a keyed fingerprint.

A case worker whose phone lost its Idempotency-Key, or who did not find the person, would register
them again, and their cases would split between two records (and an erasure would miss one). The
ID number is personal, so the index keeps only a keyed digest of it (KeyRing.fingerprint), in a
table of its own rather than in the log: a person's rows go when their key does (KeyRing.destroy),
so that after an erasure no one can even learn that the number was ever registered.

A registration adds its row before it saves the person (so that a registration of the same number
at once finds it), and a row outlives a registration cut short between the two (the process
stopped): it would name no one, and no erasure would ever remove it. So a row is pending, with the
moment it was added, until its person is saved; a pending row an hour old is settled, at each start
and at most hourly while registrations come in: kept if the person was saved, else dropped.
"""

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from domain.client import Client
from projections.privacy import KEYS, KeyRing
from projections.timefmt import micros

logger = logging.getLogger(f"lastmeter.{__name__}")
IDENTITIES = "person_identities"
SETTLED_AFTER = 3600.0  # seconds: no registration is still being saved an hour after it added its row


class IdentityIndex:
    def __init__(self, keys: KeyRing):
        self.keys, self.store = keys, keys.store
        keys.erased_with_the_key.append(IDENTITIES)
        self._settled_at = float("-inf")  # time.monotonic() of the last settling

    def setup(self, app: Any) -> None:
        """Creates the index and, once, fills it from the log: every person registered before it."""
        with self.store.write() as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {IDENTITIES} "
                       "(fingerprint TEXT NOT NULL, person_id TEXT NOT NULL, PRIMARY KEY (fingerprint, person_id))")
            tx.execute(f"CREATE INDEX IF NOT EXISTS {IDENTITIES}_person ON {IDENTITIES} (person_id)")
        self.store.once("person identities from the log", lambda: self._fill([
            (self.fingerprint(event.personal["id_number"]), str(event.originator_id))
            for event in app.recorded(Client.ClientRegistered)
            if event.personal.get("id_number")  # None once the person was erased
        ]))
        self.store.once("person identities pending until saved",
                        lambda: self._pending_column(app.recorder.events_table_name))
        self.settle(app.is_registered)

    def _pending_column(self, events: str) -> None:
        """Rows added before rows were pending get the column, NULL (saved), but for those of persons
        the log does not hold (a registration an earlier version cut short left one, unmarked; or one
        that a process of that version is saving still), which are pending from now: settled an hour
        on, dropped unless saved by then. The log is beside this table in the store (its ids uuid on
        PostgreSQL, hex on SQLite). Run again, it changes nothing."""
        with self.store.write() as tx:
            if "pending_since" not in tx.columns(IDENTITIES):
                tx.execute(f"ALTER TABLE {IDENTITIES} ADD COLUMN pending_since BIGINT")
            tx.execute(f"CREATE INDEX IF NOT EXISTS {IDENTITIES}_pending ON {IDENTITIES} (pending_since) "
                       "WHERE pending_since IS NOT NULL")
            person = "CAST(person_id AS uuid)" if tx.postgres else "replace(person_id, '-', '')"
            tx.execute(f"UPDATE {IDENTITIES} SET pending_since = ? WHERE pending_since IS NULL AND NOT EXISTS "
                       f"(SELECT 1 FROM {events} WHERE originator_id = {person})",
                       (micros(datetime.now(timezone.utc)),))

    def _fill(self, rows: list[tuple[str, str]]) -> None:
        """Adds the rows of persons not erased: one erased since the log was read (by another process)
        must not get a row back, which no erasure would then remove."""
        with self.store.write() as tx:
            if tx.postgres:  # no key destroyed between the look for its tombstone and the insert
                tx.execute(f"LOCK TABLE {KEYS} IN SHARE MODE")
            tx.executemany(f"INSERT INTO {IDENTITIES} (fingerprint, person_id) SELECT ?, ? WHERE NOT EXISTS "
                           f"(SELECT 1 FROM {KEYS} WHERE person_id = ? AND wrapped IS NULL) ON CONFLICT DO NOTHING",
                           [(fingerprint, person, person) for fingerprint, person in rows])

    def fingerprint(self, id_number: str) -> str:
        return self.keys.fingerprint(b"id_number\n" + id_number.upper().encode())

    def add(self, fingerprint: str, person: UUID) -> None:
        """The row of a registration about to be saved: pending until `saved`."""
        with self.store.write() as tx:
            tx.execute(f"INSERT INTO {IDENTITIES} (fingerprint, person_id, pending_since) VALUES (?, ?, ?) "
                       "ON CONFLICT DO NOTHING", (fingerprint, str(person), micros(datetime.now(timezone.utc))))

    def saved(self, person: UUID) -> None:
        with self.store.write() as tx:
            tx.execute(f"UPDATE {IDENTITIES} SET pending_since = NULL WHERE person_id = ?", (str(person),))

    def registration_answered(self, person: UUID, saved: bool) -> None:
        """A registration answered: its row settled if `person` was saved; else (another request's
        answer, by its receipt) dropped. A row that cannot be settled now stays pending, to settle."""
        if not saved:
            self.forget(person)
            return
        try:
            self.saved(person)
        except Exception as error:  # noqa: BLE001 - the person is saved; settling keeps the row
            logger.warning("a registration's identity row stays pending (%s)", type(error).__name__)

    def registration_failed(self, person: UUID, registered: Callable[[UUID], bool]) -> None:
        """A registration failed, perhaps after its commit (a connection lost as it answered): its row
        goes only if the person was not saved, and stays pending, to settle, if the store cannot say."""
        try:
            (self.saved if registered(person) else self.forget)(person)
        except Exception as error:  # noqa: BLE001 - the store does not answer; the failure told is the first
            logger.warning("a failed registration's identity row stays pending (%s)", type(error).__name__)

    def settle_when_due(self, registered: Callable[[UUID], bool]) -> None:
        if time.monotonic() - self._settled_at >= SETTLED_AFTER:
            self.settle(registered)

    def settle(self, registered: Callable[[UUID], bool]) -> None:
        """Keeps each row pending for an hour or more whose person was saved; drops the others."""
        self._settled_at = time.monotonic()
        with self.store.read() as tx:
            stale = tx.execute(f"SELECT DISTINCT person_id FROM {IDENTITIES} WHERE pending_since < ?",
                               (micros(datetime.now(timezone.utc) - timedelta(seconds=SETTLED_AFTER)),)).fetchall()
        for person in (UUID(row[0]) for row in stale):
            (self.saved if registered(person) else self.forget)(person)

    def others(self, fingerprint: str, person: UUID) -> list[UUID]:
        """Everyone under the fingerprint but `person`: some perhaps never saved (a registration cut
        short leaves its row, which names no client)."""
        with self.store.read() as tx:
            rows = tx.execute(f"SELECT person_id FROM {IDENTITIES} WHERE fingerprint = ? AND person_id <> ?",
                              (fingerprint, str(person))).fetchall()
        return [UUID(row[0]) for row in rows]

    def forget(self, person: UUID) -> None:
        """Drops the rows of a registration not saved (refused, answered by another's receipt, cut short)."""
        with self.store.write() as tx:
            tx.execute(f"DELETE FROM {IDENTITIES} WHERE person_id = ?", (str(person),))

