"""Peak memory of a block of code: ``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the
growth of the resident set size over its value before the block (after ``gc.collect`` and
glibc's ``malloc_trim``, so freed memory is not silently reused), polled from
``/proc/self/statm`` every 5 ms, or the growth of ``ru_maxrss`` where ``/proc`` is missing (it
reads 0 unless the process's peak grows). Approximate (allocator caching, 5 ms polling); the
method used is recorded with the number."""

from __future__ import annotations

import gc
import os
import threading

import torch


def _malloc_trim() -> bool:
    """Hand freed heap memory back to the OS (glibc), so RSS growth measures a new peak."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory of the code in a ``with`` block (see the module docstring for the methods)."""

    def __init__(self, device: str | torch.device, interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes: int | None = None
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated (absolute, weights included)"
            return self
        trimmed = _malloc_trim()
        self._base = _rss_bytes()
        if self._base is not None:
            self.method = ("peak RSS growth over the warm-up batch (/proc/self/statm polled "
                           "every 5 ms" + (", after gc + malloc_trim)" if trimmed else ")"))
            self._peak = self._base

            def poll() -> None:
                while not self._stop.is_set():
                    r = _rss_bytes()
                    if r is not None and r > self._peak:
                        self._peak = r
                    self._stop.wait(self.interval)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        else:
            import resource

            self.method = "ru_maxrss growth (0 unless the process peak grows)"
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            return
        if self._thread is not None:
            r = _rss_bytes()
            if r is not None:
                self._peak = max(self._peak, r)
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(0, self._peak - self._base)
        else:
            import resource

            now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_bytes = max(0, now - self._base)
