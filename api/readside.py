"""The read side as the API holds it: the view store, the projector and its thread."""

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from api.backend import Backend
from domain.application import LastMeter
from projections import VIEWS
from projections.privacy import PersonalDataMapper
from projections.runner import Projector
from projections.store import ViewStore

log = logging.getLogger("lastmeter.projector")


def keyless(app: LastMeter) -> PersonalDataMapper:
    """The views' mapper: it opens no personal value (views never hold one)."""
    return PersonalDataMapper(app.construct_transcoder(), keys=None)


@contextmanager
def projector_in_this_process(env: dict[str, str]) -> Iterator[Projector]:
    """A projector of its own, for another process to run (a rebuild's fold)."""
    app = LastMeter(env=env)
    try:
        store = ViewStore(env)
        try:
            yield Projector(app, store, VIEWS, mapper=keyless(app))
        finally:
            store.close()
    finally:
        app.close()


class ReadSide:
    def __init__(self, backend: Backend):
        self.store = backend.views
        app = backend.lastmeter
        self.projector = Projector(app, self.store, VIEWS, mapper=keyless(app),
                                   elsewhere=partial(projector_in_this_process, dict(app.env)))
        with self.store.setup_lock():
            self.projector.setup()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Follows the log in a background thread."""
        self._thread = threading.Thread(target=self._follow, name="projector", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.projector.run(self._stop)
            except Exception as error:  # keep following; the failed batch was rolled back
                log.error("projector batch failed: %s; retrying", type(error).__name__)
                self._stop.wait(1.0)

    @property
    def following(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
