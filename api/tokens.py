"""The bearer tokens this server has checked lately, so that most requests need no store read.

A token found valid is trusted for `recheck` seconds, then checked against the store again. A token
revoked with `lastmeter tokens revoke` (another process) is therefore refused within that time; one
revoked through this process's own application, at once. Unknown and revoked tokens are never
remembered: a token just issued works at once, and a guess costs a store read as before.
"""

import threading
import time

from api.access import Principal
from domain.application import LastMeter


class CheckedTokens:
    def __init__(self, app: LastMeter, recheck: float, size: int = 10_000):
        self.app, self.recheck, self.size = app, recheck, size
        self._checked: dict[str, tuple[float, int, Principal]] = {}  # secret: (until, revocations, principal)
        self._lock = threading.Lock()

    def trusted(self, secret: str) -> Principal | None:
        """The principal of a token checked less than `recheck` seconds ago, if this process has
        revoked no token since; else None (ask `check`)."""
        entry = self._checked.get(secret)
        if entry is None:
            return None
        until, revocations, principal = entry
        if time.monotonic() >= until or revocations != self.app.revocations:
            return None
        return principal

    def check(self, secret: str) -> Principal | None:
        """Asks the store (it blocks: call it from a worker thread); remembers a valid token."""
        revocations = self.app.revocations  # counted before the read: a revocation during it is not missed
        token = self.app.find_token(secret)
        with self._lock:
            self._checked.pop(secret, None)  # a revoked token is forgotten; a valid one goes to the back
            if token is None:
                return None
            principal = Principal(token.user, token.role, token.org_unit, token.provider, token.reads_personal)
            if self.recheck > 0:
                if len(self._checked) >= self.size:
                    self._checked.pop(next(iter(self._checked)))  # the longest remembered goes first
                self._checked[secret] = (time.monotonic() + self.recheck, revocations, principal)
            return principal
