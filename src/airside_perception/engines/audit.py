"""Append-only audit log of engine swaps and rollbacks: one JSON line per request.

``audit.jsonl`` sits beside the state file. Each line is written with one ``write`` on a
file opened for appending, then ``fsync``ed, so a crash leaves whole lines; the log rotates
by size (``audit.jsonl.1`` ... ``.N``) and never rewrites a line. Accepted and refused
requests alike are logged: time, caller, task, path, resolved version, signature key id,
result, reason, duration.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

AUDIT_FILE = "audit.jsonl"
FIELDS = ("time", "caller", "action", "task", "path", "version", "key_id", "result", "reason", "duration_ms")


class AuditLog:
    def __init__(self, path: str, max_bytes: int = 1 << 20, keep: int = 5):
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()

    def append(self, action: str, task: str, result: str, reason: str = "", caller: str = "", path: str = "",
               version: str = "", key_id: str = "", duration_ms: float = 0.0,
               extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e3) % 1000:03d}Z",
                 "caller": caller, "action": action, "task": task, "path": path, "version": version,
                 "key_id": key_id, "result": result, "reason": reason, "duration_ms": round(duration_ms, 1)}
        entry.update(extra or {})
        line = (json.dumps(entry, sort_keys=False) + "\n").encode()
        with self._lock:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._rotate_if_full(len(line))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def _rotate_if_full(self, incoming: int) -> None:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return
        if size + incoming <= self.max_bytes:
            return
        for k in range(self.keep - 1, 0, -1):
            older = f"{self.path}.{k}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{k + 1}")
        os.replace(self.path, f"{self.path}.1")
        extra = f"{self.path}.{self.keep + 1}"
        if os.path.exists(extra):
            os.remove(extra)


def read_entries(path: str) -> Iterator[Dict[str, Any]]:
    """Entries of ``path`` and its rotated files, oldest first; a torn or foreign line is skipped."""
    files = [f"{path}.{k}" for k in range(50, 0, -1) if os.path.exists(f"{path}.{k}")] + [path]
    for name in files:
        if not os.path.exists(name):
            continue
        with open(name, errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry


def table(entries: List[Dict[str, Any]], width: Optional[Dict[str, int]] = None) -> str:
    """The entries as an aligned text table, one row each."""
    cols = ("time", "caller", "action", "task", "version", "key_id", "result", "duration_ms", "reason")
    rows = [[str(e.get(c, "")) for c in cols] for e in entries]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    widths[-1] = min(widths[-1], 100)
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
