"""Evidence that distillation learns: MobileNetVLAD students distilled from DenseVLAD, on the CPU.

The teacher needs no weights: DenseVLAD (dense RootSIFT, VLAD, PCA-whitening) with a vocabulary
fitted on the training images. Students: `mobilenetvlad` (depth 0.35, seeded initialisation) and
`mobilenetvlad_imagenet` (ImageNet MobileNetV2 1.0, VLAD centres by k-means), their FC layer sized
to the teacher. Data from ../shared/data (never copied into the repository; the work folder holds
links): Nordland summer and winter frames of the first `--train-places` places (upscaled 64x32 ->
128x64), plus the Strecha and Sacre Coeur photos (squeezed to the same size), with photometric
augmentation and small crops. Evaluation on the last `--eval-places` places, which training
never sees: summer frames are the map, winter frames the queries, the same file name is the same
place (recall@N strict; "+-2" also accepts the two neighbouring frames on each side).

Prints the table, writes JSON (`--json`) and a PNG of the recall curves. Every stage is cached in
`--work` (teacher descriptors are resumable, training resumes), so a rerun only does what is left.

    python bench/distill_evidence.py --work /tmp/hierloc_distill --iterations 3000 --threads 1 \
        --json bench/results/distill_evidence.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from hierloc.utils.io import atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EXTRA_FOLDERS = {"strecha_fountain": "strecha/fountain-P11/images", "strecha_herzjesu": "strecha/Herz-Jesus-P25/images",
                 "sacre_coeur": "sacre_coeur/mapping"}
STUDENTS = ("mobilenetvlad", "mobilenetvlad_imagenet")

logger = logging.getLogger("hierloc.bench")


def link_folder(target: Path, files: list[Path]) -> Path:
    """A folder of symbolic links to `files` (the shared data stays where it is)."""
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = target / f.name
        if not link.exists():
            os.symlink(f, link)
    return target


def prepare_folders(work: Path, shared: Path, train_places: int, eval_places: int, extras: bool) -> dict:
    """Training and evaluation image folders (links) in the work folder."""
    summer = sorted((shared / "nordland" / "summer").iterdir())
    names = [p.name for p in summer]
    if train_places + eval_places > len(names):
        raise SystemExit(f"{train_places} + {eval_places} places asked, Nordland has {len(names)}")
    train_names, eval_names = names[:train_places], names[-eval_places:]
    folders = {"train": {}, "eval": {}}
    for season in ("summer", "winter"):
        base = shared / "nordland" / season
        folders["train"][f"nordland_{season}"] = link_folder(work / "data" / "train" / f"nordland_{season}",
                                                             [base / n for n in train_names])
        folders["eval"][season] = link_folder(work / "data" / "eval" / season, [base / n for n in eval_names])
    if extras:
        for label, relative in EXTRA_FOLDERS.items():
            source = shared / relative
            if source.is_dir():
                files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".png"))
                folders["train"][label] = link_folder(work / "data" / "train" / label, files)
    return folders


def fit_teacher(work: Path, folders: dict, size: tuple[int, int], args) -> object:
    """DenseVLAD fitted on the (preprocessed) training images, cached as an .npz file."""
    from hierloc.models.densevlad import DenseVLAD, DenseVLADConfig
    from hierloc.training.data import preprocess_image
    from hierloc.utils.images import list_images, read_image

    path = work / "teacher" / "densevlad.npz"
    if path.is_file():
        return DenseVLAD.load(path)
    paths = [p for folder in folders["train"].values() for p, _ in list_images([folder])]
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(paths), size=min(len(paths), args.teacher_fit_images), replace=False))
    images = [preprocess_image(read_image(paths[i]), size, True)[:, :, 0] for i in chosen]
    config = DenseVLADConfig(num_clusters=args.teacher_clusters, pca_dim=args.teacher_dim, whiten=True)
    teacher = DenseVLAD.fit(images, config, vocabulary_images=min(300, len(images)), pca_images=len(images))
    teacher.save(path)
    return teacher


def export_teacher(work: Path, teacher, folders: dict, size: tuple[int, int]) -> dict:
    """Teacher descriptors of every training folder (NAME.npy), resumable."""
    from hierloc.training.export_descriptors import export_descriptors

    targets = {}
    for label, folder in folders["train"].items():
        out = work / "teacher" / "descriptors" / label
        export_descriptors(teacher, [folder], out, preprocessing={"resize": list(size), "grayscale": True},
                           batch_size=16, model_label="densevlad")
        targets[label] = out
    return targets


def student_config(name: str, folders: dict, targets: dict, size: tuple[int, int], args) -> dict:
    """The distillation config of one student (the shipped config with the evidence's sizes)."""
    from hierloc.training.config import load_config

    labels = list(folders["train"])
    overrides = {
        "data": {"image_folders": [str(folders["train"][k]) for k in labels],
                 "descriptor_folders": [str(targets[k]) for k in labels], "truncate": None,
                 "validation_size": args.validation_size,
                 "preprocessing": {"resize": list(size), "grayscale": True}, "cache_in_memory": True,
                 "num_workers": 0,
                 "augmentation": {"photometric": {"enable": True, "primitives": [
                     "random_brightness", "random_contrast", "additive_gaussian_noise", "additive_shade"]},
                     "crop": {"enable": True, "scale": [0.8, 1.0], "ratio": [0.9, 1.1]}}},
        "model": {"batch_size": args.batch_size, "eval_batch_size": 32, "reduction_dim": "auto",
                  "learning_rate": [args.lr, args.lr / 10], "learning_rate_step": [int(args.iterations * 0.8)]},
        "train_iter": args.iterations, "validation_interval": max(1, args.iterations // 10),
        "save_interval": max(1, args.iterations // 5), "keep_checkpoints": 2, "log_interval": 25, "seed": 0,
    }
    if name == "mobilenetvlad_imagenet":
        overrides["model"].update({"vlad_init": "kmeans", "vlad_init_images": 100,
                                   "train_backbone": not args.freeze_imagenet_backbone,
                                   "learning_rate": [args.lr_imagenet, args.lr_imagenet / 10]})
        base = "mobilenetvlad_imagenet_train_distill"
    else:
        base = "mobilenetvlad_train_distill"
    return load_config(base, overrides)


def train_student(name: str, work: Path, config: dict) -> dict:
    """Train (or resume, or reuse) one student; returns its training summary."""
    from hierloc.training.checkpoints import latest_checkpoint
    from hierloc.training.trainer import train

    experiment = work / "experiments" / name
    summary_path = experiment / "training_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("iteration") == config["train_iter"] and not summary.get("stopped_by"):
            return summary
    return train(config, experiment, resume=latest_checkpoint(experiment) is not None)


def describe_folder(describer, folder: Path, size: tuple[int, int]) -> np.ndarray:
    """[N, D] descriptors of a folder's images (sorted), preprocessed like the training images."""
    from tqdm import tqdm

    from hierloc.training.data import preprocess_image
    from hierloc.utils.images import list_images, read_image

    paths = [p for p, _ in list_images([folder])]
    out = []
    for i in tqdm(range(0, len(paths), 32), desc=f"describe {folder.name}", unit="batch"):
        images = [preprocess_image(read_image(p), size, True)[:, :, 0] for p in paths[i:i + 32]]
        out.append(describer.describe_batch(images))
    return np.concatenate(out)


def recall_curve(reference: np.ndarray, queries: np.ndarray, tolerance: int = 0, max_n: int = 20) -> np.ndarray:
    """recall@1..max_n of exact nearest neighbours; query i's place is reference i (+- tolerance frames)."""
    import faiss

    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    _, ranked = index.search(np.ascontiguousarray(queries, dtype=np.float32), max_n)
    hits = np.abs(ranked - np.arange(len(queries))[:, None]) <= tolerance
    first = np.where(hits.any(1), hits.argmax(1), max_n)
    return np.array([np.mean(first < n) for n in range(1, max_n + 1)])


def evaluate_describer(label: str, describer, folders: dict, size: tuple[int, int], cache: Path | None) -> dict:
    """Recall curves (strict and +-2 frames) of one describer on the evaluation places."""
    if cache is not None and cache.is_file():
        data = np.load(cache)
        reference, queries = data["reference"], data["queries"]
    else:
        t0 = time.perf_counter()
        reference = describe_folder(describer, folders["eval"]["summer"], size)
        queries = describe_folder(describer, folders["eval"]["winter"], size)
        logger.info("%s: %.1f ms per image", label, (time.perf_counter() - t0) / (2 * len(reference)) * 1e3)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, reference=reference, queries=queries)
    strict = recall_curve(reference, queries)
    loose = recall_curve(reference, queries, tolerance=2)
    return {"recall": {f"@{n}": float(strict[n - 1]) for n in (1, 5, 10, 20)},
            "recall_pm2": {f"@{n}": float(loose[n - 1]) for n in (1, 5, 10, 20)},
            "curve": strict.tolist(), "curve_pm2": loose.tolist(), "descriptor_dim": int(reference.shape[1])}


def plot(results: dict, path: Path) -> None:
    """Recall@N curves of the teacher and the students (initial and trained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "curve", "same frame"), (axes[1], "curve_pm2", "+-2 frames")):
        for label, result in results.items():
            curve = result[key]
            ax.plot(range(1, len(curve) + 1), curve, label=label, linestyle="--" if "initial" in label else "-")
        ax.set_xlabel("N")
        ax.set_ylabel("recall@N")
        ax.set_title(f"Nordland summer -> winter, unseen places ({title})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    from hierloc.utils.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    """Run every stage and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hierloc_distill"), help="cache and outputs")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    parser.add_argument("--train-places", type=int, default=1500)
    parser.add_argument("--eval-places", type=int, default=1000)
    parser.add_argument("--no-extras", action="store_true", help="Nordland only (no Strecha / Sacre Coeur)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--teacher-dim", type=int, default=256)
    parser.add_argument("--teacher-clusters", type=int, default=64)
    parser.add_argument("--teacher-fit-images", type=int, default=1500)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the 0.35 student")
    parser.add_argument("--lr-imagenet", type=float, default=3e-4, help="learning rate of the ImageNet student")
    parser.add_argument("--freeze-imagenet-backbone", action="store_true",
                        help="train only the VLAD and FC layers of the ImageNet student (train_backbone: false)")
    parser.add_argument("--validation-size", type=int, default=192)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s", datefmt="%H:%M:%S")
    configure_threads(args.threads)
    if not (args.shared / "nordland").is_dir():
        raise SystemExit(f"{args.shared}/nordland not found: this benchmark needs the shared data")
    from hierloc.extraction import GlobalExtractor
    from hierloc.models import load_model
    from hierloc.training.model_setup import build_training_model, initialize_vlad_from_images
    from hierloc.training.tasks import make_task

    size = (args.height, args.width)
    work = args.work
    t_start = time.perf_counter()
    folders = prepare_folders(work, args.shared, args.train_places, args.eval_places, not args.no_extras)
    t0 = time.perf_counter()
    teacher = fit_teacher(work, folders, size, args)
    targets = export_teacher(work, teacher, folders, size)
    teacher_seconds = time.perf_counter() - t0
    results: dict[str, dict] = {"teacher densevlad": evaluate_describer("teacher", teacher, folders, size,
                                                                         work / "eval" / "teacher.npz")}
    report = {"machine": platform.platform(), "threads": args.threads, "image_size": list(size),
              "train_places": args.train_places, "eval_places": args.eval_places, "teacher": repr(teacher),
              "teacher_seconds": teacher_seconds, "students": {}}
    for name in args.students:
        config = student_config(name, folders, targets, size, args)
        # The untrained initialisation, exactly as training starts from it (incl. k-means VLAD centres).
        initial_cache = work / "eval" / f"{name}_initial.npz"
        initial = None
        if not initial_cache.is_file():
            task = make_task(config) if config["model"].get("vlad_init") else None
            initial = build_training_model(config["model"], None, target_dim=teacher.descriptor_dim)
            if task is not None:
                initialize_vlad_from_images(initial, task.sample_images(config["model"]["vlad_init_images"]))
            initial = GlobalExtractor(initial, device="cpu")
        results[f"{name} initial"] = evaluate_describer(f"{name} initial", initial, folders, size, initial_cache)
        t0 = time.perf_counter()
        summary = train_student(name, work, config)
        train_seconds = time.perf_counter() - t0
        trained = GlobalExtractor(load_model(name, weights=work / "experiments" / name / "model.pt"), device="cpu")
        results[f"{name} distilled"] = evaluate_describer(name, trained, folders, size,
                                                          work / "eval" / f"{name}_trained_{summary['iteration']}.npz")
        validation = summary["validation"]
        report["students"][name] = {
            "iterations": summary["iteration"], "batch_size": config["model"]["batch_size"],
            "seconds_per_iteration": summary["seconds_per_iteration"], "train_seconds_this_run": train_seconds,
            "validation_l2_before": validation[0]["l2_error"], "validation_l2_after": validation[-1]["l2_error"],
            "validation_curve": validation, "train_backbone": config["model"]["train_backbone"],
        }
    report["recall"] = {k: {kk: v[kk] for kk in ("recall", "recall_pm2", "descriptor_dim")} for k, v in results.items()}
    teacher_r5 = results["teacher densevlad"]["recall"]["@5"]
    print(f"\nNordland summer (map) -> winter (queries), {args.eval_places} unseen places, {size[1]}x{size[0]} gray")
    print(f"{'descriptor':34s} {'dim':>5s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'R@5 +-2':>8s} {'R@5 / teacher':>13s}")
    for label, result in results.items():
        r, loose = result["recall"], result["recall_pm2"]
        ratio = r["@5"] / teacher_r5 if teacher_r5 else float("nan")
        print(f"{label:34s} {result['descriptor_dim']:5d} {r['@1']:6.3f} {r['@5']:6.3f} {r['@10']:6.3f} "
              f"{loose['@5']:8.3f} {ratio:13.2f}")
    print(f"\n{'student':24s} {'iterations':>10s} {'batch':>5s} {'s/iter':>7s} {'val L2 before':>13s} {'after':>8s}")
    for name, s in report["students"].items():
        print(f"{name:24s} {s['iterations']:10d} {s['batch_size']:5d} {s['seconds_per_iteration']:7.3f} "
              f"{s['validation_l2_before']:13.4f} {s['validation_l2_after']:8.4f}")
    report["total_seconds"] = time.perf_counter() - t_start
    png = work / "distill_recall.png"
    plot(results, png)
    print(f"\nrecall curves: {png}; experiments (TensorBoard, checkpoints, model.pt): {work / 'experiments'}")
    if args.json:
        atomic_write_text(args.json, to_json_text(report, indent=2))
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
