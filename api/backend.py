"""Everything the API and the command line open on the store, opened and closed in one place."""

import base64
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from api.lockedinsert import insert_for
from api.settings import Settings
from domain.application import LastMeter
from projections.identities import IdentityIndex
from projections.privacy import KeyRing, PersonalDataMapper
from projections.store import ViewStore


logger = logging.getLogger("lastmeter.store")


@dataclass
class Backend:
    lastmeter: LastMeter
    views: ViewStore
    keys: KeyRing

    def close(self) -> None:
        self.lastmeter.close()
        self.views.close()


def open_backend(settings: Settings) -> Backend:
    """The application on the configured store, sealing personal data, with the built-in org tree."""
    env = settings.eventsourcing_env()
    if not settings.is_postgres:
        owner_only(Path(env["SQLITE_DBNAME"]))
    views = ViewStore(env)
    lastmeter = None
    try:
        keys = KeyRing(views, master_key(settings))  # a key that is no key closes the views' pool too
        with views.setup_lock():  # the library's tables, ours and the org tree, once, whoever starts first
            keys.setup()
            identities = IdentityIndex(keys)
            lastmeter = LastMeter(env=env, mapper_factory=lambda transcoder: PersonalDataMapper(transcoder, keys),
                                  erased=keys.erased, identities=identities,
                                  insert_for=insert_for)
            lastmeter.found()
            identities.setup(lastmeter)
            # Under a name of its own: the pass run under the earlier name marked one statement per
            # contract version, and stores that ran it would never run it again.
            views.once("statements issued before 2026-11-30 marked, each of them", lastmeter.mark_unmarked_statements)
        keys.finish_erasures(lambda person: lastmeter.get_client(person).erased)
    except BaseException:
        if lastmeter is not None:  # its group-commit writer and connections too
            lastmeter.close()
        views.close()
        raise
    return Backend(lastmeter, views, keys)


def owner_only(store: Path) -> None:
    """Makes a new SQLite store readable by its owner alone, as its key file is: SQLite gives the
    store's -wal and -shm files the mode of the store, which would otherwise follow the umask
    (0644: every local user could read the case facts, the audit trail and the wrapped keys). An
    older store others may read is left as it is, and said so."""
    if str(store) == ":memory:" or str(store).startswith("file:"):
        return
    try:
        os.close(os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if store.stat().st_mode & 0o077:
            logger.warning("the store %s can be read by other users of this machine: chmod 600 it, "
                           "and its -wal and -shm files", store)


def master_key(settings: Settings) -> bytes:
    """LASTMETER_MASTER_KEY (base64), else the key file, made once with owner-only access."""
    if settings.master_key:
        return base64.b64decode(settings.master_key)
    path = Path(settings.master_key_file or default_key_file(settings))
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_text())
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode())
    return base64.b64decode(path.read_text())


def default_key_file(settings: Settings) -> str:
    return str(settings.beside_store(".key", "lastmeter.key"))
