"""Service sessions: one Tracker per client stream, bounded in number and idle time.

A client that sends `session_id` with each frame of a stream gets tracking: its frames are localized
around the previous pose (no global describer, no search) while tracking holds, and through global
retrieval when lost (`retrieval_path` in the answer); a frame with a `prior` and nothing to track from
is localized near the prior first ("prior"). Sessions are kept in a least-recently-used
table of at most `max_sessions`; one idle for `idle_s` is forgotten; frames of one session are
localized one at a time (the Tracker serialises them), frames of different sessions in parallel.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..localization import Localizer
    from ..localization.tracking import Tracker


class SessionTable:
    """session id -> Tracker, at most `max_sessions`, each forgotten after `idle_s` without a frame."""

    def __init__(self, localizer: "Localizer", max_sessions: int = 256, idle_s: float = 300.0) -> None:
        self.localizer = localizer
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self._trackers: OrderedDict[str, tuple[Tracker, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._trackers)

    def tracker(self, session_id: str) -> "Tracker":
        """The session's Tracker (a new one for a new or expired session); evicts the oldest when full."""
        from ..localization.tracking import Tracker

        now = time.monotonic()
        with self._lock:
            while self._trackers:  # expire from the least recently used end
                oldest, (_, seen) = next(iter(self._trackers.items()))
                if now - seen <= self.idle_s:
                    break
                del self._trackers[oldest]
            entry = self._trackers.pop(session_id, None)
            tracker = entry[0] if entry is not None else Tracker(self.localizer)
            self._trackers[session_id] = (tracker, now)
            while len(self._trackers) > self.max_sessions:
                self._trackers.popitem(last=False)
            return tracker
