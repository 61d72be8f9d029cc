"""Evidence that distillation learns: MobileNetVLAD students distilled from DenseVLAD, on the CPU, over seeds.

The teacher needs no weights: DenseVLAD (dense RootSIFT, VLAD, PCA-whitening) with a vocabulary
fitted on the training images. Students: `mobilenetvlad` (depth 0.35, seeded initialisation) and
`mobilenetvlad_imagenet` (ImageNet MobileNetV2 1.0, VLAD centres by k-means), their FC layer sized
to the teacher. Data from ../shared/data (never copied into the repository; the work folder holds
links): Nordland summer and winter frames of the first `--train-places` places (upscaled 64x32 ->
128x64), plus the Strecha and Sacre Coeur photos (squeezed to the same size), with photometric
augmentation and small crops. Evaluation on the last `--eval-places` places, which training
never sees: summer frames are the map, winter frames the queries, the same file name is the same
place (recall@N strict; "+-2" also accepts the two neighbouring frames on each side).

Seeds: the whole benchmark runs for seeds 0..`--seeds`-1. A seed sets the teacher's fitting images,
vocabulary (k-means) and PCA, each student's initialisation (network and VLAD k-means), data order
and augmentation. For a given seed the numbers are the same whatever `--threads`: every process
computes on ONE thread (CPU convolutions and reductions give other bits with other thread counts),
and `--threads N` runs N such processes side by side (teachers, descriptor exports, evaluations
and trainings of different seeds and students), which on a small CPU is also faster than threads
inside one small-batch training.

The recipe (see `--help`): the loss is the original's plain L2 (`--l2-weight`) plus, with
`--similarity-weight W`, W times the KL of the teacher's and the student's similarities to the
teacher descriptors of the training images (`hierloc.training.losses.similarity_distillation_loss`,
`--similarity-temperature`, `--similarity-anchors`); the learning rate steps to a tenth for the last
20 % or follows a cosine (`--schedule`, `--warmup`); capacity (`--endpoint`, `--resize-factor`), data
(`--student-places`: more Nordland places for the students only) and augmentation (`--photometric`,
`--crop-scale`) are options too.

Prints the mean and spread (half the min-max range) over seeds and the per-seed figures, writes
JSON (`--json`: per seed, mean/min/max, and `ratio_r5` = student R@5 / teacher R@5 of the same seed)
and a PNG of the mean recall curves. Every stage is cached (per seed; teacher descriptors are
resumable, training resumes), so a rerun only does what is left. A work folder holds one set of
settings (`settings.json`), other settings need another `--work`; the teachers, their training
targets and evaluation descriptors live in `--teacher-cache` (default WORK/teachers), which work
folders of other student settings but the same teacher settings may share.

    python bench/distill_evidence.py --work /tmp/hierloc_distill --teacher-cache /tmp/hierloc_teachers \
        --students mobilenetvlad --similarity-weight 1 --iterations 9000 --seeds 3 --threads 2 --json out.json

(the README's recipe: R@5 1.52x the teacher's over seeds 0-2, every seed >= 1.27x; 19 min on 2 cores.)
"""

from __future__ import annotations

import os

# One thread per process, set before numpy, torch, faiss or OpenCV load their thread pools (see above).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of parallel processes would interleave

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from hierloc.utils.io import atomic_path, atomic_write_text, to_json_text  # noqa: E402
from hierloc.utils.threads import configure_threads  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EXTRA_FOLDERS = {"strecha_fountain": "strecha/fountain-P11/images", "strecha_herzjesu": "strecha/Herz-Jesus-P25/images",
                 "sacre_coeur": "sacre_coeur/mapping"}
STUDENTS = ("mobilenetvlad", "mobilenetvlad_imagenet")
TEACHER = "teacher densevlad"
# Arguments that change the teachers: a teacher cache holds one set of them (several work folders may share it).
TEACHER_SETTINGS = ("train_places", "eval_places", "no_extras", "height", "width", "teacher_dim", "teacher_clusters",
                    "teacher_fit_images")
# Arguments that change results: a work folder's caches hold one set of them.
RESULT_SETTINGS = TEACHER_SETTINGS + (
    "student_places", "iterations", "batch_size", "lr", "lr_imagenet", "freeze_imagenet_backbone", "validation_size",
    "schedule", "warmup", "l2_weight", "similarity_weight", "similarity_temperature", "similarity_anchors",
    "endpoint", "resize_factor", "crop_scale", "photometric", "device")
# Settings added later, as the folders written before them were computed.
SETTINGS_OF_OLDER_FOLDERS = {"device": "cpu"}
# Photometric augmentation of the students' training images (hierloc.training.augmentation); "strong" widens
# the ranges towards summer -> winter changes (snow brightens, low sun darkens, contrast collapses).
PHOTOMETRIC = {
    "off": None,
    "default": {"primitives": ["random_brightness", "random_contrast", "additive_gaussian_noise", "additive_shade"]},
    "strong": {"primitives": ["random_brightness", "random_contrast", "additive_gaussian_noise", "additive_shade"],
               "params": {"random_brightness": {"delta_range": [-90, 90]},
                          "random_contrast": {"strength_range": [0.2, 1.8]},
                          "additive_gaussian_noise": {"stddev_range": [0, 12], "prob": 0.5},
                          "additive_shade": {"transparency_range": [-0.7, 0.7], "prob": 0.8}}},
}

logger = logging.getLogger("hierloc.bench")


def single_thread_process() -> None:
    """Initialiser of every worker process (and the main one): one compute thread, INFO logging."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(process)d %(levelname)s] %(message)s",
                        datefmt="%H:%M:%S")
    configure_threads(1)


def link_folder(target: Path, files: list[Path]) -> Path:
    """A folder of symbolic links to `files` (the shared data stays where it is)."""
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = target / f.name
        if not link.exists():
            os.symlink(f, link)
    return target


def prepare_folders(work: Path, shared: Path, train_places: int, eval_places: int, extras: bool,
                    student_places: int | None = None) -> dict:
    """Training and evaluation image folders (links) in the work folder.

    "train": the teacher's and the students' folders; "more": places `train_places` .. `student_places`,
    which only the students train on (the teacher describes them but is not fitted on them).
    """
    summer = sorted((shared / "nordland" / "summer").iterdir())
    names = [p.name for p in summer]
    student_places = max(student_places or train_places, train_places)
    if student_places + eval_places > len(names):
        raise SystemExit(f"{student_places} + {eval_places} places asked, Nordland has {len(names)}")
    train_names, eval_names = names[:train_places], names[-eval_places:]
    folders = {"train": {}, "more": {}, "eval": {}}
    for season in ("summer", "winter"):
        base = shared / "nordland" / season
        folders["train"][f"nordland_{season}"] = link_folder(work / "data" / "train" / f"nordland_{season}",
                                                             [base / n for n in train_names])
        folders["eval"][season] = link_folder(work / "data" / "eval" / season, [base / n for n in eval_names])
        if student_places > train_places:
            folders["more"][f"nordland_{season}_more"] = link_folder(
                work / "data" / "more" / f"nordland_{season}_more",
                [base / n for n in names[train_places:student_places]])
    if extras:
        for label, relative in EXTRA_FOLDERS.items():
            source = shared / relative
            if source.is_dir():
                files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".png"))
                folders["train"][label] = link_folder(work / "data" / "train" / label, files)
    return folders


def check_settings(work: Path, args: argparse.Namespace, keys: tuple[str, ...] = RESULT_SETTINGS,
                   option: str = "--work") -> dict:
    """The settings `keys` of args, recorded in WORK/settings.json; other settings need another folder."""
    settings = {key: getattr(args, key) for key in keys}
    path = work / "settings.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        stored = {**SETTINGS_OF_OLDER_FOLDERS, **stored}
        changed = {k: (stored.get(k), v) for k, v in settings.items() if stored.get(k) != v}
        if changed:
            differences = ", ".join(f"{k}: {a} there, {b} now" for k, (a, b) in changed.items())
            raise SystemExit(f"{work} holds results of other settings ({differences}): choose another {option}")
    else:
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, to_json_text(settings, indent=2))
    return settings


# ------------------------------------------------------------------ jobs (each runs in a one-thread process)


def fit_teacher(path: str, paths: list[str], size: tuple[int, int], clusters: int, dim: int, seed: int) -> float:
    """DenseVLAD fitted on preprocessed training images chosen with `seed`, saved to `path`; seconds taken."""
    from hierloc.models.densevlad import DenseVLAD, DenseVLADConfig
    from hierloc.training.data import preprocess_image
    from hierloc.utils.images import read_image

    t0 = time.perf_counter()
    images = [preprocess_image(read_image(p), size, True)[:, :, 0] for p in paths]
    config = DenseVLADConfig(num_clusters=clusters, pca_dim=dim, whiten=True)
    teacher = DenseVLAD.fit(images, config, vocabulary_images=min(300, len(images)), pca_images=len(images),
                            seed=seed, progress=False)
    teacher.save(path)
    return time.perf_counter() - t0


def export_teacher(teacher_path: str, folder: str, out: str, size: tuple[int, int]) -> None:
    """Teacher descriptors (NAME.npy) of one training folder, resumable."""
    from hierloc.models.densevlad import DenseVLAD
    from hierloc.training.export_descriptors import export_descriptors

    export_descriptors(DenseVLAD.load(teacher_path), [folder], out, preprocessing={"resize": list(size),
                                                                                   "grayscale": True},
                       batch_size=16, model_label="densevlad", io_workers=1)


def make_describer(spec: dict):
    """The describer a job spec names: the teacher file, a trained model, or a student's initialisation."""
    from hierloc.extraction import GlobalExtractor

    if spec["kind"] == "teacher":
        from hierloc.models.densevlad import DenseVLAD

        return DenseVLAD.load(spec["path"])
    if spec["kind"] == "trained":
        from hierloc.models import load_model

        return GlobalExtractor(load_model(spec["name"], weights=spec["path"]), device=spec["device"])
    # The untrained initialisation, exactly as training starts from it (incl. k-means VLAD centres).
    from hierloc.training.model_setup import build_training_model, initialize_vlad_from_images
    from hierloc.training.tasks import make_task

    config = spec["config"]
    model = build_training_model(config["model"], None, target_dim=spec["target_dim"], init_seed=config["seed"])
    if config["model"].get("vlad_init"):
        task = make_task(config)
        initialize_vlad_from_images(model, task.sample_images(int(config["model"]["vlad_init_images"])),
                                    seed=int(config["seed"]))
    return GlobalExtractor(model, device=spec["device"])


def describe_folder(spec: dict, folder: str, size: tuple[int, int], cache: str) -> float:
    """[N, D] descriptors of a folder's images (sorted) into `cache` (.npy); milliseconds per image."""
    from hierloc.training.data import preprocess_image
    from hierloc.utils.images import list_images, read_image

    describer = make_describer(spec)
    paths = [p for p, _ in list_images([Path(folder)])]
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(paths), 32):  # fixed batches: the same arithmetic in every run
        images = [preprocess_image(read_image(p), size, True)[:, :, 0] for p in paths[i:i + 32]]
        out.append(describer.describe_batch(images))
    seconds = time.perf_counter() - t0
    with atomic_path(Path(cache), suffix=".npy") as tmp:
        np.save(tmp, np.concatenate(out).astype(np.float32))
    return 1e3 * seconds / max(len(paths), 1)


def train_student(experiment: str, config: dict) -> dict:
    """Train (or resume, or reuse) one student; returns its training summary."""
    from hierloc.training.checkpoints import latest_checkpoint
    from hierloc.training.trainer import train

    summary_path = Path(experiment) / "training_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("iteration") == config["train_iter"] and not summary.get("stopped_by"):
            return summary
    t0 = time.perf_counter()
    summary = train(config, experiment, resume=latest_checkpoint(experiment) is not None, progress=False)
    return dict(summary, train_seconds_this_run=time.perf_counter() - t0)


# ------------------------------------------------------------------ stages


def student_config(name: str, folders: dict, targets: dict, size: tuple[int, int], seed: int, args) -> dict:
    """The distillation config of one student and seed (the shipped config with the evidence's sizes)."""
    from hierloc.training.config import load_config

    student_folders = {**folders["train"], **folders["more"]}
    labels = list(student_folders)
    augmentation: dict = {}
    if PHOTOMETRIC[args.photometric]:
        augmentation["photometric"] = {"enable": True, **PHOTOMETRIC[args.photometric]}
    if args.crop_scale < 1.0:
        augmentation["crop"] = {"enable": True, "scale": [args.crop_scale, 1.0], "ratio": [0.9, 1.1]}
    overrides = {
        "data": {"image_folders": [str(student_folders[k]) for k in labels],
                 "descriptor_folders": [str(targets[k]) for k in labels], "truncate": None,
                 "validation_size": args.validation_size,
                 "preprocessing": {"resize": list(size), "grayscale": True}, "cache_in_memory": True,
                 "num_workers": 0, "augmentation": augmentation},
        "model": {"batch_size": args.batch_size, "eval_batch_size": 32, "reduction_dim": "auto",
                  "learning_rate": [args.lr, args.lr / 10], "learning_rate_step": [int(args.iterations * 0.8)],
                  "learning_rate_schedule": args.schedule, "warmup_iter": args.warmup,
                  "distill_l2_weight": args.l2_weight, "distill_similarity_weight": args.similarity_weight,
                  "distill_temperature": args.similarity_temperature, "distill_anchors": args.similarity_anchors,
                  "endpoint": args.endpoint, "resize_factor": args.resize_factor},
        "train_iter": args.iterations, "validation_interval": max(1, args.iterations // 10),
        "save_interval": max(1, args.iterations // 5), "keep_checkpoints": 2, "log_interval": 25, "seed": seed,
        "device": args.device,
    }
    if name == "mobilenetvlad_imagenet":
        overrides["model"].update({"vlad_init": "kmeans", "vlad_init_images": 100,
                                   "train_backbone": not args.freeze_imagenet_backbone,
                                   "learning_rate": [args.lr_imagenet, args.lr_imagenet / 10]})
        base = "mobilenetvlad_imagenet_train_distill"
    else:
        base = "mobilenetvlad_train_distill"
    if args.schedule == "cosine":  # from the peak down to a hundredth of it
        peak = overrides["model"]["learning_rate"][0]
        overrides["model"].update({"learning_rate": [peak, peak / 100], "learning_rate_step": []})
    return load_config(base, overrides)


def run_jobs(pool: ProcessPoolExecutor, jobs: dict) -> dict:
    """Run {key: (function, *arguments)} on the pool; {key: result}, re-raising the first failure."""
    futures = {key: pool.submit(function, *arguments) for key, (function, *arguments) in jobs.items()}
    return {key: future.result() for key, future in futures.items()}


def recall_curve(reference: np.ndarray, queries: np.ndarray, tolerance: int = 0, max_n: int = 20) -> np.ndarray:
    """recall@1..max_n of exact nearest neighbours; query i's place is reference i (+- tolerance frames)."""
    import faiss

    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    _, ranked = index.search(np.ascontiguousarray(queries, dtype=np.float32), max_n)
    hits = np.abs(ranked - np.arange(len(queries))[:, None]) <= tolerance
    first = np.where(hits.any(1), hits.argmax(1), max_n)
    return np.array([np.mean(first < n) for n in range(1, max_n + 1)])


def recall_of(cache_prefix: Path) -> dict:
    """Recall curves (strict and +-2 frames) of the cached summer (map) and winter (query) descriptors."""
    reference = np.load(f"{cache_prefix}_summer.npy")
    queries = np.load(f"{cache_prefix}_winter.npy")
    strict = recall_curve(reference, queries)
    loose = recall_curve(reference, queries, tolerance=2)
    return {"recall": {f"@{n}": float(strict[n - 1]) for n in (1, 5, 10, 20)},
            "recall_pm2": {f"@{n}": float(loose[n - 1]) for n in (1, 5, 10, 20)},
            "curve": strict.tolist(), "curve_pm2": loose.tolist(), "descriptor_dim": int(reference.shape[1])}


def spread(values: list[float]) -> dict:
    """mean, min, max of per-seed values."""
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def plot(mean_curves: dict, path: Path, seeds: int) -> None:
    """Mean recall@N curves over seeds of the teacher and the students (initial and trained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "curve", "same frame"), (axes[1], "curve_pm2", "+-2 frames")):
        for label, curves in mean_curves.items():
            curve = curves[key]
            ax.plot(range(1, len(curve) + 1), curve, label=label, linestyle="--" if "initial" in label else "-")
        ax.set_xlabel("N")
        ax.set_ylabel(f"recall@N (mean of {seeds} seeds)")
        ax.set_title(f"Nordland summer -> winter, unseen places ({title})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    """Run every stage for every seed and report."""
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
    parser.add_argument("--teacher-cache", type=Path, default=None,
                        help="folder of the teachers, their training targets and evaluation descriptors (default "
                             "WORK/teachers); work folders whose teacher settings agree may share one")
    parser.add_argument("--student-places", type=int, default=None,
                        help="the students also train on Nordland places TRAIN_PLACES..STUDENT_PLACES (described by "
                             "the teacher, which is fitted on the first TRAIN_PLACES only); default: TRAIN_PLACES")
    parser.add_argument("--schedule", choices=("step", "cosine"), default="step",
                        help="learning rate: step (a tenth for the last 20%%) or cosine (down to a hundredth)")
    parser.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up iterations")
    parser.add_argument("--l2-weight", type=float, default=1.0, help="weight of the L2 distillation loss")
    parser.add_argument("--similarity-weight", type=float, default=0.0,
                        help="weight of the teacher-similarity KL term (hierloc.training.losses."
                             "similarity_distillation_loss); 0: plain L2")
    parser.add_argument("--similarity-temperature", type=float, default=0.05)
    parser.add_argument("--similarity-anchors", type=int, default=4096,
                        help="teacher descriptors of training images the similarities are taken to")
    parser.add_argument("--endpoint", default="layer_18", help="MobileNetV2 layer the students pool (layer_K)")
    parser.add_argument("--resize-factor", type=float, default=None,
                        help="the students upscale their input by this factor (more VLAD positions at 128x64)")
    parser.add_argument("--crop-scale", type=float, default=0.8, help="random crops keep this share or more (1: none)")
    parser.add_argument("--photometric", choices=tuple(PHOTOMETRIC), default="default",
                        help="photometric augmentation of the students' training images")
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--seeds", type=int, default=3, help="run seeds 0..SEEDS-1 (default 3)")
    parser.add_argument("--threads", type=int, default=2,
                        help="processes run side by side, each on one thread (results do not depend on it)")
    parser.add_argument("--device", default="cpu",
                        help="students' training and description: cpu (default) or cuda[:N]; on a GPU, larger "
                             "inputs with --height/--width (the teacher stays on the CPU)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--teachers-only", action="store_true",
                        help="only fill the teacher cache (teachers, training targets, evaluation descriptors)")
    args = parser.parse_args()
    if args.seeds < 1 or args.threads < 1:
        raise SystemExit("--seeds and --threads must be at least 1")
    single_thread_process()
    if not (args.shared / "nordland").is_dir():
        raise SystemExit(f"{args.shared}/nordland not found: this benchmark needs the shared data")
    from hierloc.utils.images import list_images

    size = (args.height, args.width)
    work = args.work
    seeds = list(range(args.seeds))
    t_start = time.perf_counter()
    args.student_places = max(args.student_places or args.train_places, args.train_places)
    settings = check_settings(work, args)
    teacher_cache = args.teacher_cache or work / "teachers"
    check_settings(teacher_cache, args, TEACHER_SETTINGS, "--teacher-cache")
    folders = prepare_folders(work, args.shared, args.train_places, args.eval_places, not args.no_extras,
                              args.student_places)
    train_paths = [str(p) for folder in folders["train"].values() for p, _ in list_images([folder])]
    seed_dirs = {seed: work / f"seed-{seed}" for seed in seeds}
    teacher_dirs = {seed: teacher_cache / f"seed-{seed}" for seed in seeds}
    teacher_files = {seed: teacher_dirs[seed] / "densevlad.npz" for seed in seeds}
    for seed in seeds:
        (teacher_dirs[seed] / "eval").mkdir(parents=True, exist_ok=True)
        (seed_dirs[seed] / "eval").mkdir(parents=True, exist_ok=True)
    eval_folders = {season: str(folders["eval"][season]) for season in ("summer", "winter")}

    def eval_prefix(seed: int, label: str) -> Path:
        return (teacher_dirs if label == TEACHER else seed_dirs)[seed] / "eval" / label.replace(" ", "_")

    def describe_jobs(seed: int, label: str, spec: dict) -> dict:
        prefix = eval_prefix(seed, label)
        return {(seed, label, season): (describe_folder, spec, folder, size, f"{prefix}_{season}.npy")
                for season, folder in eval_folders.items() if not Path(f"{prefix}_{season}.npy").is_file()}

    context = multiprocessing.get_context("spawn")  # fresh processes: one thread from their first import
    report: dict = {"benchmark": "distill_evidence", "machine": platform.platform(), "processes": args.threads,
                    "threads_per_process": 1, "seeds": seeds, "image_size": list(size), "settings": settings,
                    "per_seed": {str(seed): {"students": {}} for seed in seeds}}
    with ProcessPoolExecutor(max_workers=args.threads, mp_context=context, initializer=single_thread_process) as pool:
        # 1. one teacher per seed, fitted on training images the seed chooses
        jobs = {}
        for seed in seeds:
            if not teacher_files[seed].is_file():
                chosen = np.random.default_rng(seed).choice(len(train_paths), replace=False,
                                                            size=min(len(train_paths), args.teacher_fit_images))
                jobs[seed] = (fit_teacher, str(teacher_files[seed]), [train_paths[i] for i in sorted(chosen)], size,
                              args.teacher_clusters, args.teacher_dim, seed)
        fit_seconds = run_jobs(pool, jobs)
        # 2. teacher descriptors of the training folders, teacher descriptors of the evaluation places
        described = {**folders["train"], **folders["more"]}
        targets = {seed: {label: teacher_dirs[seed] / "descriptors" / label for label in described} for seed in seeds}
        jobs = {(seed, label): (export_teacher, str(teacher_files[seed]), str(folder), str(targets[seed][label]), size)
                for seed in seeds for label, folder in described.items()}
        for seed in seeds:
            jobs.update(describe_jobs(seed, TEACHER, {"kind": "teacher", "path": str(teacher_files[seed])}))
        run_jobs(pool, jobs)
        if args.teachers_only:
            print(f"teachers of seeds {seeds} in {teacher_cache}: {time.perf_counter() - t_start:.0f} s")
            return
        # 3. students: their initialisation described, then trained (the long jobs, side by side)
        configs = {(seed, name): student_config(name, folders, targets[seed], size, seed, args)
                   for seed in seeds for name in args.students}
        from hierloc.models.densevlad import DenseVLAD

        teacher_dims = {seed: DenseVLAD.load(teacher_files[seed]).descriptor_dim for seed in seeds}
        jobs = {}
        for (seed, name), config in configs.items():
            jobs[(seed, name, "train")] = (train_student, str(seed_dirs[seed] / "experiments" / name), config)
            jobs.update(describe_jobs(seed, f"{name} initial", {"kind": "initial", "config": config,
                                                               "target_dim": teacher_dims[seed],
                                                               "device": args.device}))
        summaries = {key[:2]: value for key, value in run_jobs(pool, jobs).items() if key[2] == "train"}
        # 4. the trained students described
        jobs = {}
        for seed, name in configs:
            jobs.update(describe_jobs(seed, f"{name} distilled", {
                "kind": "trained", "name": name, "device": args.device,
                "path": str(seed_dirs[seed] / "experiments" / name / "model.pt")}))
        run_jobs(pool, jobs)
    labels = [TEACHER] + [f"{name} {stage}" for name in args.students for stage in ("initial", "distilled")]
    results = {seed: {label: recall_of(eval_prefix(seed, label)) for label in labels} for seed in seeds}
    for seed in seeds:
        entry = report["per_seed"][str(seed)]
        entry["teacher"] = repr(DenseVLAD.load(teacher_files[seed]))
        entry["teacher_fit_seconds_this_run"] = fit_seconds.get(seed)
        entry["recall"] = {label: {k: results[seed][label][k] for k in ("recall", "recall_pm2", "descriptor_dim")}
                           for label in labels}
        for name in args.students:
            summary, config = summaries[(seed, name)], configs[(seed, name)]
            validation = summary["validation"]
            entry["students"][name] = {
                "iterations": summary["iteration"], "batch_size": config["model"]["batch_size"],
                "seconds_per_iteration": summary["seconds_per_iteration"],
                "train_seconds_this_run": summary.get("train_seconds_this_run"),
                "validation_l2_before": validation[0]["l2_error"], "validation_l2_after": validation[-1]["l2_error"],
                "validation_curve": validation, "train_backbone": config["model"]["train_backbone"],
                "ratio_r5": results[seed][f"{name} distilled"]["recall"]["@5"] / results[seed][TEACHER]["recall"]["@5"]}
    report["mean"] = {label: {kind: {n: spread([results[s][label][kind][n] for s in seeds])
                                     for n in ("@1", "@5", "@10", "@20")} for kind in ("recall", "recall_pm2")}
                      for label in labels}
    report["ratio_r5"] = {}
    for name in args.students:
        for stage in ("initial", "distilled"):
            ratios = [results[s][f"{name} {stage}"]["recall"]["@5"] / results[s][TEACHER]["recall"]["@5"]
                      for s in seeds]
            key = name if stage == "distilled" else f"{name} initial"
            report["ratio_r5"][key] = dict(spread(ratios), per_seed=ratios)

    def cell(values: list[float], width: int) -> str:
        if len(values) == 1:
            return f"{values[0]:{width}.3f}"
        return f"{np.mean(values):.3f}±{(max(values) - min(values)) / 2:.3f}".rjust(width)

    print(f"\nNordland summer (map) -> winter (queries), {args.eval_places} unseen places, {size[1]}x{size[0]} gray; "
          f"mean ± half the min-max range over seeds {seeds}")
    print(f"{'descriptor':34s} {'dim':>5s} {'R@1':>11s} {'R@5':>11s} {'R@10':>11s} {'R@5 +-2':>11s} "
          f"{'R@5 / teacher':>13s}")
    for label in labels:
        def values(kind: str, n: str, current: str = label) -> list[float]:
            return [results[s][current][kind][n] for s in seeds]

        ratios = [a / b if b else float("nan") for a, b in zip(values("recall", "@5"), values("recall", "@5", TEACHER))]
        print(f"{label:34s} {results[seeds[0]][label]['descriptor_dim']:5d} {cell(values('recall', '@1'), 11)} "
              f"{cell(values('recall', '@5'), 11)} {cell(values('recall', '@10'), 11)} "
              f"{cell(values('recall_pm2', '@5'), 11)} {cell(ratios, 13)}")
    print(f"\nper seed: R@5 (R@5 / teacher)\n{'descriptor':34s} " + " ".join(f"{'seed ' + str(s):>14s}" for s in seeds))
    for label in labels:
        row = []
        for s in seeds:
            r5, t5 = results[s][label]["recall"]["@5"], results[s][TEACHER]["recall"]["@5"]
            row.append(f"{r5:.3f} ({r5 / t5 if t5 else float('nan'):.2f})".rjust(14))
        print(f"{label:34s} " + " ".join(row))
    print(f"\n{'student':24s} {'iterations':>10s} {'batch':>5s} {'s/iter':>7s} {'val L2 before':>13s} {'after':>13s}")
    for name in args.students:
        entries = [report["per_seed"][str(s)]["students"][name] for s in seeds]
        print(f"{name:24s} {entries[0]['iterations']:10d} {entries[0]['batch_size']:5d} "
              f"{np.mean([e['seconds_per_iteration'] or 0.0 for e in entries]):7.3f} "
              f"{cell([e['validation_l2_before'] for e in entries], 13)} "
              f"{cell([e['validation_l2_after'] for e in entries], 13)}")
    report["total_seconds"] = time.perf_counter() - t_start
    png = work / "distill_recall.png"
    plot({label: {key: np.mean([results[s][label][key] for s in seeds], axis=0).tolist()
                  for key in ("curve", "curve_pm2")} for label in labels}, png, len(seeds))
    print(f"\nrecall curves: {png}; experiments (TensorBoard, checkpoints, model.pt): {work}/seed-*/experiments; "
          f"{report['total_seconds']:.0f} s")
    if args.json:
        atomic_write_text(args.json, to_json_text(report, indent=2))
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
