"""Encoded images received as bytes (JPEG, PNG): their declared size read from the header, and decoding that
refuses an image with too many pixels before a single pixel is allocated.

A few hundred bytes of PNG can declare 30000x30000 pixels (a decompression bomb: 2.7 GB once decoded), so
`decode_image_bytes` reads the width and height from the PNG IHDR chunk or the JPEG frame header (SOFn) and
compares their product with `max_pixels` before calling OpenCV. The decoded image is converted exactly as
`hierloc.utils.images.read_image` converts a file (alpha dropped, BGR to RGB), so an image sent over the wire
gives the same pixels, hence the same pose, as the same file read from disk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from .images import ImageReadError, from_opencv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); C4/C8/CC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RSTn: no length field


class ImageTooLargeError(ImageReadError):
    """An encoded image declares more pixels than allowed (e.g. a decompression bomb)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header declares: its format and size."""

    format: str  # "png" or "jpeg"
    width: int
    height: int

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def sniff_format(data: bytes) -> str | None:
    """'png' or 'jpeg' from the first bytes, None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    return None


def _png_header(data: bytes) -> ImageHeader:
    # The IHDR chunk must come first: length 13, type, width, height (big-endian), ...
    if len(data) < 33 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
        raise ImageReadError("PNG without a valid IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("png", width, height)


def _jpeg_header(data: bytes) -> ImageHeader:
    i, end = 2, len(data)
    while i < end:
        if data[i] != 0xFF:
            raise ImageReadError(f"JPEG with garbage at byte {i} before its frame header")
        while i < end and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= end:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise ImageReadError("JPEG without a frame header before its image data")
        if i + 2 > end:
            break
        (length,) = struct.unpack(">H", data[i:i + 2])
        if length < 2:
            raise ImageReadError("JPEG with a malformed segment length")
        if marker in _JPEG_SOF:
            if i + 7 > end:
                break
            height, width = struct.unpack(">HH", data[i + 3:i + 7])
            if height == 0:
                raise ImageReadError("JPEG whose height is defined later (DNL marker): not supported")
            return ImageHeader("jpeg", width, height)
        i += length
    raise ImageReadError("JPEG truncated before its frame header")


def read_image_header(data: bytes) -> ImageHeader:
    """The format and size a JPEG or PNG declares; ImageReadError for other formats or a malformed header."""
    kind = sniff_format(data)
    if kind is None:
        raise ImageReadError("not a JPEG or PNG image")
    header = _png_header(data) if kind == "png" else _jpeg_header(data)
    if header.width <= 0 or header.height <= 0:
        raise ImageReadError(f"{kind.upper()} declares an empty image ({header.width}x{header.height})")
    return header


def check_image_header(data: bytes, max_pixels: int) -> ImageHeader:
    """`read_image_header`, and ImageTooLargeError when it declares more than `max_pixels` pixels."""
    header = read_image_header(data)
    if header.pixels > max_pixels:
        raise ImageTooLargeError(f"{header.format.upper()} of {header.width}x{header.height} pixels exceeds the "
                                 f"limit of {max_pixels} pixels")
    return header


def decode_image_bytes(data: bytes, max_pixels: int, grayscale: bool = False) -> np.ndarray:
    """Decode a JPEG or PNG (HxW or HxWx3 RGB, bit depth kept) after checking its declared size; see the module."""
    header = check_image_header(data, max_pixels)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageReadError(f"not a readable {header.format.upper()} (corrupt or truncated)")
    if image.shape[:2] != (header.height, header.width):
        raise ImageReadError(f"{header.format.upper()} decodes to {image.shape[1]}x{image.shape[0]} pixels but "
                             f"declares {header.width}x{header.height}")
    return from_opencv(image, grayscale)
