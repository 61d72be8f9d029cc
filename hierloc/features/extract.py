"""Local features of many images into an hloc-layout file, resumable, with image decoding in threads."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from .base import LocalFeatureExtractor
from .h5io import FeatureFileError, FeatureWriter, feature_names, read_feature_config, read_features
from .types import LocalFeatures

logger = logging.getLogger(__name__)

ImageSource = tuple[str, Callable[[], np.ndarray]]  # (image name, pixel loader)


def _prefetch(sources: Sequence[ImageSource], workers: int) -> Iterator[tuple[str, np.ndarray]]:
    # Decoding overlaps with the detector (OpenCV and torch release the GIL).
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window = max(1, workers) * 2
        futures = [pool.submit(loader) for _, loader in sources[:window]]
        for i, (name, _) in enumerate(sources):
            if i + window < len(sources):
                futures.append(pool.submit(sources[i + window][1]))
            yield name, futures[i].result()
            futures[i] = None


def extract_features(extractor: LocalFeatureExtractor, sources: Sequence[ImageSource],
                     output: str | os.PathLike | None = None, *, overwrite: bool = False, io_workers: int = 2,
                     progress: bool = True) -> dict[str, LocalFeatures]:
    """Features of every image of `sources`; with `output`, images already in the file are read, not re-extracted.

    A file written with another extractor configuration is refused unless `overwrite`.
    """
    config = extractor.describe_config()
    done: set[str] = set()
    if output is not None and Path(output).is_file() and not overwrite:
        stored = read_feature_config(output)
        if stored is not None and stored != config:
            raise FeatureFileError(f"{output}: holds features of another configuration ({stored}); "
                                   f"pass overwrite or another file for {config}")
        done = set(feature_names(output))
    wanted = [name for name, _ in sources]
    if len(set(wanted)) != len(wanted):
        raise ValueError("several images share a name; feature files need unique names")
    todo = [s for s in sources if s[0] not in done]
    results: dict[str, LocalFeatures] = {}
    if done:
        results.update(read_features(output, [n for n in wanted if n in done]))
        if todo:
            logger.info("%s: %d images already extracted, %d to go", output, len(wanted) - len(todo), len(todo))
    if todo:
        writer = FeatureWriter(output, config, overwrite=overwrite) if output is not None else None
        try:
            for name, image in tqdm(_prefetch(todo, io_workers), total=len(todo), desc=f"{extractor.name} features",
                                    unit="img", disable=not progress):
                feats = extractor.extract(image)
                results[name] = feats
                if writer is not None:
                    writer.write(name, feats)
        finally:
            if writer is not None:
                writer.close()
    return {name: results[name] for name in wanted}
