"""The C heap of a node that handles a cloud every cycle, and its release after an engine swap.

Every frame allocates and frees the same arrays of a few hundred kilobytes to a few megabytes.
With glibc's defaults, blocks of that size are mapped and unmapped at each allocation, and
every first touch of every page faults: on a 100k-point cloud that doubled the pillar
encoding time (11.4 ms against 5.2 ms). ``keep_frame_buffers`` makes glibc keep them on the
heap instead.

Engine sessions allocate large buffers; glibc keeps freed blocks in its arenas, so a process
that swaps engines again and again grows although nothing leaks. ``release_free_memory``
(``malloc_trim(0)``) hands the free pages back. A ROS node's many threads (one per connection
and service call) each get an arena of their own from glibc, up to eight per core; an engine
loaded in one arena and freed in another leaves holes that no trim returns, and the node grew
by 60 MB over eight swaps and rollbacks. ``keep_frame_buffers`` therefore also caps the arenas
at ``MAX_ARENAS``; it must run before the first thread starts. Elsewhere (no glibc) both do
nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Optional

LOG = logging.getLogger(__name__)
_libc: Optional[ctypes.CDLL] = None
_probed = False


# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MAX_ARENAS = 2
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: a 300k-point cloud with extra fields stays below
TRIM_THRESHOLD_BYTES = 512 << 20
TOP_PAD_BYTES = 64 << 20


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc, _probed
    if not _probed:
        _probed = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
        except OSError:
            _libc = None
    return _libc


def keep_frame_buffers() -> bool:
    """Keeps per-frame arrays on the heap between frames and caps glibc's arenas; call it first
    thing in a node's main, before any thread starts. True where glibc took the settings."""
    libc = _glibc()
    if libc is None:
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (M_TOP_PAD, TOP_PAD_BYTES), (M_ARENA_MAX, MAX_ARENAS)))
    if not ok:
        LOG.warning("glibc refused the heap settings for per-frame buffers: frames will run slower")
    return ok


def release_free_memory() -> bool:
    """Collects garbage and trims the C heap; True where the trim ran."""
    gc.collect()
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
