"""`hierloc download-landmarks INDEX.csv OUT_DIR`: Google Landmarks images for distillation."""

from __future__ import annotations

import argparse

from .validators import non_negative_float, non_negative_int, positive_float, positive_int

# Literal defaults (the library's are the same) so that `--help` does not import OpenCV.
DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_MAX_PIXELS = 50_000_000


def register(subparsers) -> None:
    """Add the `download-landmarks` subcommand."""
    p = subparsers.add_parser(
        "download-landmarks", help="download the images of a Google Landmarks index (id, url, landmark_id)",
        description="Parallel and resumable: images already in OUT_DIR are skipped, each image is saved through "
                    "a temporary file. Bad index lines (id not a plain file name of at most 128 characters, "
                    "URL not http(s) or over 2048 characters, malformed CSV, duplicate id) and failed URLs are "
                    "listed with their reason in OUT_DIR/failures.csv, counts in summary.json; the run goes on. "
                    "Only JPEG and PNG are accepted, their declared size checked before decoding.")
    p.add_argument("index", help="CSV index with a header naming the columns id and url")
    p.add_argument("out", help="output folder (OUT/<id>.jpg)")
    p.add_argument("--workers", type=positive_int, default=8, help="parallel downloads (default 8)")
    p.add_argument("--max-size", type=non_negative_int, default=640,
                   help="shrink images so that the longer side is at most this (0: keep; default 640)")
    p.add_argument("--timeout", type=positive_float, default=10.0,
                   help="seconds for one download attempt in total: connection, headers and body (default 10)")
    p.add_argument("--max-bytes", type=positive_int, default=DEFAULT_MAX_BYTES,
                   help="refuse a body larger than this many bytes, stopping as soon as it is exceeded "
                        f"(default {DEFAULT_MAX_BYTES})")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                   help="refuse an image whose header declares more pixels than this, before decoding it "
                        f"(default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--retries", type=non_negative_int, default=3, help="retries of transient failures (default 3)")
    p.add_argument("--backoff", type=non_negative_float, default=1.0,
                   help="first retry delay in seconds, doubled each time")
    p.add_argument("--truncate", type=positive_int, default=None, help="only the first N rows of the index")
    p.add_argument("--dry-run", action="store_true",
                   help="only check the index: write failures.csv and summary.json, count what would be "
                        "downloaded, no network access")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Download (or check, with --dry-run) and print the summary."""
    from ..training.landmarks import download_landmarks

    summary = download_landmarks(args.index, args.out, workers=args.workers, max_size=args.max_size or None,
                                 timeout=args.timeout, retries=args.retries, backoff=args.backoff, limit=args.truncate,
                                 max_bytes=args.max_bytes, max_pixels=args.max_pixels, dry_run=args.dry_run)
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures_by_reason.items())) or "none"
    if args.dry_run:
        print(f"dry run: {summary.would_download} to download, {summary.skipped_existing} already present, "
              f"{summary.failed} rejected ({reasons}) of {summary.total}")
        print(f"rejected lines in {args.out}/failures.csv, counts in {args.out}/summary.json")
        return 0
    print(f"{summary.downloaded} downloaded, {summary.skipped_existing} already present, {summary.failed} failed "
          f"({reasons}) of {summary.total} in {summary.seconds:.1f} s")
    print(f"images in {args.out}/, failed URLs in {args.out}/failures.csv, counts in {args.out}/summary.json")
    return 0
