"""The daemon's allocator settings: fewer glibc malloc arenas than threads.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core), and an
arena keeps the memory freed into it for that arena's next allocations. The daemon's two decode
threads each grew one to ~17 MB beside the main heap, holding their share of the frames' freed
buffers that the main thread could not reuse. One arena for the whole process lowered the shipped
daemon's peak RSS by ~6 MB at the same CPU time per photo (bench/README.md, "Memory"); the threads
hold the GIL for most of their work, so they rarely wait on the arena's lock.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
ENVIRONMENT = "MALLOC_ARENA_MAX"


def one_malloc_arena() -> bool:
    """Limit glibc to one malloc arena; returns whether it was set.

    Called once, before the daemon starts its threads: an arena a thread already holds stays
    its own. Left alone where MALLOC_ARENA_MAX is in the environment (the user chose) and where
    the C library is not glibc (musl has no arenas; macOS has no mallopt).
    """
    if ENVIRONMENT in os.environ:
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (ValueError, OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = bool(mallopt(M_ARENA_MAX, 1))
    log.debug("malloc arenas limited to one: %s", done)
    return done
