"""Fuzz target of the Google Landmarks index (the CSV `hierloc download-landmarks` reads).

The command runs with `--dry-run`: the index is read and checked line by line, failures.csv and summary.json
are written, and nothing is fetched, so a case touches no network whatever a mutation does to the URLs and
takes a fraction of a second. A bad line must be rejected on its own (a row of failures.csv), never end the
run with a traceback; only a header that names no id and url columns may end it, with a one-line error.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from .mutators import data_line_indices, huge_field, text_lines_mutator
from .target import FuzzTarget, Mutator

INDEX_NAME = "index.csv"
OUT_NAME = "out"
# Reasons a dry run may give for a line (the prefix before ':' in failures.csv; see hierloc.training.landmarks).
DRY_RUN_REASONS = frozenset({"bad line", "bad id", "bad url", "duplicate id"})

HOSTILE_IDS = ("a" * 300, "a" * 129, "a" * 128, "nul\x00id", "../escape", "a/b", "a\\b", ".hidden", "..", "",
               "-rf", "x y", "caf\u00e9", "\u202etxt.exe", "id\r", "CON", "id.jpg/../x", "\x7f")
HOSTILE_URLS = ("file:///etc/passwd", "javascript:alert(1)", "ftp://127.0.0.1:9/x.jpg", "http://", "https:///x",
                "http://127.0.0.1:99999/x.jpg", "http://[::1", "http://" + "a" * 64 + ".org/x.jpg",
                "http://127.0.0.1:9/" + "x" * 5000, "http://127.0.0.1:9/\x00.jpg", "", "http://h\u00e9.org/x.jpg",
                "http://127.0.0.1:9/a b.jpg", "HTTP://127.0.0.1:9/X.JPG", "//127.0.0.1:9/x.jpg", "data:image/png,x")
HOSTILE_HEADERS = ("id", "url", "ID,URL,landmark_id", "\ufeffid,url,landmark_id", "id,id,url", "url,id", "",
                   "x" * 200_000, '"id,url', "id;url;landmark_id", "\x00")


def _seed(folder: Path) -> list[str]:
    """A small index in Google Landmarks' format: 16-hex ids, URLs on a closed local port, landmark ids."""
    rng = random.Random(7)
    lines = ["id,url,landmark_id"]
    for n in range(8):
        image_id = f"{rng.getrandbits(64):016x}"
        url = f"http://127.0.0.1:9/wikipedia/commons/{n % 10}/{n:02x}/Landmark_{n}.jpg"
        if n == 3:
            url = f'"http://127.0.0.1:9/w/index.php?title=File:A,B_{n}.jpg&x=%C3%A9"'  # quoted: holds a comma
        if n == 5:
            url = url.replace("http://", "https://")
        lines.append(f"{image_id},{url},{rng.randrange(200_000)}")
    (folder / INDEX_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [INDEX_NAME]


def _argv(folder: Path) -> list[str]:
    return ["download-landmarks", str(folder / INDEX_NAME), str(folder / OUT_NAME), "--dry-run", "--workers", "1"]


def _implausible(folder: Path, stdout: str) -> str | None:
    """A dry run writes only failures.csv and summary.json, whose counts must add up, and rejects with known reasons."""
    out = folder / OUT_NAME
    summary_path, failures_path = out / "summary.json", out / "failures.csv"
    if not summary_path.is_file() or not failures_path.is_file():
        return "an accepted run left no summary.json or failures.csv"
    written = sorted(p.name for p in out.iterdir())
    if written != ["failures.csv", "summary.json"]:
        return f"a dry run wrote {written[:5]} in the output folder"
    strays = [str(p.relative_to(folder)) for p in folder.rglob("*.jpg")]
    if strays:
        return f"a dry run wrote images: {strays[:3]}"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    counted = summary["downloaded"] + summary["skipped_existing"] + summary["failed"] + summary["would_download"]
    if summary["downloaded"] or counted != summary["total"]:
        return f"summary counts do not add up: {summary}"
    with open(failures_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if rows[:1] != [["id", "url", "reason"]] or len(rows) - 1 != summary["failed"]:
        return f"failures.csv has {len(rows) - 1} rows for {summary['failed']} failures"
    reasons = {row[2].split(":")[0] for row in rows[1:] if len(row) == 3}
    if len(reasons) and not reasons <= DRY_RUN_REASONS:
        return f"unexpected rejection reasons {sorted(reasons - DRY_RUN_REASONS)}"
    index_lines = (folder / INDEX_NAME).read_bytes().count(b"\n") + 1
    if summary["total"] > index_lines:
        return f"{summary['total']} rows counted in an index of {index_lines} lines"
    if not stdout.startswith("dry run:"):
        return "no dry-run summary printed"
    return None


# --------------------------------------------------------------------------- structured mutators


def _set_field(lines: list[str], rng: random.Random, column: int, values: tuple[str, ...]) -> list[str]:
    rows = [i for i in data_line_indices(lines) if i > 0]
    if rows:
        i = rng.choice(rows)
        fields = next(csv.reader([lines[i]]), [])
        if len(fields) > column:
            fields[column] = rng.choice(values)
            lines[i] = ",".join(fields) if rng.random() < 0.5 else _csv_line(fields)
    return lines


def _csv_line(fields: list[str]) -> str:
    """Fields joined by the csv writer (quoting what needs it, so that the parser sees the hostile value intact)."""
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _hostile_id(lines: list[str], rng: random.Random) -> list[str]:
    """An id that is no plain file name: too long, NUL, path separators, dotfile, option-like, non-ASCII."""
    return _set_field(lines, rng, 0, HOSTILE_IDS)


def _hostile_url(lines: list[str], rng: random.Random) -> list[str]:
    """A URL of another scheme, no host, a bad port or IPv6 literal, too long, control characters, non-ASCII."""
    return _set_field(lines, rng, 1, HOSTILE_URLS)


def _hostile_header(lines: list[str], rng: random.Random) -> list[str]:
    if not lines:
        lines = [""]
    lines[0] = rng.choice(HOSTILE_HEADERS)
    return lines


def _stray_quote(lines: list[str], rng: random.Random) -> list[str]:
    """A '"' at a random place of a line: a field that never closes, or text after a closing quote."""
    rows = data_line_indices(lines) or [0]
    if not lines:
        lines = [""]
    i = rng.choice(rows)
    position = rng.randint(0, len(lines[i]))
    lines[i] = lines[i][:position] + '"' + lines[i][position:]
    return lines


def _columns(lines: list[str], rng: random.Random) -> list[str]:
    """A line with fields dropped or added."""
    rows = [i for i in data_line_indices(lines) if i > 0]
    if rows:
        i = rng.choice(rows)
        fields = lines[i].split(",")
        lines[i] = ",".join(fields[:rng.randint(0, 1)] if rng.random() < 0.5 else fields + ["extra"] * 50)
    return lines


def _duplicates(lines: list[str], rng: random.Random) -> list[str]:
    """A line repeated (same id twice, or thousands of times), or the same id in another case."""
    rows = [i for i in data_line_indices(lines) if i > 0]
    if rows:
        i = rng.choice(rows)
        line = lines[i]
        copies = [line.upper() if rng.random() < 0.3 else line] * rng.choice((1, 2, 5000))
        lines[i + 1:i + 1] = copies
    return lines


def _not_utf8(data: bytes, rng: random.Random) -> bytes:
    """Bytes that are not UTF-8 (Latin-1 text, a lone continuation byte, an overlong NUL) inside a line."""
    junk = rng.choice((b"\xe9", b"\x80", b"\xc0\x80", b"\xff\xfe", b"\xed\xa0\x80"))
    position = rng.randint(0, len(data))
    return data[:position] + junk + data[position:]


def _endless_line(data: bytes, rng: random.Random) -> bytes:
    """A last line of megabytes without a newline, or line breaks of other systems (CR only, CRLF)."""
    kind = rng.random()
    if kind < 0.4:
        return data + b"x" * rng.choice((9000, 1_000_000))
    if kind < 0.7:
        return data.replace(b"\n", b"\r")
    return data.replace(b"\n", b"\r\n")


STRUCTURED: tuple[Mutator, ...] = (
    *(text_lines_mutator(edit, name) for edit, name in (
        (_hostile_id, "hostile_id"), (_hostile_url, "hostile_url"), (_hostile_header, "hostile_header"),
        (_stray_quote, "stray_quote"), (huge_field, "csv_huge_field"), (_columns, "columns"),
        (_duplicates, "duplicate_ids"))),
    _not_utf8, _endless_line,
)

TARGETS: list[FuzzTarget] = [
    FuzzTarget("landmark-index", _seed, _argv, STRUCTURED, _implausible),
]
