"""Write an evaluation to a folder: JSON, per-query CSV files, PNG curves and retrieval grids, index.html."""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write_text, to_json_text
from .pipeline import RECALL_NS, Evaluation, Result, per_query_rows
from .visualize import annotated_retrieval_grid, choose_examples, plot_pr_curves, plot_recall_curves, write_png


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def write_json(evaluation: Evaluation, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """All numbers of the evaluation (see Evaluation.to_dict), atomically."""
    data = evaluation.to_dict()
    if extra:
        data.update(extra)
    atomic_write_text(path, to_json_text(data, indent=1, default=_json_default) + "\n")
    return Path(path)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")


def _result_slug(result: Result) -> str:
    return f"{_slug(result.method)}_pca-{result.pca_label}_{_slug(result.query_set)}"


def write_per_query_csv(evaluation: Evaluation, result: Result, path: str | os.PathLike, top: int = 5) -> Path:
    """One line per query: validity, rank of the first correct reference, top references and distances."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["query", "valid", "first_correct_rank", "true_positives", "false_positives"]
                    + [f"{kind}_{i + 1}" for i in range(top) for kind in ("retrieved", "distance", "correct")]
                    + ["true_references"])
    for row in per_query_rows(evaluation, result, top):
        cells = [row["query"], int(row["valid"]), row["first_correct_rank"] or "", row["true_positives"],
                 row["false_positives"]]
        for name, distance, ok in zip(row["retrieved"], row["distances"], row["correct"]):
            cells += [name, f"{distance:.4f}", int(ok)]
        cells += [""] * (5 + 3 * top - len(cells))
        cells.append(" ".join(row["true_references"]))
        writer.writerow(cells)
    atomic_write_text(path, buffer.getvalue())
    return Path(path)


def _grid_result(evaluation: Evaluation, method: str, query_set: str) -> Result:
    """The result shown in grids: no PCA if evaluated, else the first PCA size."""
    candidates = [r for r in evaluation.results if r.method == method and r.query_set == query_set]
    return next((r for r in candidates if r.pca_dims is None), candidates[0])


def write_retrieval_grid(evaluation: Evaluation, result: Result, path: str | os.PathLike, top: int = 5,
                         successes: int = 4, failures: int = 4, height: int = 120) -> Path:
    """Grid of chosen successful and failed queries with their top references; failures also show the
    nearest true reference (blue) so that a reader sees what should have been found."""
    dataset = evaluation.dataset
    query_set = next(q for q in dataset.queries if q.name == result.query_set)
    reference = dataset.reference
    metrics = result.metrics
    good, bad = choose_examples(metrics.correct[:, 0], metrics.valid, successes, failures)
    rows = []
    for kind, chosen in (("success", good), ("failure", bad)):
        for q in chosen:
            retrieved = []
            for rank, (r, d) in enumerate(zip(result.ranking.rows[q, :top], result.ranking.distances[q, :top])):
                if r < 0:
                    continue
                retrieved.append((reference.load(int(r)), [f"#{rank + 1} {reference.names[r]}", f"d={d:.3f}"],
                                  bool(metrics.correct[q, rank])))
            first = metrics.first_correct_rank[q]
            caption = [f"query {query_set.names[q]}",
                       f"{kind}: " + (f"1st correct at #{first + 1}" if first >= 0
                                      else f"none in top {metrics.correct.shape[1]}")]
            row = {"query": query_set.load(int(q)), "query_caption": caption, "retrieved": retrieved}
            if kind == "failure":
                positives = result.ground_truth.positives(int(q))
                if len(positives):
                    # The true reference nearest in descriptor space is not known without a search; the
                    # first listed one (same name, or nearest by pose order) is shown.
                    expected = int(positives[len(positives) // 2])
                    row["expected"] = (reference.load(expected), [f"true: {reference.names[expected]}",
                                                                  f"{len(positives)} true reference(s)"])
            rows.append(row)
    if not rows:
        raise ValueError(f"{result.query_set}: no valid query to show")
    title = [f"{result.method}, PCA {result.pca_label}: queries from {result.query_set} (grey), top-{top} "
             f"references from {reference.name}",
             f"green = correct ({result.ground_truth.description}), red = wrong, blue = a true reference of a "
             f"failed query; {len(good)} successes then {len(bad)} failures, spread over the sequence; "
             f"recall@1 {100 * metrics.recall[0]:.1f}%"]
    return write_png(path, annotated_retrieval_grid(rows, title, height))


def write_report(evaluation: Evaluation, out_dir: str | os.PathLike, top: int = 5, examples: int = 4,
                 command: str = "") -> dict[str, list[Path]]:
    """Write results.json, per-query CSVs, recall and PR plots, retrieval grids and index.html to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {"json": [], "plots": [], "grids": [], "csv": [], "html": []}
    written["json"].append(write_json(evaluation, out / "results.json", {"command": command} if command else None))
    title = f"{evaluation.dataset.name}: reference {evaluation.dataset.reference.name}"
    curves = [{"method": r.method, "pca": r.pca_label, "query_set": r.query_set, "recall": r.metrics.recall,
               "precision": r.metrics.precision_recall.precision, "ap": r.metrics.precision_recall.average_precision}
              | {"pr_recall": r.metrics.precision_recall.recall} for r in evaluation.results]
    written["plots"].append(plot_recall_curves(curves, out / "recall_at_n.png", title))
    written["plots"].append(plot_pr_curves([dict(c, recall=c["pr_recall"]) for c in curves],
                                           out / "precision_recall.png", title))
    (out / "per_query").mkdir(exist_ok=True)
    for result in evaluation.results:
        written["csv"].append(write_per_query_csv(evaluation, result,
                                                  out / "per_query" / f"{_result_slug(result)}.csv", top))
    (out / "retrievals").mkdir(exist_ok=True)
    methods = list(dict.fromkeys(r.method for r in evaluation.results))
    for method in methods:
        for query_set in evaluation.dataset.queries:
            result = _grid_result(evaluation, method, query_set.name)
            path = out / "retrievals" / f"{_result_slug(result)}.png"
            written["grids"].append(write_retrieval_grid(evaluation, result, path, top, examples, examples))
    written["html"].append(write_html(evaluation, out, written, command))
    return written


def write_html(evaluation: Evaluation, out: Path, written: dict[str, list[Path]], command: str = "") -> Path:
    """A small page with the table and links to every picture and file."""
    e = html.escape
    data = evaluation.to_dict()
    ns = RECALL_NS
    rows = []
    for r in data["results"]:
        cells = [r["query_set"], r["method"], "none" if r["pca_dims"] is None else r["pca_dims"], r["search_dim"]]
        cells += [f"{100 * r['recall'][str(n)]:.1f}" if str(n) in r["recall"] else "-" for n in ns]
        cells += ["-" if r["recall_at_1_percent"] is None else f"{100 * r['recall_at_1_percent']:.1f}",
                  f"{100 * r['average_precision']:.1f}", r["valid_queries"], r["queries_without_ground_truth"]]
        rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    header = ["query set", "method", "PCA", "dim"] + [f"R@{n}" for n in ns] + ["R@1%", "AP", "valid queries",
                                                                                 "without ground truth"]
    methods = "".join(
        f"<li><b>{e(m['label'])}</b> ({e(m['kind'])}, {m['descriptor_dim']}-D"
        + (f", {1000 * m['seconds_per_image']:.1f} ms/image" if m["seconds_per_image"] else "")
        + ")" + "".join(f"; {e(n)}" for n in m["notes"]) + "</li>" for m in data["methods"])
    notes = "".join(f"<li>{e(n)}</li>" for n in data["dataset"]["notes"])
    gts = "".join(f"<li>{e(q['name'])}: {q['images']} queries, {q['ground_truth']['valid_queries']} with a true "
                  f"reference ({e(q['ground_truth']['rule'])})</li>" for q in data["dataset"]["query_sets"])

    def rel(path: Path) -> str:
        return e(path.relative_to(out).as_posix())

    plots = "".join(f'<p><a href="{rel(p)}"><img src="{rel(p)}" style="max-width:100%"></a></p>'
                    for p in written["plots"])
    grids = "".join(f'<h3>{e(p.stem)}</h3><p><a href="{rel(p)}"><img src="{rel(p)}" style="max-width:100%"></a></p>'
                    for p in written["grids"])
    csvs = "".join(f'<li><a href="{rel(p)}">{rel(p)}</a></li>' for p in written["csv"])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hierloc evaluation: {e(data['dataset']['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}} td:nth-child(-n+2){{text-align:left}}</style></head>
<body><h1>Retrieval evaluation: {e(data['dataset']['name'])}</h1>
<p>Dataset {e(data['dataset']['path'])}; reference {e(data['dataset']['reference']['name'])}
({data['dataset']['reference']['images']} images); search {e(data['settings']['backend'])}.</p>
<ul>{notes}{gts}</ul>
{f'<p>Command: <code>{e(command)}</code></p>' if command else ''}
<h2>Recall (%)</h2><table><tr>{''.join(f'<th>{e(h)}</th>' for h in header)}</tr>{''.join(rows)}</table>
<p>R@N: share of valid queries with a true reference among the N nearest; R@1%: N = 1% of the references;
AP: area under the precision-recall curve of accepting top-1 matches by distance.</p>
<h2>Methods</h2><ul>{methods}</ul>
<h2>Curves</h2>{plots}
<h2>Retrieved images</h2>{grids}
<h2>Files</h2><ul><li><a href="results.json">results.json</a> (all numbers)</li>{csvs}</ul>
</body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path
