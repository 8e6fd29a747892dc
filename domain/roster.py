"""Who a case may be assigned to: the staff users the access tokens name, and where they may work.

A case assigned to someone who cannot see it drops out of every queue, and its liaison is still paid
for it. A user no token names yet may be assigned (their token may come later); a user named by
tokens may not unless one still in force works cases where the case lies (not one, once all are
revoked).

Tokens are read from the log, where every process issues and revokes them: what a roster has read
stays true but for revocations, which it reads too, so only what was logged since is read again, at
most once a second, and always before a refusal.
"""

import threading
import time
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.access import AccessToken
from domain.actor import WORKS_CASES
from domain.errors import InvalidInput

RECHECK = 1.0  # seconds: how stale an acceptance may be


class Roster:
    def __init__(self, app: Any):
        """`app`: the application whose log holds the tokens and whose org tree places their scopes."""
        self._app = app
        self._tokens: dict[str, tuple[tuple[UUID, str, str | None], ...]] = {}  # user → (token, role, unit)...
        self._revoked: set[UUID] = set()
        self._next = 1  # the log position to read from
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def check_assignee(self, assignee: str, org_unit: str) -> None:
        """Refuses an assignee who holds tokens, none in force of which works cases in `org_unit`."""
        asked = time.monotonic()
        if asked - self._read_at >= RECHECK:
            self._read_logged(since=asked - RECHECK)
        if self._may_work(assignee, org_unit):
            return
        self._read_logged(since=asked)  # a token issued before this request may let them
        if not self._may_work(assignee, org_unit):
            raise InvalidInput("assignee", f"{assignee} holds no case worker's or supervisor's token for org "
                                           f"unit {org_unit}: they could not see the case")

    def _may_work(self, assignee: str, org_unit: str) -> bool:
        tokens = self._tokens.get(assignee)  # a tuple, replaced whole: never changed while it is read
        if tokens is None:
            return True
        tree = self._app.org_tree()
        return any(role in WORKS_CASES and token not in self._revoked and tree.covers(unit, org_unit)
                   for token, role, unit in tokens)

    def _read_logged(self, since: float) -> None:
        """Reads the tokens issued and revoked since the last read, up to the log's head then: each read
        looks only at the events since. Every position up to the head has committed: the store's
        inserts commit in position order. Unless a read begun at `since` or later has been done (by
        another thread, while this one waited): it saw all this one would."""
        topics = [get_topic(AccessToken.TokenIssued), get_topic(AccessToken.TokenRevoked)]
        with self._lock:
            if self._read_at >= since:
                return
            started, head = time.monotonic(), self._app.recorder.max_notification_id() or 0
            while self._next <= head and (logged := self._app.recorder.select_notifications(
                    self._next, 1000, stop=head, topics=topics)):
                for notification in logged:
                    event = self._app.mapper.to_domain_event(notification)
                    if isinstance(event, AccessToken.TokenRevoked):
                        self._revoked.add(event.originator_id)
                    else:
                        token = (event.originator_id, event.role, event.org_unit)
                        self._tokens[event.user] = (*self._tokens.get(event.user, ()), token)
                self._next = logged[-1].id + 1
            self._next, self._read_at = head + 1, started
