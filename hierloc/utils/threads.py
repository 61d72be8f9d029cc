"""Explicit thread counts: oversubscribing small CPUs makes CNN inference many times slower."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS's worker threads busy-wait 2**28 cycles (about 0.1 s) after every matrix product before they sleep.
# On a 2-core machine the spinning thread took a core from whatever ran next: per Strecha query the retrieval
# network went from 15 to 28-38 ms and SIFT from 36 to 55-62 ms after numpy's descriptor matching (bench/localize.py).
# 2**4 cycles makes them sleep at once; waking them costs microseconds against products of milliseconds.
BLAS_THREAD_TIMEOUT_ENV = ("OPENBLAS_THREAD_TIMEOUT", "4")
_TORCH_THREADS_LOCK = threading.RLock()  # re-entrant: a block may call code that opens another


def limit_blas_spinning() -> None:
    """Make OpenBLAS threads sleep right after their work (unless the user chose otherwise).

    OpenBLAS reads the setting once, when a library loads its copy: `import hierloc` calls this
    before anything imports numpy. A program that imports numpy first keeps OpenBLAS's default
    (export OPENBLAS_THREAD_TIMEOUT=4 then, or import hierloc first).
    """
    name, value = BLAS_THREAD_TIMEOUT_ENV
    os.environ.setdefault(name, value)


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `num_threads` inside the block, restored after it.

    The count is process-wide, so blocks run one at a time (a lock); a localizer uses it to give its
    retrieval network the cores that a concurrent OpenCV stage leaves free.
    """
    import torch

    with _TORCH_THREADS_LOCK:
        previous = torch.get_num_threads()
        if previous != num_threads:
            torch.set_num_threads(max(1, num_threads))
        try:
            yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)


def default_num_threads() -> int:
    """Number of CPU cores this process may use (respects affinity masks and HIERLOC_NUM_THREADS)."""
    if "HIERLOC_NUM_THREADS" in os.environ:
        return max(1, int(os.environ["HIERLOC_NUM_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch, OpenCV, faiss and BLAS thread counts to `num_threads` (default: usable cores)."""
    n = num_threads or default_num_threads()
    for var in _THREAD_ENV_VARS:
        os.environ.setdefault(var, str(n))
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass
    # The environment variables above only reach libraries loaded later: numpy's OpenBLAS (and the copies
    # other wheels bring) already started one thread per core when numpy was imported, so their pools are
    # resized at run time. Left at 2 threads, numpy's matrix products in the service's two 1-thread workers
    # oversubscribed the 2 cores and their spinning threads slowed the next CNN of every process.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    return n
