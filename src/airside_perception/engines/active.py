"""The active version of every task, persisted so that a restart comes back with it.

Written atomically: a temporary file beside the target, flushed and fsynced, then renamed
over it (and the directory fsynced), so a power cut leaves either the old or the new file.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Dict, Mapping

import yaml

LOG = logging.getLogger(__name__)


class ActiveVersions:
    """``state_file`` holds ``{task: version}``; ``defaults`` serve where it is missing or corrupt."""

    def __init__(self, state_file: str, defaults: Mapping[str, str]):
        self.state_file = state_file
        self.defaults = {str(k): str(v) for k, v in defaults.items()}
        self._lock = threading.Lock()
        self.versions: Dict[str, str] = dict(self.defaults)
        self.warning = ""
        self._load()

    def _load(self) -> None:
        if not os.path.exists(self.state_file):
            self.warning = f"state file {self.state_file} not found: using configured versions"
            LOG.info(self.warning)
            return
        try:
            with open(self.state_file) as fh:
                data = yaml.safe_load(fh)
            if not isinstance(data, dict) or not all(isinstance(v, (str, int, float)) for v in data.values()):
                raise ValueError("not a mapping of task to version")
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self.warning = f"state file {self.state_file} is unreadable ({exc}): using configured versions"
            LOG.warning(self.warning)
            return
        self.versions.update({str(k): str(v) for k, v in data.items()})

    def version(self, task: str) -> str:
        with self._lock:
            return self.versions.get(task, self.defaults.get(task, ""))

    def set(self, task: str, version: str) -> None:
        """Records ``task``'s active version and writes the state file atomically."""
        with self._lock:
            self.versions[task] = version
            snapshot = dict(self.versions)
        write_atomic(self.state_file, yaml.safe_dump(snapshot, sort_keys=True))


def write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
