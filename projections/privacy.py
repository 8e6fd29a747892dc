"""Personal data sealed per person: each person's values are encrypted with a key of their own.

Keys live in a table of their own, each wrapped (AES-GCM) with the master
key, which is kept outside the database. Erasing a person deletes their key:
every sealed value about them, in every event, becomes unreadable
(crypto-shredding), while the events themselves, and the hash chain over
them, stay as they were.

Events carry their personal values in a `personal` field. When stored, the
field becomes an envelope `{"person", "fields", "sealed"}`: the person it is
about, the names of the fields (not personal), and the ciphertext. Read back
with the person's key it is the values again; without it (erased, or a
reader that holds no keys, like the projector) every field reads None.
"""

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from domain.errors import PersonErased
from projections.store import ViewStore

logger = logging.getLogger(f"lastmeter.{__name__}")  # under the logger `serve` configures

KEYS = "person_keys"
# Erasures asked for whose key may not be destroyed yet, or may still be left in the database's files.
ERASURES_BEGUN = "person_erasures_begun"
MASTER_CHECK = "master-key-check"  # a row whose value proves the master key is the store's own
FINGERPRINTS = b"lastmeter request fingerprints"  # what the key derived for fingerprints is for


class WrongMasterKey(RuntimeError):
    """The configured master key did not wrap this store's keys: refuse to start rather than misread."""


KEY_CACHE_SECONDS = 1.0  # another process's erasure is seen within this time


class KeyRing:
    def __init__(self, store: ViewStore, master_key: bytes):
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self.store = store
        self._master = AESGCM(master_key)
        self._fingerprints = HKDF(SHA256(), 32, salt=None, info=FINGERPRINTS).derive(master_key)
        self._cache: dict[UUID, tuple[float, bool, bytes | None]] = {}
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        # Tables of what else is kept of a person, by person_id: their rows go with the key (see
        # projections.identities).
        self.erased_with_the_key: list[str] = []

    def setup(self) -> None:
        """Creates the key table; refuses a master key other than the one the keys were wrapped with."""
        blob = "BYTEA" if self.store.postgres else "BLOB"
        with self.store.write() as tx:
            # `wrapped` is NULL for a person erased: the tombstone keeps a new key from ever being made.
            tx.execute(f"CREATE TABLE IF NOT EXISTS {KEYS} (person_id TEXT PRIMARY KEY, wrapped {blob})")
            tx.execute(f"CREATE TABLE IF NOT EXISTS {ERASURES_BEGUN} (person_id TEXT PRIMARY KEY)")
            row = tx.execute(f"SELECT wrapped FROM {KEYS} WHERE person_id = ?", (MASTER_CHECK,)).fetchone()
            if row is None:
                self._check_existing_keys(tx)
                nonce = os.urandom(12)
                check = nonce + self._master.encrypt(nonce, b"lastmeter", MASTER_CHECK.encode())
                tx.execute(f"INSERT INTO {KEYS} (person_id, wrapped) VALUES (?, ?)", (MASTER_CHECK, check))
            elif not self._opens(bytes(row[0])):
                raise WrongMasterKey("the master key is not the one this store's person keys were wrapped with")

    def _check_existing_keys(self, tx) -> None:
        """A store with keys but no check value yet (made before the check existed): one key must open."""
        row = tx.execute(f"SELECT person_id, wrapped FROM {KEYS} WHERE wrapped IS NOT NULL "
                         "AND person_id <> ? LIMIT 1", (MASTER_CHECK,)).fetchone()
        if row is not None:
            try:
                self._unwrap(UUID(row[0]), bytes(row[1]))
            except InvalidTag:
                raise WrongMasterKey("the master key is not the one this store's person keys were wrapped "
                                     "with") from None

    def _opens(self, check: bytes) -> bool:
        try:
            return self._master.decrypt(check[:12], check[12:], MASTER_CHECK.encode()) == b"lastmeter"
        except InvalidTag:
            return False

    def fingerprint(self, data: bytes) -> str:
        """A keyed digest of `data` (HMAC-SHA256, under a key derived from the master key). What an
        idempotency receipt keeps of its request: a plain hash of a request carrying personal values
        would let anyone who reads the log test a guess of them (an ID number has few enough
        candidates), and would outlive the person's erasure."""
        return hmac.new(self._fingerprints, data, hashlib.sha256).hexdigest()

    def key_for(self, person: UUID) -> bytes | None:
        """The person's key; None if they have none, were erased, or it cannot be unwrapped here."""
        return self._state(person)[1]

    def erased(self, person: UUID) -> bool:
        """Whether the person's key was destroyed (or cannot be read here). One never sealed for, a
        person being registered, has none yet and is not erased."""
        found, key = self._state(person)
        return found and key is None

    def key_to_seal(self, person: UUID) -> bytes:
        """The person's key, made on first use; PersonErased once they were erased."""
        found, key = self._state(person)
        if not found:
            key = self._create(person)
        if key is None:
            if self._load(person)[2]:
                raise WrongMasterKey(f"the key of person {person} was wrapped with another master key")
            raise PersonErased(f"the personal data of person {person} was erased; nothing more can be recorded")
        return key

    def _state(self, person: UUID) -> tuple[bool, bytes | None]:
        """(whether the person has a key row, the key): from a cache at most KEY_CACHE_SECONDS old."""
        now = time.monotonic()
        if now - self._swept > KEY_CACHE_SECONDS:
            self._sweep(now)
        cached = self._cache.get(person)
        if cached and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1], cached[2]
        found, key, _ = self._load(person)
        with self._lock:
            latest = self._cache.get(person)
            if latest is None or latest[0] < now:  # unless this process made or destroyed the key meanwhile
                self._cache[person] = (now, found, key)
        return found, key

    def _sweep(self, now: float) -> None:
        """Drops the keys cached too long to be used again: a key this process unwrapped stays in its
        memory (a core dump, swap) until the first look-up a second after, not until that person's
        next one, which after another process erased them may never come."""
        with self._lock:
            self._swept = now
            for person in [p for p, (at, _, _) in self._cache.items() if now - at >= KEY_CACHE_SECONDS]:
                del self._cache[person]

    def _load(self, person: UUID) -> tuple[bool, bytes | None, bool]:
        """(whether a row exists, the key or None for a tombstone, whether the key is unreadable here)."""
        with self.store.read() as tx:
            row = tx.execute(f"SELECT wrapped FROM {KEYS} WHERE person_id=?", (str(person),)).fetchone()
        if row is None or row[0] is None:
            return row is not None, None, False
        try:
            return True, self._unwrap(person, bytes(row[0])), False
        except InvalidTag:  # wrapped under another master key
            return True, None, True

    def _create(self, person: UUID) -> bytes | None:
        nonce, key = os.urandom(12), AESGCM.generate_key(bit_length=256)
        wrapped = nonce + self._master.encrypt(nonce, key, str(person).encode())
        with self.store.write() as tx:
            tx.execute(f"INSERT INTO {KEYS} (person_id, wrapped) VALUES (?, ?) ON CONFLICT (person_id) DO NOTHING",
                       (str(person), wrapped))
        found, key, _ = self._load(person)  # another writer may have won the race, or erased: theirs stands
        with self._lock:
            self._cache[person] = (time.monotonic(), found, key)
        return key

    def _unwrap(self, person: UUID, wrapped: bytes) -> bytes:
        return self._master.decrypt(wrapped[:12], wrapped[12:], str(person).encode())

    @contextmanager
    def erasing(self, person: UUID, erased: Callable[[UUID], bool]) -> Iterator[None]:
        """Around the recording of a person's erasure: destroys their key once `erased(person)` says the
        erasure is in the log. The erasure is marked begun first, so that a process that dies between
        the record and the key leaves the mark, and the next start finishes it (finish_erasures)."""
        with self.store.write() as tx:
            tx.execute(f"INSERT INTO {ERASURES_BEGUN} (person_id) VALUES (?) ON CONFLICT (person_id) DO NOTHING",
                       (str(person),))
        try:
            yield
        finally:
            if erased(person):
                self._finish_erasure(person)
                try:  # and those a copy of whose key was left in the files, as a start would (not this one again)
                    self.finish_erasures(lambda other: other != person and erased(other))
                except Exception as error:  # noqa: BLE001 - this erasure is done; the next start tries again
                    logger.warning("erasures left to purge were not purged again (%s)", type(error).__name__)
            else:  # refused: nothing to finish
                self._forget_erasure(person)

    def finish_erasures(self, erased: Callable[[UUID], bool]) -> None:
        """Finishes the erasures begun and recorded whose key a process did not destroy. A mark whose
        erasure is not in the log is left alone: another process may be recording it at this moment,
        and it forgets the mark itself."""
        with self.store.read() as tx:
            begun = [UUID(row[0]) for row in tx.execute(f"SELECT person_id FROM {ERASURES_BEGUN}").fetchall()]
        for person in filter(erased, begun):
            self._finish_erasure(person)

    def _finish_erasure(self, person: UUID) -> None:
        """Destroys the key; the mark stays until no copy of it can be left in the database's files, so
        that the next start, or the next erasure, purges them again."""
        if self.destroy(person):
            self._forget_erasure(person)
        else:
            logger.warning("an erased person's key may stay in the store's files while a reader keeps it (a "
                           "transaction older than the erasure, a page held); it is purged again at the next "
                           "erasure or start")

    def _forget_erasure(self, person: UUID) -> None:
        with self.store.write() as tx:
            tx.execute(f"DELETE FROM {ERASURES_BEGUN} WHERE person_id = ?", (str(person),))

    def destroy(self, person: UUID) -> bool:
        """Destroys the person's key, and with it every value sealed with it; leaves a tombstone. False
        when a copy of the key may still be left in the database's files (ViewStore.purge). Again, it
        purges what the transaction that left the tombstone deleted."""
        with self.store.write() as tx:
            row = tx.execute(f"SELECT wrapped FROM {KEYS} WHERE person_id = ?", (str(person),)).fetchone()
            if row is None or row[0] is not None:
                tx.execute(f"INSERT INTO {KEYS} (person_id, wrapped) VALUES (?, NULL) "
                           "ON CONFLICT (person_id) DO UPDATE SET wrapped = NULL", (str(person),))
                for table in self.erased_with_the_key:
                    tx.execute(f"DELETE FROM {table} WHERE person_id = ?", (str(person),))
            deleted_by = self.store.writer_of(tx, KEYS, "person_id", str(person))
        with self._lock:
            self._cache[person] = (time.monotonic(), True, None)
        # no copy of the key, nor of the rest, in the files
        return self.store.purge(KEYS, *self.erased_with_the_key, deleted_by=deleted_by)


def person_of(state: dict[str, Any], originator_id: UUID) -> UUID:
    """Whom an event's personal values are about: its `person`, a case's client, or the client itself."""
    return state.get("person") or state.get("client_id") or originator_id


class PersonalDataMapper(Mapper):
    """Seals `personal` on the way into the store and opens it on the way out."""

    def __init__(self, transcoder: Transcoder, keys: KeyRing | None):
        super().__init__(transcoder)
        self.keys = keys

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = vars(domain_event)
        if not state.get("personal"):
            return super().to_stored_event(domain_event)
        if self.keys is None:
            raise RuntimeError("a mapper without keys cannot store personal data")
        person = person_of(state, state["originator_id"])
        sealed = object.__new__(type(domain_event))
        object.__setattr__(sealed, "__dict__", {**state, "personal": self._seal(person, state["personal"])})
        return super().to_stored_event(sealed)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event = super().to_domain_event(stored_event)
        envelope = event.__dict__.get("personal")
        if isinstance(envelope, dict) and "sealed" in envelope:
            event.__dict__["personal"] = self._open(envelope)
        elif envelope and not self._readable(event.__dict__.get("person")):
            # Values an older version stored unsealed (upcast into `personal`): read as sealed ones
            # are once their person is erased, or by a reader without keys.
            event.__dict__["personal"] = {name: None for name in envelope}
        return event

    def _readable(self, person: UUID | None) -> bool:
        return person is None or (self.keys is not None and self.keys.key_for(person) is not None)

    def _seal(self, person: UUID, values: dict[str, Any]) -> dict[str, Any]:
        key = self.keys.key_to_seal(person)
        nonce = os.urandom(12)
        plain = json.dumps(values, ensure_ascii=False).encode()
        sealed = nonce + AESGCM(key).encrypt(nonce, plain, str(person).encode())
        return {"person": str(person), "fields": sorted(values), "sealed": base64.b64encode(sealed).decode()}

    def _open(self, envelope: dict[str, Any]) -> dict[str, Any]:
        key = self.keys.key_for(UUID(envelope["person"])) if self.keys is not None else None
        if key is None:
            return {name: None for name in envelope["fields"]}
        sealed = base64.b64decode(envelope["sealed"])
        try:
            return json.loads(AESGCM(key).decrypt(sealed[:12], sealed[12:], envelope["person"].encode()))
        except InvalidTag:  # not sealed with this key: unreadable, like erased
            return {name: None for name in envelope["fields"]}
