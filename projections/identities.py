"""One record per person: who is registered under each resident ID number, by a keyed fingerprint.

A case worker whose phone lost its Idempotency-Key, or who did not find the person, would register
them again, and their cases would split between two records (and an erasure would miss one). The
ID number is personal, so the index keeps only a keyed digest of it (KeyRing.fingerprint), in a
table of its own rather than in the log: a person's rows go when their key does (KeyRing.destroy),
so that after an erasure no one can even learn that the number was ever registered.
"""

from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.client import Client
from projections.privacy import KeyRing

IDENTITIES = "person_identities"
INDEXED = "-"  # the fingerprint of the row that says every person registered before the index is in it


class IdentityIndex:
    def __init__(self, keys: KeyRing):
        self.keys, self.store = keys, keys.store
        keys.erased_with_the_key.append(IDENTITIES)

    def setup(self, app: Any) -> None:
        """Creates the index and, once, fills it from the log: every person registered before it."""
        with self.store.write() as tx:
            tx.execute(f"CREATE TABLE IF NOT EXISTS {IDENTITIES} "
                       "(fingerprint TEXT NOT NULL, person_id TEXT NOT NULL, PRIMARY KEY (fingerprint, person_id))")
            tx.execute(f"CREATE INDEX IF NOT EXISTS {IDENTITIES}_person ON {IDENTITIES} (person_id)")
            if tx.execute(f"SELECT 1 FROM {IDENTITIES} WHERE fingerprint = ?", (INDEXED,)).fetchone():
                return
        rows = [(self.fingerprint(id_number), str(person)) for person, id_number in _registered(app)]
        self._add_all(rows + [(INDEXED, INDEXED)])

    def fingerprint(self, id_number: str) -> str:
        return self.keys.fingerprint(b"id_number\n" + id_number.upper().encode())

    def add(self, fingerprint: str, person: UUID) -> None:
        self._add_all([(fingerprint, str(person))])

    def others(self, fingerprint: str, person: UUID) -> list[UUID]:
        """Everyone under the fingerprint but `person`: some perhaps never saved (a registration cut
        short leaves its row, which names no client)."""
        with self.store.read() as tx:
            rows = tx.execute(f"SELECT person_id FROM {IDENTITIES} WHERE fingerprint = ? AND person_id <> ?",
                              (fingerprint, str(person))).fetchall()
        return [UUID(row[0]) for row in rows]

    def forget(self, person: UUID) -> None:
        """Drops the rows of a registration not saved (refused, or answered by another's receipt)."""
        with self.store.write() as tx:
            tx.execute(f"DELETE FROM {IDENTITIES} WHERE person_id = ?", (str(person),))

    def _add_all(self, rows: list[tuple[str, str]]) -> None:
        with self.store.write() as tx:
            tx.executemany(f"INSERT INTO {IDENTITIES} (fingerprint, person_id) VALUES (?, ?) "
                           "ON CONFLICT DO NOTHING", rows)


def _registered(app: Any, batch: int = 1000) -> Iterator[tuple[UUID, str]]:
    """(person, ID number) of every registration in the log whose person was not erased."""
    topic, start = get_topic(Client.ClientRegistered), 1
    while notifications := app.recorder.select_notifications(start, batch, topics=[topic]):
        for notification in notifications:
            event = app.mapper.to_domain_event(notification)
            if event.personal.get("id_number"):
                yield event.originator_id, event.personal["id_number"]
        start = notifications[-1].id + 1
