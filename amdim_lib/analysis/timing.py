"""Timing small experiments fairly: torch limited to a few threads while they run, then restored.

The experiments of the notebooks are made of many small tensor operations; one thread is about as fast
as several on an idle machine and several times faster on a busy one, where OpenMP threads wait for
each other at every operation.
"""

from __future__ import annotations

import time

import torch


class torch_threads:
    """Context manager: run torch ops with `n` threads (None: leave the setting alone), then restore it."""

    def __init__(self, n: int | None = 1):
        self.n = n

    def __enter__(self):
        self.previous = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)
        return False


def time_call(fn, repeats: int = 1, threads: int | None = 1):
    """(fn()'s result, seconds per call over `repeats` calls), with torch limited to `threads` intra-op
    threads meanwhile (default one: the loop reference cannot use more, so both run on equal footing).
    The thread count is restored."""
    with torch_threads(threads):
        start = time.perf_counter()
        for _ in range(repeats):
            result = fn()
        return result, (time.perf_counter() - start) / repeats
