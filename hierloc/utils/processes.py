"""Child processes that do not outlive hierloc: DataLoader workers die with their parent."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG); a no-op
    elsewhere. With `parent_pid`, exits at once if the parent is already gone (it died before the call).
    Returns whether the request was made."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died between the fork and the prctl: nobody will read this worker's output
    return True


class WorkerInit:
    """A DataLoader `worker_init_fn`: the worker dies with the process that created the loader, then `then(id)`.

    Picklable (for the spawn start method); create it in the parent so that it knows the parent's pid.
    """

    def __init__(self, then=None) -> None:
        self.parent_pid = os.getpid()
        self.then = then

    def __call__(self, worker_id: int) -> None:
        """Run in the worker at its start."""
        exit_with_parent(self.parent_pid)
        if self.then is not None:
            self.then(worker_id)


def worker_init(then=None) -> WorkerInit:
    """`worker_init_fn` for every DataLoader hierloc creates (see WorkerInit)."""
    return WorkerInit(then)
