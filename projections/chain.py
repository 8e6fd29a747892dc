"""Tamper evidence: a hash chain over every event as stored.

Each link's hash covers the previous link and the event as it is stored
(position, aggregate, version, topic and the stored bytes, ciphertext
included), so altering, deleting, inserting or reordering a stored event
breaks every link from there on. The chain is kept like a view, in the same
transaction as its position; verifying recomputes it from the events table.
A digest (position, head hash, time) kept outside the system proves that
nothing up to its position changed since, even if the chain itself were
rewritten.
"""

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from projections.eventlog import unchained
from projections.store import Tx, ViewStore
from projections.view import Table, View

GENESIS = hashlib.sha256(b"lastmeter").hexdigest()


def link(previous: str, position: int, stored: Any) -> str:
    digest = hashlib.sha256(previous.encode())
    digest.update(f"|{position}|{stored.originator_id}|{stored.originator_version}|{stored.topic}|".encode())
    state = stored.state  # bytes as the library writes it; text where a row was edited as text (SQLite)
    digest.update(state.encode("utf-8", "surrogatepass") if isinstance(state, str) else bytes(state))
    return digest.hexdigest()


class ChainBroken(Exception):
    """A rebuilt chain disagrees with the links it would replace: the log changed under them."""

    def __init__(self, position: int):
        super().__init__(f"the log no longer matches the chain from position {position}: the chain was not "
                         "rebuilt, so that `lastmeter audit verify` can still name what changed")
        self.position = position


class ChainView(View):
    name = "chain"
    stored = True
    tables = (Table("chain_links", "position BIGINT PRIMARY KEY, hash TEXT NOT NULL"),)

    def check_against(self, tx: Tx, live: View) -> None:
        """A rebuild recomputes every link from the log: over an altered log it would replace the
        evidence of the change with a chain that agrees with it. Every link the live chain holds
        must come out the same."""
        row = tx.execute(f"SELECT MIN(live.position) FROM {live.table('chain_links')} live "
                         f"LEFT JOIN {self.table('chain_links')} fresh ON fresh.position = live.position "
                         "WHERE fresh.hash IS NULL OR fresh.hash <> live.hash").fetchone()
        if row[0] is not None:
            raise ChainBroken(row[0])

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        row = tx.execute(f"SELECT hash FROM {self.table('chain_links')} ORDER BY position DESC LIMIT 1").fetchone()
        previous, links = row[0] if row else GENESIS, []
        for position, stored in events:
            previous = link(previous, position, stored)
            links.append((position, previous))
        tx.insert(self.table("chain_links"), ("position", "hash"), links)


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    head: str | None
    first_bad_position: int | None


def verify(recorder: Any, store: ViewStore, upto: int | None = None, expected_head: str | None = None,
           batch: int = 5000) -> Verification:
    """Recomputes the chain from the stored events and compares it with the links (and a digest's head).

    Every event up to the last link, or up to the position the chain has recorded if that is further,
    must have its link, and every link its event: deleting links (to hide an altered event) is itself
    caught, and so is lowering the recorded position (to hide the links after it). A recorded position
    beyond the last link means links and events were cut off the end. With a digest, every event up
    to its position is recomputed whatever the links say; a log that now ends short of that position
    is named from where it ends. A stored event no link can cover, but the application would read
    (eventlog.unchained), fails it too.
    """
    recorded = last_link = 0
    if upto is None:
        recorded = chained_position(store)  # first: a link is never behind a position read before it
        last_link = (head(store) or (0, ""))[0]
    covered = max(recorded, last_link) if upto is None else upto
    previous, checked, last = GENESIS, 0, 0
    stray = unchained(recorder, covered)
    if stray is not None:
        return Verification(False, checked, None, stray)
    events, links = _events(recorder, batch, covered), _links(store, batch, covered)
    event, chained = next(events, None), next(links, None)
    while chained is not None or event is not None:
        if event is None or chained is None or event.id != chained[0]:  # a row or a link is missing
            bad = min(p for p in (event and event.id, chained and chained[0]) if p is not None)
            return Verification(False, checked, previous, bad)
        previous = link(previous, event.id, event)
        if chained[1] != previous:
            return Verification(False, checked, previous, event.id)
        checked, last = checked + 1, event.id
        event, chained = next(events, None), next(links, None)
    if expected_head is not None and previous != expected_head:
        # the digest's position held an event: short of it, the log lost its end; else the chain was redone
        return Verification(False, checked, previous, last + 1 if upto is not None and last < upto else upto)
    if recorded > last_link:  # the chain had linked positions whose links and events are gone
        return Verification(False, checked, previous, last_link + 1)
    return Verification(True, checked, None if checked == 0 else previous, None)


def chained_position(store: ViewStore) -> int:
    """The position up to which the chain has linked every event (its tracking position)."""
    with store.read() as tx:
        row = tx.execute("SELECT position FROM projection_positions WHERE name = 'chain'").fetchone()
    return row[0] if row else 0


def _events(recorder: Any, batch: int, upto: int | None) -> Iterator[Any]:
    start = 1
    while upto and (notifications := recorder.select_notifications(start, batch, stop=upto)):
        yield from notifications
        start = notifications[-1].id + 1


def _links(store: ViewStore, batch: int, upto: int | None) -> Iterator[tuple[int, str]]:
    after, limit = 0, upto if upto is not None else 2**62
    while True:
        with store.read() as tx:
            rows = tx.execute("SELECT position, hash FROM view_chain_links WHERE position > ? AND position <= ? "
                              "ORDER BY position LIMIT ?", (after, limit, batch)).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


def head(store: ViewStore) -> tuple[int, str] | None:
    """The last link: the position the chain covers and its hash."""
    with store.read() as tx:
        row = tx.execute("SELECT position, hash FROM view_chain_links ORDER BY position DESC LIMIT 1").fetchone()
    return None if row is None else (row[0], row[1])
