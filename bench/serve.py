"""The HTTP localization service under load: `hierloc serve` on the demo map against the in-process Localizer.

Builds the demo (`hierloc.pipelines.demo.run_demo`, reused when `OUT/demo/map` exists; or `--map MAP
--queries WORLD`), then:

1. starts `hierloc serve` as a subprocess on 127.0.0.1 with a free port, and loads a `Localizer` in this
   process (the baseline: the frames' PNG bytes decoded and localized, with as many threads as each
   service worker uses);
2. the dusk frames one at a time, `--passes` times, each frame in-process and through the service in turn
   (interleaved, so that other jobs on the machine weigh on both alike): latency against the baseline
   (the service's overhead), and poses;
3. `--clients` concurrent clients x `--requests` requests each (the frames in turn): errors, requests
   dropped without an answer, latency, throughput, and every pose against the in-process pose;
4. a burst of `--burst` simultaneous requests, beyond the workers and the queue: how many were answered
   200, how many 503 (with Retry-After), how fast the 503s came, none dropped;
5. a graceful shutdown: the pool filled with requests, SIGTERM to the server's PID; all must be answered;
6. RSS of the server before and after steps 3-4, and its /metrics failures by reason.

Everything it starts is stopped by PID. Usage:
    python bench/serve.py [--clients 8] [--requests 200] [--burst 64] [--workers 2] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hierloc.client import HierlocClient, ServiceError, camera_text
from hierloc.maps import load_map
from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def rss_mb(pid: int) -> float:
    """Resident set size of a process (MiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def load_frames(world: Path, mission: str) -> list[dict]:
    """Name, camera and PNG bytes of every frame of `mission` in the dataset `world`."""
    frames = []
    for kf in load_map(world).missions[mission].keyframes:
        frames.append({"name": kf.name, "camera": kf.camera, "data": Path(kf.image_path).read_bytes()})
    return frames


class InProcess:
    """The baseline: decode the PNG bytes and localize with a Localizer in this process."""

    def __init__(self, map_dir: Path, threads: int) -> None:
        from hierloc.localization import Localizer, LocalizerConfig
        from hierloc.service import warm_up

        configure_threads(threads)
        self.localizer = Localizer.load(map_dir, LocalizerConfig(num_retrieved=5))
        warm_up(self.localizer)

    def ask(self, frame: dict) -> dict:
        """Latency (decode + localize) and pose of one frame."""
        from hierloc.utils.encoded_images import decode_image_bytes

        t0 = time.perf_counter()
        image = decode_image_bytes(frame["data"], max_pixels=4096 * 4096)
        result = self.localizer.localize(image, frame["camera"], frame["name"])
        return {"latency": time.perf_counter() - t0, "pose": result.T_cam_world, "name": frame["name"]}


class Server:
    """`hierloc serve` in a subprocess on 127.0.0.1 and a free port, stopped by its PID."""

    def __init__(self, map_dir: Path, workers: int, threads: int, queue: int) -> None:
        command = [sys.executable, "-m", "hierloc.cli.main", "serve", str(map_dir), "--host", "127.0.0.1",
                   "--port", "0", "--workers", str(workers), "--threads", str(threads), "--queue", str(queue),
                   "--num-retrieved", "5"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pid = self.process.pid
        self.lines: list[str] = []
        self.url = None
        deadline = time.time() + 300
        while self.url is None:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError("hierloc serve exited: " + "".join(self.lines[-20:]))
            self.lines.append(line)
            if line.startswith("serving on "):
                self.url = line.split()[2]
            if time.time() > deadline:
                self.stop()
                raise RuntimeError("hierloc serve did not start within 300 s")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM (graceful shutdown), then SIGKILL if it has not exited within `timeout`; its exit code."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
        return self.process.wait()


def ask(client: HierlocClient, frame: dict) -> dict:
    """One localize request: status, latency, pose, and whether an answer came at all."""
    t0 = time.perf_counter()
    try:
        answer = client.localize(frame["data"], camera_text(frame["camera"]), name=frame["name"])
        status, retry_after = 200, None
    except ServiceError as exc:
        answer, status, retry_after = None, exc.status, exc.retry_after
    except Exception as exc:  # noqa: BLE001 - no HTTP answer: a dropped request
        return {"status": None, "error": f"{type(exc).__name__}: {exc}", "latency": time.perf_counter() - t0}
    out = {"status": status, "latency": time.perf_counter() - t0, "retry_after": retry_after, "name": frame["name"]}
    if answer is not None:
        out["pose"] = None if answer["T_cam_world"] is None else np.array(answer["T_cam_world"])
        out["server_total"] = answer["timings_s"]["total"]
        out["server_service"] = answer["timings_s"]["service"]
    return out


def pose_check(records: list[dict], poses: dict) -> dict:
    """How many answered poses equal the in-process pose bit for bit, and the largest difference."""
    equal, differ, largest = 0, 0, 0.0
    for record in records:
        if record.get("status") != 200:
            continue
        mine, theirs = record["pose"], poses[record["name"]]
        if mine is None or theirs is None:
            same = mine is None and theirs is None
        else:
            same = np.array_equal(mine, theirs)
            largest = max(largest, float(np.abs(mine - theirs).max()))
        equal, differ = equal + same, differ + (not same)
    return {"equal": equal, "different": differ, "largest_abs_difference": largest}


def concurrent(url: str, frames: list[dict], clients: int, requests: int) -> tuple[list[dict], float]:
    """`clients` threads, each with its own connection, sending `requests` frames in turn."""
    records: list[list[dict]] = [[] for _ in range(clients)]

    def run(i: int) -> None:
        client = HierlocClient(url, timeout=120)
        for j in range(requests):
            records[i].append(ask(client, frames[(i * 7 + j) % len(frames)]))
        client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for rs in records for r in rs], time.perf_counter() - t0


def burst(url: str, frames: list[dict], count: int) -> list[dict]:
    """`count` requests released at once (a barrier), each on its own connection, no retry."""
    barrier = threading.Barrier(count)
    records: list[dict | None] = [None] * count

    def run(i: int) -> None:
        client = HierlocClient(url, timeout=120)
        client.health()  # connected before the barrier, so that the requests really arrive together
        barrier.wait()
        records[i] = ask(client, frames[i % len(frames)])
        client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in records if r is not None]


def summarize(records: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for r in records:
        key = "dropped" if r["status"] is None else str(r["status"])
        statuses[key] = statuses.get(key, 0) + 1
    ok = [r["latency"] * 1e3 for r in records if r["status"] == 200]
    return {"requests": len(records), "statuses": statuses, "ok": len(ok),
            "errors": sum(1 for r in records if r["status"] != 200),
            "dropped": sum(1 for r in records if r["status"] is None),
            "localized": sum(1 for r in records if r["status"] == 200 and r["pose"] is not None),
            "p50_ms": percentile(ok, 50), "p95_ms": percentile(ok, 95),
            "drop_examples": [r["error"] for r in records if r["status"] is None][:3]}


def parse_failures(metrics: str) -> dict[str, float]:
    failures = {}
    for line in metrics.splitlines():
        if line.startswith("hierloc_failures_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            value = float(line.rsplit(" ", 1)[1])
            if value:
                failures[reason] = value
    return failures


def shutdown_under_load(server: Server, frames: list[dict], count: int) -> dict:
    """Fill the pool with `count` requests, SIGTERM the server, and count the answers."""
    records: list[dict | None] = [None] * count
    barrier = threading.Barrier(count + 1)

    def run(i: int) -> None:
        client = HierlocClient(server.url, timeout=120)
        client.health()
        barrier.wait()
        records[i] = ask(client, frames[i % len(frames)])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    time.sleep(0.3)  # the requests are in: running or queued
    t0 = time.perf_counter()
    code = server.stop()
    stopped = time.perf_counter() - t0
    for t in threads:
        t.join()
    answered = [r for r in records if r is not None and r["status"] == 200]
    return {"in_flight": count, "answered_200": len(answered), "exit_code": code, "stop_seconds": stopped,
            "statuses": summarize([r for r in records if r is not None])["statuses"]}


def main() -> None:
    """Run the benchmark; print a summary and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_serve"))
    parser.add_argument("--map", type=Path, default=None, help="a map folder (default: the demo's, built if absent)")
    parser.add_argument("--queries", type=Path, default=None, help="dataset with the query mission (default: demo)")
    parser.add_argument("--mission", default="dusk")
    parser.add_argument("--frames", type=int, default=60, help="frames of the demo, if it is built")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--passes", type=int, default=5, help="passes over the frames, in-process and sequential")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per localization (per worker)")
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    if args.map is None:
        demo = args.out / "demo"
        if not (demo / "map" / "map.json").is_file():
            from hierloc.pipelines.demo import DemoConfig, run_demo

            run_demo(DemoConfig(out=demo, frames=args.frames))
        args.map, args.queries = demo / "map", args.queries or demo / "world"
    if args.queries is None:
        raise SystemExit("--queries WORLD is needed with --map")
    frames = load_frames(args.queries, args.mission)
    print(f"{len(frames)} {args.mission} frames; map {args.map}")

    server = Server(args.map, args.workers, args.threads, args.queue)
    report: dict = {"map": str(args.map), "frames": len(frames), "cores": os.cpu_count(),
                    "load_average_at_start": os.getloadavg(),
                    "config": {"workers": args.workers, "threads_per_worker": args.threads, "queue": args.queue,
                               "clients": args.clients, "requests_per_client": args.requests, "burst": args.burst,
                               "passes": args.passes}}
    try:
        client = HierlocClient(server.url, timeout=120)
        rss_start = rss_mb(server.pid)
        baseline = InProcess(args.map, args.threads)
        local, sequential = [], []
        for _ in range(args.passes):
            for i, frame in enumerate(frames):
                if i % 2:
                    sequential.append(ask(client, frame))
                local.append(baseline.ask(frame))
                if not i % 2:
                    sequential.append(ask(client, frame))
        del baseline
        gc.collect()
        poses = {r["name"]: r["pose"] for r in local}
        base_ms = [r["latency"] * 1e3 for r in local]
        report["in_process"] = {"p50_ms": percentile(base_ms, 50), "p95_ms": percentile(base_ms, 95),
                                "requests": len(base_ms)}
        seq = summarize(sequential)
        seq_server = [r["server_service"] * 1e3 for r in sequential if r["status"] == 200]
        answered = [(r, b) for r, b in zip(sequential, local) if r["status"] == 200]
        seq.update(overhead_p50_pct=100 * (seq["p50_ms"] / report["in_process"]["p50_ms"] - 1),
                   overhead_p95_pct=100 * (seq["p95_ms"] / report["in_process"]["p95_ms"] - 1),
                   # the same frame through the service and in-process, one right after the other
                   paired_ratio_p50=percentile([r["latency"] / b["latency"] for r, b in answered], 50),
                   server_side_p50_ms=percentile(seq_server, 50),
                   # outside the localizer: client to server and back, and in the server (queue, decode, JSON)
                   transport_p50_ms=percentile([(r["latency"] - r["server_service"]) * 1e3 for r, _ in answered], 50),
                   in_server_p50_ms=percentile([(r["server_service"] - r["server_total"]) * 1e3
                                                for r, _ in answered], 50),
                   poses=pose_check(sequential, poses))
        report["sequential"] = seq
        print(f"in-process: p50 {percentile(base_ms, 50):.1f} ms, p95 {percentile(base_ms, 95):.1f} ms")
        print(f"service, one client: p50 {seq['p50_ms']:.1f} ms ({seq['overhead_p50_pct']:+.1f} %), "
              f"p95 {seq['p95_ms']:.1f} ms ({seq['overhead_p95_pct']:+.1f} %), paired ratio p50 "
              f"{seq['paired_ratio_p50']:.3f}; outside the localizer: {seq['transport_p50_ms']:.1f} ms transport + "
              f"{seq['in_server_p50_ms']:.1f} ms in the server (decode included); poses {seq['poses']}")
        rss_before = rss_mb(server.pid)

        records, wall = concurrent(server.url, frames, args.clients, args.requests)
        load = summarize(records)
        load.update(wall_s=wall, throughput_rps=load["ok"] / wall, poses=pose_check(records, poses))
        report["load"] = load
        print(f"load {args.clients} x {args.requests}: {load['ok']} ok, {load['errors']} errors, {load['dropped']} "
              f"dropped, p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms, {load['throughput_rps']:.1f} "
              f"req/s; poses {load['poses']}")

        bursts = burst(server.url, frames, args.burst)
        b = summarize(bursts)
        refused = [r for r in bursts if r["status"] == 503]
        b.update(status_503=len(refused), retry_after_on_all_503=all(r["retry_after"] for r in refused),
                 p50_503_ms=percentile([r["latency"] * 1e3 for r in refused], 50),
                 max_503_ms=max((r["latency"] * 1e3 for r in refused), default=None),
                 poses=pose_check(bursts, poses))
        report["burst"] = b
        print(f"burst of {args.burst}: {b['ok']} ok, {b['status_503']} x 503 (Retry-After on all: "
              f"{b['retry_after_on_all_503']}, p50 {b['p50_503_ms'] or 0:.1f} ms), {b['dropped']} dropped, "
              f"statuses {b['statuses']}")
        time.sleep(1.0)
        rss_after = rss_mb(server.pid)
        report["rss_mb"] = {"started": rss_start, "before_load": rss_before, "after_load": rss_after,
                            "change_pct": 100 * (rss_after / rss_before - 1)}
        print(f"server RSS: {rss_start:.0f} MiB at start, {rss_before:.0f} MiB before the load, {rss_after:.0f} MiB "
              f"after ({report['rss_mb']['change_pct']:+.1f} %)")
        report["metrics_failures"] = parse_failures(client.metrics())
        client.close()
        report["shutdown"] = shutdown_under_load(server, frames, args.workers + args.queue)
        print(f"SIGTERM with {report['shutdown']['in_flight']} requests in flight: "
              f"{report['shutdown']['answered_200']} answered 200, exit code {report['shutdown']['exit_code']} "
              f"after {report['shutdown']['stop_seconds']:.1f} s")
    finally:
        server.stop()
    checks = [report["sequential"], report["load"], report["burst"]]
    report["all_poses_equal"] = all(c["poses"]["different"] == 0 for c in checks)
    report["errors"] = report["load"]["errors"] + report["sequential"]["errors"]
    report["dropped"] = sum(c["dropped"] for c in checks)
    report["load_average_at_end"] = os.getloadavg()
    print(f"errors {report['errors']}, dropped {report['dropped']}, every pose equal to in-process: "
          f"{report['all_poses_equal']}")
    if args.json is not None:
        atomic_write_text(args.json, to_json_text(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
