"""The read side as the API holds it: the view store, the projector, and where the projector runs.

On PostgreSQL `serve` runs the projector in a process of its own: in a thread it shared the API's
interpreter lock, and every one of its round trips to the store waited behind request handling
(measured under load: a save took p50 133 ms to reach the views in a thread, 6 to 13 ms in a
process). Each insert notifies the projector, wherever it runs, which otherwise polls. On SQLite,
which has one writer at a time, it stays a thread, woken by this process's own commits.
"""

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from types import SimpleNamespace
from typing import Any

from api.backend import Backend
from api.logs import WITHOUT_MESSAGES
from domain.application import LastMeter
from api.lockedinsert import channel
from projections import VIEWS
from projections.privacy import PersonalDataMapper
from projections.runner import Projector, Stop, UntilOrphaned
from projections.store import ViewStore

log = logging.getLogger("lastmeter.projector")
log.addFilter(WITHOUT_MESSAGES)
RETRY_AFTER_FAILURE = 1.0
# After a round that applied events the projector waits this long, so that under a stream of commands
# a round takes tens of events in one transaction per view instead of one or two. The HTTP bench: the
# server and projector used 5% less CPU and answered 3-4% more requests; save-to-visible p99 rose
# from about 90 to 115 ms (target 250). Idle, the first event is still applied as soon as it lands.
SETTLE = 0.03
# Caught up, the projector looks at the log again after this long at the latest, by store (postgres?).
# On PostgreSQL every insert, whoever made it, wakes it at once, so the look is only a safety net and
# can be rare: every 50 ms it kept an idle server's projector and its backend at 4% of a core. On
# SQLite another process's commits are seen only when it looks.
IDLE_POLL = {True: 1.0, False: 0.05}
STOP_CHECK = 0.1  # seconds: how soon a projector waiting on PostgreSQL's notifications sees its stop
WATCH = 1.0  # seconds: how soon a projector process that died (killed, out of memory) is started again
STEADY, LONGEST_PAUSE = 60.0, 60.0  # a process that lived this long died by chance; the most to wait before another
PROCESS_POOL = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "0"}  # it reads, then writes: few connections


def views_mapper(app: LastMeter) -> PersonalDataMapper:
    """The views' mapper: it opens no personal value (views never hold one), reading each as None."""
    return PersonalDataMapper(app.construct_transcoder(), keys=None)


@contextmanager
def projector_in_this_process(env: dict[str, str]) -> Iterator[Projector]:
    """A projector of its own, for another process to run (the live views, a rebuild's fold), on a store
    already opened: its application only reads the log, and makes none of the library's tables and
    functions, which another process starting at that moment may be making (PostgreSQL refused the
    second with "tuple concurrently updated", and that process failed to start)."""
    app = LastMeter(env={**env, "CREATE_TABLE": "n"})
    try:
        store = ViewStore(env)
        try:
            yield Projector(app, store, VIEWS, mapper=views_mapper(app))
        finally:
            store.close()
    finally:
        app.close()


@contextmanager
def waking(projector: Projector, stop: Stop | None = None) -> Iterator[Callable[[float], Any]]:
    """A wait that new events end early: on PostgreSQL each insert's notification, whoever inserted
    (and `stop`, seen within STOP_CHECK); on SQLite, which has none, this process's own commits
    (another process's are seen at the poll)."""
    if projector.store.postgres:
        with projector.store.notified(channel(projector.app.recorder)) as notified:
            def wake(timeout: float) -> bool:
                deadline = time.monotonic() + timeout
                while not notified(max(0.0, min(deadline - time.monotonic(), STOP_CHECK))):
                    if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                        return False
                return True

            yield wake
        return
    stored = projector.app.events_stored

    def wake(timeout: float) -> bool:
        woken = stored.wait(timeout)
        stored.clear()  # before the next round reads the log: a commit after this wakes the next wait
        return woken

    yield wake


def follow(opening: Callable[[], AbstractContextManager[Projector]], stop: Stop, counts: Any, failing: Any) -> None:
    """Keeps the views at the head of the log until `stop` is set, once it leads the projectors of the
    store (ViewStore.leading: until then another keeps them there). Whatever fails (a batch, which was
    rolled back; the store restarting) is opened afresh after a pause. `counts`: an array shared with
    another process (or None), which gets the events applied to each view added up; `failing`: a value,
    which gets how many times in a row the projector has failed (0 after a round that did not, or once
    it stands by, the store answering that another leads: failures before are over)."""

    def standing_by() -> None:
        failing.value = 0

    while not stop.is_set():
        try:
            with opening() as projector, projector.store.leading(stop, standing_by) as leads, \
                    waking(projector, stop) as wake:
                if leads:  # else stopped while another projector led
                    projector.run(stop, poll=IDLE_POLL[projector.store.postgres],
                                  after_each=_sharing(projector, counts, failing), wake=wake, settle=SETTLE)
        except Exception as error:  # its traceback, without messages, which may carry values
            log.error("projector failed: %s; starting afresh", type(error).__name__, exc_info=error)
            failing.value += 1
            stop.wait(RETRY_AFTER_FAILURE)


def _sharing(projector: Projector, counts: Any, failing: Any) -> Callable[[], None]:
    before = counts[:] if counts is not None else None  # the counts go on from those of an earlier start

    def share() -> None:
        failing.value = 0
        if before is not None:
            counts[:] = [done + projector.processed[name] for done, name in zip(before, projector.views)]

    return share


def follow_in_a_process(env: dict[str, str], stop: Stop, processed, failing, parent: int) -> None:
    """The projector process: follows the log, and shares its counts of events applied per view."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops it
    logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(name)s: %(message)s")
    follow(partial(projector_in_this_process, env), UntilOrphaned(stop, parent), processed, failing)


class SharedStop:
    """The stop signal of a projector process: a flag in shared memory, without a lock. A
    multiprocessing.Event's condition is left broken by a process killed while it waits on it (kill
    -9), and setting it then hung the server's shutdown for good."""

    def __init__(self, context: Any):
        self._flag = context.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = STOP_CHECK if deadline is None else min(STOP_CHECK, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True


class ReadSide:
    def __init__(self, backend: Backend, in_a_process: bool = False):
        """`in_a_process`: on PostgreSQL, `start` runs the projector in a process of its own."""
        self.store = backend.views
        app = backend.lastmeter
        self.env = dict(app.env)
        self.projector = Projector(app, self.store, VIEWS, mapper=views_mapper(app),
                                   elsewhere=partial(projector_in_this_process, self.env))
        with self.store.setup_lock():
            self.projector.setup()
        self.in_a_process = in_a_process and self.store.postgres
        self._stop: Stop = threading.Event()
        self._runner: threading.Thread | multiprocessing.Process | None = None
        self._processed = None
        self._failing: Any = SimpleNamespace(value=0)  # shared with a projector process once there is one
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        """Follows the log in the background: in a thread, or in a process of its own, watched."""
        if self.in_a_process:
            spawn = multiprocessing.get_context("spawn")  # forking a process with threads is unsafe
            self._stop, self._processed = SharedStop(spawn), spawn.Array("q", len(self.projector.views))
            self._failing = spawn.Value("i", 0)
            self._runner = self._projector_process()
            self._watchdog = threading.Thread(target=self._watch, name="projector-watchdog", daemon=True)
            self._watchdog.start()
        else:
            self._runner = threading.Thread(target=follow, name="projector", daemon=True,
                                            args=(lambda: nullcontext(self.projector), self._stop, None, self._failing))
            self._runner.start()

    def _projector_process(self) -> multiprocessing.process.BaseProcess:
        """A projector process, started, sharing this side's stop, counts and failures."""
        spawn = multiprocessing.get_context("spawn")
        process = spawn.Process(target=follow_in_a_process, name="lastmeter-projector", daemon=True,
                                args=({**self.env, **PROCESS_POOL}, self._stop, self._processed, self._failing,
                                      os.getpid()))
        process.start()
        return process

    def _watch(self) -> None:
        """Starts the projector process again when it dies without being stopped (killed, out of
        memory, a crash in a driver): the views would otherwise stand still until the server was
        restarted. A death counts as a failure, so readiness tells a process that keeps dying; one
        that dies soon after each start (the same batch too big for memory, say) is started again
        after twice as long each time, up to a minute, not every second."""
        pause, started = WATCH, time.monotonic()
        while not self._stop.wait(WATCH):
            runner = self._runner
            if runner is None or runner.is_alive():
                continue
            log.error("the projector process ended (exit code %s); starting another", runner.exitcode)
            self._failing.value += 1
            pause = WATCH if time.monotonic() - started >= STEADY else min(2 * pause, LONGEST_PAUSE)
            if self._stop.wait(pause - WATCH):
                return
            # The one it replaces is not closed: `following` may be asking it whether it is alive.
            self._runner, started = self._projector_process(), time.monotonic()

    @property
    def following(self) -> bool:
        runner = self._runner  # read once: the watchdog and close() replace it
        try:
            return runner is not None and runner.is_alive()
        except ValueError:  # closed by close() meanwhile: stopped
            return False

    @property
    def failing(self) -> int:
        """How many times in a row the projector has failed (and started afresh); 0 once a round succeeds."""
        return self._failing.value

    def wait_for(self, position: int, timeout: float) -> bool:
        """Waits until every view has reached `position`; False on timeout. A projector thread wakes
        the wait when it catches up; a projector process is watched by polling its positions."""
        return self.projector.wait_for(position, timeout, poll=0.01 if self.in_a_process else 0.05)

    def processed(self) -> dict[str, int]:
        """Events applied to each view by this server's projector, wherever it runs."""
        if self._processed is None:
            return dict(self.projector.processed)
        return dict(zip(self.projector.views, self._processed[:]))

    def close(self) -> None:
        self._stop.set()
        if self._watchdog is not None:  # first: it starts no process once it has seen the stop
            self._watchdog.join()
            self._watchdog = None
        if self._runner is not None:
            self._runner.join(timeout=10)
            if isinstance(self._runner, multiprocessing.process.BaseProcess):
                if self._runner.is_alive():
                    self._runner.terminate()
                    self._runner.join()
                self._runner.close()
                self._runner = None  # closed: it can no longer say whether it is alive
                # What it shared dies with it, freed now with their semaphores (at exit the resource
                # tracker would warn of them as leaked); its last counts are kept as a plain list.
                self._stop, self._processed = threading.Event(), self._processed[:]
                self._failing = SimpleNamespace(value=self._failing.value)
                self._stop.set()
