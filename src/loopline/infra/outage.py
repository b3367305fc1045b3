"""A dependency's outage, told once when it starts and once when it ends.

A database that goes down under load fails every request; a traceback per request (the
service once wrote 56 MB of them in 20 s) buries the one line an operator needs. `Outage`
keeps the state instead: the first failure is logged as one line with its reason, the
ones after it only counted, and the recovery is logged with how long it lasted and how
many requests it refused.
"""

from __future__ import annotations

import logging
import threading
import time

REASON_CHARS = 300


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, short enough for a log line or an HTTP answer."""
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"[:REASON_CHARS]


class Outage:
    """Whether `name` is failing now, and since when (thread-safe)."""

    def __init__(self, name: str, logger: logging.Logger) -> None:
        self.name = name
        self.logger = logger
        self.since: float | None = None  # time.monotonic() of the first failure
        self.reason = ""
        self.refused = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        """True from the first failure until the next success."""
        return self.since is not None

    def failed(self, error: BaseException, requests: int = 1) -> str:
        """Count a failure that refused `requests`; the reason in one line."""
        reason = one_line(error)
        with self._lock:
            if self.since is None:
                self.since, self.reason = time.monotonic(), reason
                self.logger.error("%s is down: %s (logged once until it recovers)",
                                  self.name, reason)  # fmt: skip
            self.refused += requests
        return reason

    def succeeded(self) -> None:
        """The dependency answered: end the outage, if there was one."""
        with self._lock:
            if self.since is None:
                return
            lasted, refused = time.monotonic() - self.since, self.refused
            self.since, self.reason, self.refused = None, "", 0
        self.logger.warning("%s recovered after %.1f s (%d requests refused meanwhile)",
                            self.name, lasted, refused)  # fmt: skip
