"""`configure_threads` reaches the thread pools of libraries loaded before it ran (numpy's OpenBLAS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json
import numpy  # loads OpenBLAS with one thread per core before hierloc decides
import threadpoolctl
from hierloc.utils.threads import configure_threads
configure_threads(1)
print(json.dumps([(pool["internal_api"], pool["num_threads"]) for pool in threadpoolctl.threadpool_info()]))
"""


def test_blas_pools_loaded_earlier_follow_the_thread_count():
    env_free = {key: value for key, value in os.environ.items()
                if key not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env_free,
                         timeout=120)
    pools = json.loads(out.stdout.strip().splitlines()[-1])
    assert any(api == "openblas" for api, _ in pools), pools  # numpy's BLAS is among them
    assert all(threads == 1 for _, threads in pools), pools
