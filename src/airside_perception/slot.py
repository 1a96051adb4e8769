"""Latest-only hand-over between a subscriber callback and a worker thread.

A new item replaces one the worker has not taken yet; the replaced item is counted as dropped.
The callback never blocks, and the worker never processes a stale frame.
"""

from __future__ import annotations

import threading
from typing import Any, Optional


class LatestSlot:
    def __init__(self):
        self._item: Any = None
        self._has_item = False
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.received = 0

    def put(self, item: Any) -> bool:
        """Stores ``item``; True when it replaced an item nobody took (a dropped frame)."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._item, self._has_item = item, True
            self.received += 1
            self._cond.notify()
            return replaced

    def take(self, timeout_s: Optional[float] = None) -> Any:
        """The newest item, waiting up to ``timeout_s``; None on time-out or after ``close``."""
        with self._cond:
            if not self._has_item and not self._closed:
                self._cond.wait(timeout_s)
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
