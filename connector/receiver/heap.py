"""Memory freed after a flood of connections, given back to the kernel.

CPython's allocator keeps what it freed for reuse, and so does glibc's `malloc`: after a
flood of connections, a receiver's resident memory stays at its peak though nothing holds
it. glibc's `malloc_trim` returns the free pages at the top of each heap and the free ones
within; elsewhere (musl, macOS) there is nothing to call and nothing is done."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def give_back() -> bool:
    """Return the allocator's free memory to the kernel; False where it cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
