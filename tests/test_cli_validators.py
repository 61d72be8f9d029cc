"""Count and size options are checked while the arguments are parsed, before anything is loaded."""

from __future__ import annotations

import argparse

import pytest

from hierloc.cli.main import build_parser, main
from hierloc.cli.validators import field_of_view, non_negative_float, non_negative_int, positive_float, positive_int


def test_validators_accept_and_refuse():
    assert positive_int("3") == 3 and non_negative_int("0") == 0
    assert positive_float("0.5") == 0.5 and non_negative_float("0") == 0.0 and field_of_view("60") == 60.0
    for function, bad in ((positive_int, "0"), (positive_int, "-5"), (positive_int, "2.5"), (non_negative_int, "-1"),
                          (positive_float, "0"), (positive_float, "inf"), (non_negative_float, "-0.1"),
                          (non_negative_float, "nan"), (field_of_view, "180"), (field_of_view, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            function(bad)


def test_localize_refuses_negative_min_inliers_before_loading(tmp_path, capsys):
    missing_map = tmp_path / "no_such_map"  # loading it would fail with exit status 1, not 2
    with pytest.raises(SystemExit) as exit_info:
        main(["localize", str(missing_map), str(tmp_path / "q.jpg"), "--min-inliers", "-5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --min-inliers: must be a positive integer" in err and "-5" in err
    assert not missing_map.exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("argv", [
    ["localize", "m", "q.jpg", "--max-places", "0"],
    ["localize", "m", "q.jpg", "--num-retrieved", "-1"],
    ["localize", "m", "q.jpg", "--ransac-max-error", "0"],
    ["localize", "m", "q.jpg", "--default-fov", "0"],
    ["localize", "m", "q.jpg", "--threads", "0"],
    ["map", "build", "src", "--out", "o", "--max-keypoints", "0"],
    ["map", "build", "src", "--out", "o", "--resize-max", "-1"],
    ["map", "build", "src", "--out", "o", "--num-neighbors", "0"],
    ["extract", "x", "--out", "o.h5", "--batch-size", "0"],
    ["export-descriptors", "x", "--out", "o", "--batch-size", "0"],
    ["export-descriptors", "x", "--out", "o", "--resize", "480", "0"],
    ["download-landmarks", "i.csv", "o", "--workers", "0"],
    ["download-landmarks", "i.csv", "o", "--retries", "-1"],
    ["evaluate", "--dataset", "folders", "d", "--max-n", "0"],
    ["evaluate", "--dataset", "folders", "d", "--batch-size", "0"],
    ["evaluate", "--dataset", "folders", "d", "--step", "0"],
    ["export-model", "mobilenetvlad", "--out", "o", "--height", "0"],
])
def test_bad_counts_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_zero_where_zero_means_something():
    args = build_parser().parse_args(["localize", "m", "q.jpg", "--num-retrieved", "0", "--matches-png", "0"])
    assert args.num_retrieved == 0 and args.matches_png == 0
    args = build_parser().parse_args(["download-landmarks", "i.csv", "o", "--max-size", "0", "--retries", "0"])
    assert args.max_size == 0 and args.retries == 0
