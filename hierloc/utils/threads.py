"""Explicit thread counts: oversubscribing small CPUs makes CNN inference many times slower."""

from __future__ import annotations

import os

_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


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
