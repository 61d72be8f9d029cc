"""Image reading with clear errors, and listing of image files in folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp")
# Most pixels an image file may declare: 2^28 (16384x16384) is 768 MiB as RGB, more than any camera gives;
# a few hundred bytes of PNG can declare 30000x30000. PNG and JPEG headers are checked before decoding; for other
# formats OpenCV applies its own limit, lowered to the same value where this module is imported first.
MAX_IMAGE_PIXELS = 1 << 28
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))


class ImageReadError(RuntimeError):
    """An image file is missing, unreadable, truncated or not an image."""


def read_image(path: str | os.PathLike, grayscale: bool = False, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image as HxW (grayscale) or HxWx3 RGB, keeping its bit depth (uint8/uint16/float).

    A PNG or JPEG declaring more than `max_pixels` pixels is refused before decoding (ImageTooLargeError);
    every failure is an ImageReadError naming the file.
    """
    from .encoded_images import check_image_header, sniff_format

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    if sniff_format(data[:8].tobytes()) is not None:
        try:
            check_image_header(data.tobytes(), max_pixels)
        except ImageReadError as error:
            raise type(error)(f"{path}: {error}") from None
    else:
        _check_other_header(path, data, max_pixels)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # OpenCV's own limits and decoder failures raise instead of returning None
        reason = next((line for line in str(error).splitlines() if "error:" in line), str(error)).strip()
        raise ImageReadError(f"{path}: not a readable image ({reason[-200:]})") from None
    if image is None or image.size == 0:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or unknown format)")
    return from_opencv(image, grayscale)


def _check_other_header(path: Path, data: np.ndarray, max_pixels: int) -> None:
    """The declared size of a BMP, TIFF, WebP, PNM... image, read by Pillow's header parser when it is installed."""
    from .encoded_images import ImageTooLargeError

    try:
        from PIL import Image
    except ImportError:  # OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS) still applies
        return
    import io
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data.tobytes())) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError:
        bomb = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageTooLargeError(f"{path}: declares over {bomb} pixels (a decompression bomb)") from None
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse: OpenCV decides and words the error
        return
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{path}: {width}x{height} pixels exceeds the limit of {max_pixels} pixels")


def from_opencv(image: np.ndarray, grayscale: bool = False) -> np.ndarray:
    """An image as OpenCV decodes it (BGR, BGRA or gray) as hierloc's convention: RGB or gray, alpha dropped."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if grayscale and image.ndim == 3:
        image = to_grayscale(image)
    return image


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """RGB (HxWx3) to grayscale (HxW) with the ITU-R 601 weights, keeping the dtype."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        # OpenCV's fixed-point version of the same weights: 0.3 ms instead of 10 ms for a 1536x1024 frame
        # (a query's budget is 100 ms); it rounds 0.14 % of all RGB triples one level off the float formula.
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    gray = image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114
    if np.issubdtype(image.dtype, np.integer):
        gray = np.round(gray).astype(image.dtype)
    return gray.astype(image.dtype, copy=False)


def as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 pixels from uint8, uint16 or float-in-[0, 1] images."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {image.dtype}: use uint8, uint16 or float in [0, 1]")


def list_images(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[tuple[Path, str]]:
    """Expand files and folders to (path, name) pairs; names are relative to the given folder."""
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in item.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            found.extend((p, p.relative_to(item).as_posix()) for p in files)
        elif item.is_file():
            found.append((item, item.name))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    names = [name for _, name in found]
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"several inputs give the same image name: {duplicated[:5]}")
    return found
