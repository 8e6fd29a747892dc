"""The application's repository and mapper: the library's, with what lastmeter needs of them."""

import threading
from collections.abc import Callable
from copy import deepcopy
from typing import Any

from eventsourcing.application import LRUCache, Repository
from eventsourcing.persistence import Mapper


class PlaintextRefusingMapper(Mapper):
    """The mapper of an application given none that seals personal data (`mapper_factory`): it
    refuses to store a personal value rather than store it in plaintext."""

    def to_stored_event(self, domain_event: Any) -> Any:
        if vars(domain_event).get("personal"):
            raise RuntimeError("personal data is stored only sealed: give LastMeter a mapper_factory")
        return super().to_stored_event(domain_event)


def fold(aggregate: Any, events: Any) -> Any:
    """The library's fold of events into an aggregate, without its per-event runtime protocol check
    (an isinstance against a Protocol, a third of the time of reading a long case)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class LockingRepository(Repository):
    """The library's repository, with a cached aggregate fast-forwarded and copied under one lock.

    eventsourcing 9.5 fast-forwards the shared cached object under a lock but copies it after
    releasing that lock, so another thread can change it mid-copy. Reads of one aggregate (and of
    those sharing its stripe) take turns here; a read never calls another read, so none deadlocks.
    """

    stripes: list[threading.Lock]

    @classmethod
    def adopt(cls, repository: Repository) -> "LockingRepository":
        """The repository the library constructed for the application, made a locking one."""
        repository.__class__ = cls
        repository.stripes = [threading.Lock() for _ in range(64)]
        return repository

    def get(self, aggregate_id: Any, *, version: int | None = None, **options: Any) -> Any:
        if version is not None or not self.cache:
            return super().get(aggregate_id, version=version, **options)
        with self._stripe(aggregate_id):
            return super().get(aggregate_id, **options)

    def replace(self, aggregate: Any) -> Any:
        """Caches `aggregate` in place of what was cached for its id; a copy of it to act on."""
        if not self.cache:
            return aggregate
        with self._stripe(aggregate.id):
            self.cache.put(aggregate.id, aggregate)
            return deepcopy(aggregate)

    def cached(self, aggregate_id: Any) -> Any | None:
        """A copy of the cached aggregate as it stands, without asking the store for newer events;
        None if it is not cached."""
        if not self.cache:
            return None
        with self._stripe(aggregate_id):
            try:
                return deepcopy(self.cache.get(aggregate_id))
            except KeyError:
                return None

    def evict(self, holds: Callable[[Any], bool]) -> None:
        """Drops every cached aggregate `holds` picks: it is read afresh from the store when next asked for."""
        if not self.cache:
            return
        if isinstance(self.cache, LRUCache):  # its entries are links of its queue
            with self.cache.lock:
                picked = [key for key, link in self.cache.cache.items() if holds(link[LRUCache.RESULT])]
        else:  # unbounded (the library's AGGREGATE_CACHE_MAXSIZE below 0, from the environment)
            picked = [key for key, aggregate in list(self.cache.cache.items()) if holds(aggregate)]
        for key in picked:
            with self._stripe(key):
                try:
                    self.cache.get(key, evict=True)
                except KeyError:  # evicted meanwhile
                    pass

    def saved(self, aggregate: Any) -> None:
        """Moves a cached aggregate on to the state just saved, if that is newer than the cached one."""
        if not self.cache:
            return
        with self._stripe(aggregate.id):
            try:
                cached = self.cache.get(aggregate.id)
            except KeyError:
                return
            if cached.version < aggregate.version:
                self.cache.put(aggregate.id, deepcopy(aggregate))

    def _stripe(self, aggregate_id: Any) -> threading.Lock:
        return self.stripes[hash(aggregate_id) % len(self.stripes)]

