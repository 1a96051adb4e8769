"""Returning freed heap memory to the operating system after an engine is released.

Engine sessions allocate large buffers; glibc keeps freed blocks in its arenas, so a process
that swaps engines again and again grows although nothing leaks. ``malloc_trim(0)`` hands the
free pages back. Elsewhere (no glibc) this does nothing.
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


def release_free_memory() -> bool:
    """Collects garbage and trims the C heap; True where the trim ran."""
    global _libc, _probed
    gc.collect()
    if not _probed:
        _probed = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else None
        except OSError:
            _libc = None
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
