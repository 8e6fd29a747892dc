"""Who a case may be assigned to: the staff users the access tokens name, and where they may work.

A case assigned to someone who cannot see it drops out of every queue, and its liaison is still paid
for it. A user no token names yet may be assigned (their token may come later); a user whose tokens
all lie elsewhere, or belong to roles that do not work cases, may not.

Tokens are read from the log, where every process issues them: what a roster has read stays true (a
token's user, role and scope never change), so only what was logged since is read again, before a
refusal always and for a user not known yet at most once a second.
"""

import threading
import time
from typing import Any

from eventsourcing.utils import get_topic

from domain.access import AccessToken
from domain.errors import InvalidInput

WORKS_CASES = ("case_worker", "supervisor")
UNKNOWN_RECHECK = 1.0  # seconds: how stale "no token names this user" may be


class Roster:
    def __init__(self, app: Any):
        """`app`: the application whose log holds the tokens and whose org tree places their scopes."""
        self._app = app
        self._scopes: dict[str, set[tuple[str, str | None]]] = {}  # user → (role, org unit) of each token
        self._next = 1  # the log position to read issued tokens from
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def check_assignee(self, assignee: str, org_unit: str) -> None:
        """Refuses an assignee who holds tokens, none of which works cases in `org_unit`."""
        scopes = self._scopes.get(assignee)
        if scopes is None and time.monotonic() - self._read_at < UNKNOWN_RECHECK:
            return
        if scopes is not None and self._works_in(scopes, org_unit):
            return
        self._read_issued()
        scopes = self._scopes.get(assignee)
        if scopes is not None and not self._works_in(scopes, org_unit):
            raise InvalidInput("assignee", f"{assignee} holds no case worker's or supervisor's token for org unit "
                                           f"{org_unit}: they could not see the case")

    def _works_in(self, scopes: set[tuple[str, str | None]], org_unit: str) -> bool:
        tree = self._app.org_tree()
        return any(role in WORKS_CASES and tree.covers(unit, org_unit) for role, unit in scopes)

    def _read_issued(self) -> None:
        """Reads the tokens issued since the last read, up to the log's head then: each read looks only
        at the events since (a read from the last token on would walk the whole log after it). Every
        position up to the head has committed: the store's inserts commit in position order."""
        topic = get_topic(AccessToken.TokenIssued)
        with self._lock:
            started, head = time.monotonic(), self._app.recorder.max_notification_id() or 0
            while self._next <= head and (issued := self._app.recorder.select_notifications(
                    self._next, 1000, stop=head, topics=[topic])):
                for notification in issued:
                    token = self._app.mapper.to_domain_event(notification)
                    self._scopes.setdefault(token.user, set()).add((token.role, token.org_unit))
                self._next = issued[-1].id + 1
            self._next, self._read_at = head + 1, started
