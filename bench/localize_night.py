"""Sacre Coeur: SfM map of the ten mapping photos, then localize the night photo (no ground truth exists).

For each method: SfM (pycolmap incremental mapping on our matches; cameras from EXIF or guessed and
refined), then the night query (2816x2112, EXIF focal length) is localized against it. There is no
ground-truth pose, so the evidence is the inlier count, the consistency of the pose with the map
cameras, and a PNG of the inlier matches to look at. Prints a table, writes JSON (--json), the maps
and PNGs to --out.

Usage: python bench/localize_night.py [--data ../shared/data/sacre_coeur] [--methods sift,aliked+lightglue]
"""

from __future__ import annotations

import hierloc  # noqa: F401  (first: it stops OpenBLAS threads spinning, which it must do before numpy loads)

# isort: split

import argparse
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from hierloc.evaluation.pose_errors import align_similarity, pose_error
from hierloc.localization import GlobalConfig, Localizer, LocalizerConfig, MapBuildConfig, SceneMap, build_scene_map
from hierloc.localization.visualize import localization_figure
from hierloc.maps import load_map
from hierloc.utils.images import read_image
from hierloc.utils.io import atomic_path, atomic_write_text, to_json_text
from hierloc.utils.threads import configure_threads

METHODS = {
    "sift": ("sift", {"resize_max": 1024}, "mnn-ratio"),
    "xfeat+lighterglue": ("xfeat", {"resize_max": 1024}, "lighterglue"),
    "aliked+lightglue": ("aliked", {"resize_max": 1024, "max_keypoints": 2048}, "lightglue"),
}


def main() -> None:
    """Build, localize, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sacre_coeur")
    parser.add_argument("--methods", default="sift,aliked+lightglue",
                        help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_night"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--reuse-maps", action="store_true", help="load the maps of an earlier run from --out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    configure_threads(args.threads)
    mapping, query_path = args.data / "mapping", args.data / "query_from_PR489" / "night.jpg"
    if not mapping.is_dir() or not query_path.is_file():
        parser.error(f"{args.data} lacks mapping/ or query_from_PR489/night.jpg")
    args.out.mkdir(parents=True, exist_ok=True)
    query = read_image(query_path)
    rows, scenes = [], {}
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        features, options, matcher = METHODS[method]
        config = MapBuildConfig(features=features, feature_options=options, matcher=matcher, pairs="exhaustive",
                                mode="sfm", global_model=GlobalConfig())
        t0 = time.perf_counter()
        if args.reuse_maps and (args.out / f"map_{method}" / "map.json").is_file():
            scene = SceneMap.load(args.out / f"map_{method}")
            report = {"images": len(list(mapping.glob("*.jpg")))}
        else:
            scene, report = build_scene_map(load_map(mapping), config)
            scene.save(args.out / f"map_{method}")
        build_seconds = time.perf_counter() - t0
        scenes[method] = scene
        localizer = Localizer(scene, LocalizerConfig(num_retrieved=5))
        result = localizer.localize(query, None, "night.jpg", image_path=query_path)
        centres = np.stack([im.pose[:3, 3] for im in scene.images])
        nearest = None
        if result.success:
            # No ground truth: how far the query camera is from the map cameras, in units of their spread.
            spread = float(np.median(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
            nearest = float(np.min(np.linalg.norm(centres - result.T_world_cam[:3, 3], axis=1))) / spread
        figure = localization_figure(query, result, lambda name: read_image(mapping / name), scene, max_references=2)
        png = args.out / f"night_{method}.png"
        with atomic_path(png, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
        row = {"method": method, "registered": f"{len(scene)}/{report['images']}", "points": scene.num_points,
               "build_s": build_seconds, "success": result.success, "inliers": result.num_inliers,
               "correspondences": result.num_correspondences, "camera": result.camera.params.tolist(),
               "camera_source": result.camera_source, "place": result.place, "timings_s": result.timings,
               "nearest_map_camera_in_spreads": nearest, "png": str(png), "message": result.message,
               "T_world_cam": None if not result.success else result.T_world_cam.tolist()}
        rows.append(row)
        print(f"{method}: map {row['registered']} images, {scene.num_points} points ({build_seconds:.0f} s); night: "
              + (f"{result.num_inliers} inliers of {result.num_correspondences}, focal {result.camera.params[0]:.0f} "
                 f"({result.camera_source})" if result.success else f"FAILED: {result.message}")
              + f", {1000 * result.timings['total']:.0f} ms; {png}", flush=True)
    # No ground truth: do the methods agree? Each map is brought onto the first one by a similarity from
    # their common images, and the night poses are compared there (in units of the first map's camera spread).
    localized = [r for r in rows if r["success"]]
    agreement = []
    if len(localized) > 1:
        ref = scenes[localized[0]["method"]]
        ref_poses = {im.name: im.pose for im in ref.images}
        centres = np.stack([im.pose[:3, 3] for im in ref.images])
        spread = float(np.median(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
        for row in localized[1:]:
            other = scenes[row["method"]]
            similarity = align_similarity({im.name: im.pose for im in other.images}, ref_poses)
            dt, dr = pose_error(similarity.transform_pose(np.array(row["T_world_cam"])),
                                np.array(localized[0]["T_world_cam"]))
            agreement.append({"methods": [localized[0]["method"], row["method"]], "position_in_spreads": dt / spread,
                              "rotation_deg": dr})
            print(f"night pose, {row['method']} vs {localized[0]['method']} (maps aligned by their images): "
                  f"{dt / spread:.3f} camera spreads apart, {dr:.2f} deg")
    payload = {"load_average": os.getloadavg(), "results": rows, "agreement": agreement}
    if args.json:
        atomic_write_text(args.json, to_json_text(payload, indent=2, default=float))
        print(f"JSON written to {args.json}")
    print(f"maps and PNGs in {args.out}/")


if __name__ == "__main__":
    main()
