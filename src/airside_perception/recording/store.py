"""The recordings directory: bag files, their index, the disk quota.

Layout (``recordings_dir``): ``<UTC time>_<triggers>.bag`` per recorded event, written as
``.bag.active`` and renamed when closed (a kill loses at most the open one; the next start
removes it and says so), and ``index.jsonl``, one JSON object per closed recording::

    {"stamp": 1700000012.3, "triggers": ["low_confidence"], "file": "....bag", "versions": {...},
     "trust": {...}, "start": ..., "end": ..., "clouds": 11, "bytes": 24000000, "note": ""}

The quota: before a recording is written, the oldest closed recordings are removed until the
directory plus the new one fits ``max_bytes``; a recording larger than the quota, or one the
disk has no room for (``min_free_bytes`` kept free), is not written and is counted. The index
is rewritten (write, then rename) when recordings are removed, so it names only files that exist.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import time
from typing import Any, Dict, List, Optional

from airside_perception.errors import ConfigError

LOG = logging.getLogger(__name__)
INDEX = "index.jsonl"
ACTIVE = ".active"


class RecordingsDir:
    def __init__(self, path: str, max_bytes: float, min_free_bytes: float = 1e9):
        if not max_bytes > 0:
            raise ConfigError(f"record_max_bytes {max_bytes} must be positive")
        self.path = os.path.abspath(os.path.expanduser(path))
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"recordings_dir {self.path} cannot be created ({exc}): give a writable directory") \
                from None
        if not os.access(self.path, os.W_OK):
            raise ConfigError(f"recordings_dir {self.path} is not writable: give a writable directory")
        self.max_bytes = int(max_bytes)
        self.min_free_bytes = int(min_free_bytes)
        self.evicted = 0
        self.refused = 0  # recordings not written: larger than the quota or no room on the disk
        self.max_bytes_seen = 0

    @property
    def index_path(self) -> str:
        return os.path.join(self.path, INDEX)

    def remove_unfinished(self) -> List[str]:
        """Removes recordings left open by a process that died while writing them."""
        removed = []
        for path in sorted(glob.glob(os.path.join(self.path, f"*.bag{ACTIVE}"))):
            try:
                os.remove(path)
                removed.append(os.path.basename(path))
            except OSError as exc:
                LOG.warning("cannot remove the unfinished recording %s: %s", path, exc)
        return removed

    def entries(self) -> List[Dict[str, Any]]:
        return read_index(self.index_path)

    def used_bytes(self) -> int:
        total = 0
        for name in os.listdir(self.path):
            try:
                total += os.path.getsize(os.path.join(self.path, name))
            except OSError:
                pass
        self.max_bytes_seen = max(self.max_bytes_seen, total)
        return total

    def new_path(self, stamp_s: float, triggers: List[str]) -> str:
        """The open file for a recording (``.bag.active``); :meth:`close` renames it."""
        name = time.strftime("%Y%m%d-%H%M%S", time.gmtime(stamp_s)) + f"-{int(stamp_s * 1e3) % 1000:03d}"
        name += "_" + "+".join(triggers or ["none"])
        path = os.path.join(self.path, name + ".bag")
        k = 1
        while os.path.exists(path) or os.path.exists(path + ACTIVE):
            path = os.path.join(self.path, f"{name}_{k}.bag")
            k += 1
        return path + ACTIVE

    def reserve(self, expected_bytes: int) -> bool:
        """Makes room for a recording of ``expected_bytes``: removes the oldest recordings until it
        fits the quota. False (and counted) when it cannot fit the quota or the disk."""
        if expected_bytes > self.max_bytes:
            self.refused += 1
            return False
        entries = self.entries()
        removed = []
        indexed = {e["file"] for e in entries}
        # bags the index does not name (a write cut between its rename and its index line) go first
        strays = sorted((p for p in glob.glob(os.path.join(self.path, "*.bag"))
                         if os.path.basename(p) not in indexed), key=os.path.getmtime)
        for path in strays:
            if self.used_bytes() + expected_bytes <= self.max_bytes:
                break
            os.remove(path)
            removed.append(os.path.basename(path))
        while entries and self.used_bytes() + expected_bytes > self.max_bytes:
            oldest = entries.pop(0)
            path = os.path.join(self.path, oldest["file"])
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            removed.append(oldest["file"])
        if removed:
            self.evicted += len(removed)
            self._write_index(entries)
            LOG.info("quota: removed the %d oldest recordings (%s)", len(removed), ", ".join(removed))
        if self.used_bytes() + expected_bytes > self.max_bytes:
            self.refused += 1
            return False
        if shutil.disk_usage(self.path).free - expected_bytes < self.min_free_bytes:
            self.refused += 1
            return False
        return True

    def discard(self, active_path: str) -> None:
        """Removes a recording whose write failed."""
        try:
            os.remove(active_path)
        except FileNotFoundError:
            pass

    def close(self, active_path: str, entry: Dict[str, Any]) -> Dict[str, Any]:
        """Syncs the finished recording to the disk, renames it and adds it to the index (a power
        cut leaves either no entry or an entry naming a whole file)."""
        final = active_path[: -len(ACTIVE)]
        with open(active_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(active_path, final)
        _sync_dir(self.path)
        entry = {**entry, "file": os.path.basename(final), "bytes": os.path.getsize(final)}
        with open(self.index_path, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.used_bytes()
        return entry

    def _write_index(self, entries: List[Dict[str, Any]]) -> None:
        tmp = self.index_path + ".tmp"
        with open(tmp, "w") as fh:
            for e in entries:
                fh.write(json.dumps(e, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.index_path)


def read_index(path: str, strict: bool = False) -> List[Dict[str, Any]]:
    """The entries of an ``index.jsonl``; a line that is not a JSON object is skipped (a write cut
    short) unless ``strict``, which raises ``ValueError`` naming the line."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict) or "file" not in entry:
                    raise ValueError("not an object with a 'file'")
            except ValueError as exc:
                if strict:
                    raise ValueError(f"{path} line {number}: {exc}") from None
                continue
            out.append(entry)
    return out


def _sync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def free_bytes(path: str) -> Optional[int]:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
