"""Seeded procedural textures for the synthetic world: plaster walls with posters, tiled floors, ceilings, crates.

Each texture mixes multi-scale value noise (global appearance), large unique elements (posters,
signs, stripes: places stay distinguishable) and dense small detail (text, blobs, scratches:
corners and blobs for local feature matching). All randomness comes from the given Generator.
"""

from __future__ import annotations

import colorsys
import string

import cv2
import numpy as np

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_ALPHABET = string.ascii_uppercase + string.digits


def value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with features about `cell` texels across (bicubic upsampling of a random grid)."""
    gh, gw = int(np.ceil(height / cell)) + 3, int(np.ceil(width / cell)) + 3
    grid = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, max(1, int(cell)), size=2)
    return np.clip(up[oy : oy + height, ox : ox + width], 0.0, 1.0)


def fractal_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[float, ...]) -> np.ndarray:
    """Sum of value-noise octaves (largest first, amplitude halving), normalised to zero mean and unit range."""
    out = np.zeros((height, width), np.float32)
    amplitude = 1.0
    for cell in cells:
        out += amplitude * (value_noise(rng, height, width, cell) if cell >= 2
                            else rng.random((height, width), dtype=np.float32))
        amplitude *= 0.5
    out -= out.mean()
    return out / max(float(np.abs(out).max()), 1e-6)


def random_color(rng: np.random.Generator, hue: float | None = None, sat: tuple[float, float] = (0.3, 0.9),
                 val: tuple[float, float] = (0.2, 0.95)) -> tuple[int, int, int]:
    """An RGB colour (0..255) with the given or a random hue."""
    h = rng.random() if hue is None else hue % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def random_text(rng: np.random.Generator, length: int) -> str:
    """Random capital letters and digits."""
    return "".join(rng.choice(list(_ALPHABET), size=length))


def _tinted(base: tuple[int, int, int], noise: np.ndarray, strength: float) -> np.ndarray:
    image = np.empty(noise.shape + (3,), np.float32)
    for c in range(3):
        image[..., c] = base[c] * (1.0 + strength * noise)
    return image


def _draw_text_block(rng: np.random.Generator, image: np.ndarray, x0: int, y0: int, x1: int, y1: int,
                     ppm: float) -> None:
    color = random_color(rng, val=(0.0, 0.35)) if rng.random() < 0.8 else random_color(rng)
    font = int(rng.choice(_FONTS))
    scale = ppm * rng.uniform(0.004, 0.009)
    thickness = max(1, int(round(scale * rng.uniform(1.2, 2.2))))
    (_, line_h), _ = cv2.getTextSize("A", font, scale, thickness)
    y = y0 + int(line_h * 1.5)
    while y < y1 - 2:
        text = random_text(rng, int(rng.integers(3, 14)))
        cv2.putText(image, text, (x0 + int(rng.integers(0, max(1, (x1 - x0) // 6))), y), font, scale, color,
                    thickness, cv2.LINE_AA)
        y += int(line_h * rng.uniform(1.6, 2.4))


def _draw_poster(rng: np.random.Generator, image: np.ndarray, x0: int, y0: int, x1: int, y1: int, ppm: float) -> None:
    """A framed rectangle with one of several contents (blobs, stripes, checker, rings, text, big sign)."""
    w, h = x1 - x0, y1 - y0
    background = random_color(rng, val=(0.5, 1.0), sat=(0.0, 0.6))
    cv2.rectangle(image, (x0, y0), (x1, y1), background, -1)
    kind = int(rng.integers(0, 6))
    roi = image[y0:y1, x0:x1]
    if kind == 0:  # blobs
        for _ in range(int(rng.integers(6, 25))):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(3, max(4, w // 4))), int(rng.integers(3, max(4, h // 4))))
            cv2.ellipse(roi, center, axes, float(rng.uniform(0, 180)), 0, 360, random_color(rng), -1, cv2.LINE_AA)
    elif kind == 1:  # stripes at an angle
        color = random_color(rng)
        period = int(rng.integers(6, max(8, min(w, h) // 3)))
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        mask = (np.floor((xx * np.cos(angle) + yy * np.sin(angle)) / period) % 2).astype(bool)
        roi[mask] = color
    elif kind == 2:  # checker
        cell = int(rng.integers(6, max(8, min(w, h) // 4)))
        yy, xx = np.mgrid[0:h, 0:w]
        roi[((xx // cell + yy // cell) % 2).astype(bool)] = random_color(rng, val=(0.0, 0.4))
    elif kind == 3:  # rings
        center = (int(rng.integers(w // 4, 3 * w // 4 + 1)), int(rng.integers(h // 4, 3 * h // 4 + 1)))
        for radius in range(int(rng.integers(4, 12)), max(w, h), int(rng.integers(5, 14))):
            cv2.circle(roi, center, radius, random_color(rng), int(rng.integers(1, 4)), cv2.LINE_AA)
    elif kind == 4:  # text
        _draw_text_block(rng, roi, 2, 2, w - 2, h - 2, ppm)
    else:  # a big sign: a few large characters
        text = random_text(rng, int(rng.integers(1, 4)))
        font = int(rng.choice(_FONTS[:4]))
        thickness = max(2, int(min(w, h) / 25))
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, thickness)
        scale = 0.8 * min(w / max(tw, 1), h / max(th, 1))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        cv2.putText(roi, text, ((w - tw) // 2, (h + th) // 2), font, scale, random_color(rng, val=(0.0, 0.6)),
                    thickness, cv2.LINE_AA)
    frame = max(2, int(ppm * 0.02))
    cv2.rectangle(image, (x0, y0), (x1, y1), random_color(rng, val=(0.0, 0.4)), frame)


def _scatter_details(rng: np.random.Generator, image: np.ndarray, ppm: float, density: float) -> None:
    """Small blobs, dots and scratches (about `density` per square metre)."""
    h, w = image.shape[:2]
    count = int(density * (w / ppm) * (h / ppm))
    for _ in range(count):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        kind = rng.random()
        color = random_color(rng)
        if kind < 0.45:
            radius = int(rng.integers(2, max(3, int(ppm * 0.06))))
            cv2.circle(image, (x, y), radius, color, -1 if rng.random() < 0.7 else 1, cv2.LINE_AA)
        elif kind < 0.8:
            length = rng.uniform(0.03, 0.3) * ppm
            angle = rng.uniform(0, 2 * np.pi)
            end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
            cv2.line(image, (x, y), end, color, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            size = int(rng.integers(3, max(4, int(ppm * 0.08))))
            cv2.rectangle(image, (x, y), (x + size, y + int(size * rng.uniform(0.5, 1.5))), color, -1)


WALL_STYLES = ("plaster", "brick", "panels", "blocks", "tiles")


def _wall_base(rng: np.random.Generator, width: int, height: int, ppm: float, base: tuple[int, int, int],
               style: str) -> np.ndarray:
    """The wall surface without decorations, in one of WALL_STYLES."""
    noise = fractal_noise(rng, height, width, (ppm * 1.5, ppm * 0.4, ppm * 0.1, 1.0))
    image = _tinted(base, noise, 0.25 if style == "plaster" else 0.12)
    if style == "brick":
        bh, bw = int(0.075 * ppm), int(0.22 * ppm)
        rows = height // bh + 1
        jitter = rng.uniform(0.75, 1.2, size=(rows, width // bw + 2)).astype(np.float32)
        yy, xx = np.mgrid[0:height, 0:width]
        row = yy // bh
        col = (xx + (row % 2) * (bw // 2)) // bw
        image *= jitter[row, col][:, :, None]
        mortar = ((yy % bh) < max(1, bh // 8)) | (((xx + (row % 2) * (bw // 2)) % bw) < max(1, bw // 20))
        image[mortar] = np.array(base, np.float32) * 0.45 + 90
    elif style == "panels":
        pw = int(rng.uniform(0.3, 0.6) * ppm)
        shades = np.repeat(rng.uniform(0.8, 1.15, size=width // pw + 1).astype(np.float32), pw)[:width]
        image *= shades[None, :, None]
        for x in range(0, width, pw):
            cv2.line(image, (x, 0), (x, height), (0.3 * base[0], 0.3 * base[1], 0.3 * base[2]), max(1, pw // 25))
    elif style == "blocks":
        bh, bw = int(0.4 * ppm), int(0.8 * ppm)
        shades = rng.uniform(0.85, 1.12, size=(height // bh + 1, width // bw + 1)).astype(np.float32)
        image *= np.kron(shades, np.ones((bh, bw), np.float32))[:height, :width, None]
        for y in range(0, height, bh):
            cv2.line(image, (0, y), (width, y), (60, 60, 60), max(1, bh // 30))
        for x in range(0, width, bw):
            cv2.line(image, (x, 0), (x, height), (60, 60, 60), max(1, bh // 30))
    elif style == "tiles":
        t = int(0.15 * ppm)
        shades = rng.uniform(0.9, 1.1, size=(height // t + 1, width // t + 1)).astype(np.float32)
        image *= np.kron(shades, np.ones((t, t), np.float32))[:height, :width, None]
        image[(np.arange(height) % t < 2)[:, None] | (np.arange(width) % t < 2)[None, :]] = 235
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_door(rng: np.random.Generator, image: np.ndarray, x: int, ppm: float) -> int:
    """A door (frame, leaf, handle, sometimes a sign) standing on the floor; returns its right edge."""
    height = image.shape[0]
    w, h = int(rng.uniform(0.8, 1.1) * ppm), int(min(2.1 * ppm, height - 0.3 * ppm))
    top = height - h
    leaf = random_color(rng, val=(0.15, 0.6), sat=(0.1, 0.6))
    cv2.rectangle(image, (x - 6, top - 6), (x + w + 6, height), random_color(rng, val=(0.7, 1.0), sat=(0.0, 0.2)), -1)
    cv2.rectangle(image, (x, top), (x + w, height), leaf, -1)
    inset = int(0.1 * ppm)
    for y0, y1 in ((top + inset, top + h // 2 - inset // 2), (top + h // 2 + inset // 2, height - inset)):
        cv2.rectangle(image, (x + inset, y0), (x + w - inset, y1), tuple(int(c * 0.7) for c in leaf),
                      max(2, inset // 4))
    cv2.circle(image, (x + w - inset, top + h // 2), max(3, int(0.03 * ppm)), (210, 200, 120), -1, cv2.LINE_AA)
    if rng.random() < 0.6:
        _draw_text_block(rng, image, x + inset, top + inset, x + w - inset, top + 3 * inset, ppm)
    return x + w + 6


def _draw_window(rng: np.random.Generator, image: np.ndarray, x: int, ppm: float) -> int:
    """A bright window with mullions; returns its right edge."""
    w, h = int(rng.uniform(0.8, 1.6) * ppm), int(rng.uniform(0.8, 1.2) * ppm)
    top = int(rng.uniform(0.5, 0.8) * ppm)
    glass = rng.uniform(0.8, 1.0, size=(h, w)).astype(np.float32)
    glass = cv2.GaussianBlur(glass, (0, 0), max(1.0, ppm * 0.05))
    sky = np.array(random_color(rng, hue=rng.uniform(0.5, 0.65), sat=(0.1, 0.4), val=(0.85, 1.0)), np.float32)
    image[top : top + h, x : x + w] = np.clip(glass[:, :, None] * sky, 0, 255).astype(np.uint8)
    frame = random_color(rng, val=(0.1, 0.9), sat=(0.0, 0.3))
    bar = max(2, int(0.04 * ppm))
    cv2.rectangle(image, (x, top), (x + w, top + h), frame, bar)
    for k in range(1, int(rng.integers(2, 4))):
        cv2.line(image, (x + k * w // 3, top), (x + k * w // 3, top + h), frame, bar)
    cv2.line(image, (x, top + h // 2), (x + w, top + h // 2), frame, bar)
    return x + w


def wall_texture(rng: np.random.Generator, width: int, height: int, ppm: float, hue: float,
                 style: str = "plaster", value: float = 0.7) -> np.ndarray:
    """A wall of the given style and brightness with doors, windows, posters and small details (row 0 = top)."""
    if style not in WALL_STYLES:
        raise ValueError(f"unknown wall style {style!r}; choose one of {', '.join(WALL_STYLES)}")
    base = random_color(rng, hue=hue, sat=(0.25, 0.55), val=(value, value))
    image = _wall_base(rng, width, height, ppm, base, style)
    board = int(0.12 * ppm)
    cv2.rectangle(image, (0, height - board), (width, height), random_color(rng, hue=hue + 0.5, val=(0.15, 0.45)), -1)
    if style in ("plaster", "panels"):
        rail_y = int(height - rng.uniform(0.9, 1.1) * ppm)
        cv2.rectangle(image, (0, rail_y), (width, rail_y + max(2, int(0.04 * ppm))),
                      random_color(rng, val=(0.2, 0.6)), -1)
    _scatter_details(rng, image, ppm, density=12.0)
    # Doors, windows and posters at irregular spacing: the non-periodic layout makes places unique.
    x = rng.uniform(0.1, 0.8) * ppm
    while x < width - 1.5 * ppm:
        kind = rng.random()
        if kind < 0.2:
            x = _draw_door(rng, image, int(x), ppm)
        elif kind < 0.35:
            x = _draw_window(rng, image, int(x), ppm)
        else:
            pw, ph = rng.uniform(0.4, 1.3) * ppm, rng.uniform(0.35, 1.0) * ppm
            top = rng.uniform(0.25, max(0.3, height / ppm - ph / ppm - 0.3)) * ppm
            x1, y1 = int(x + pw), int(min(top + ph, height - board - 2))
            if y1 - int(top) > 20:
                _draw_poster(rng, image, int(x), int(top), x1, y1, ppm)
            x = x1
        x += rng.uniform(0.3, 1.2) * ppm
    for _ in range(int(width / ppm / 3) + 1):
        tx = int(rng.integers(0, max(1, width - int(ppm))))
        ty = int(rng.uniform(0.2, 0.5) * height)
        _draw_text_block(rng, image, tx, ty, tx + int(ppm * 0.8), ty + int(ppm * 0.3), ppm)
    return image


def floor_texture(rng: np.random.Generator, width: int, height: int, ppm: float) -> np.ndarray:
    """Tiles with per-tile shade, grout lines, stains and scuffs (uint8 RGB)."""
    tile = int(rng.choice([0.4, 0.5, 0.6]) * ppm)
    base = random_color(rng, sat=(0.05, 0.3), val=(0.45, 0.7))
    noise = fractal_noise(rng, height, width, (ppm * 2.0, ppm * 0.3, 4.0, 1.0))
    image = _tinted(base, noise, 0.2)
    shades = rng.uniform(0.8, 1.2, size=(height // tile + 1, width // tile + 1)).astype(np.float32)
    image *= np.kron(shades, np.ones((tile, tile), np.float32))[:height, :width, None]
    image = np.clip(image, 0, 255).astype(np.uint8)
    grout = random_color(rng, sat=(0.0, 0.2), val=(0.1, 0.35))
    for x in range(0, width, tile):
        cv2.line(image, (x, 0), (x, height), grout, max(1, tile // 40))
    for y in range(0, height, tile):
        cv2.line(image, (0, y), (width, y), grout, max(1, tile // 40))
    _scatter_details(rng, image, ppm, density=6.0)
    # Translucent stains: drawn opaque on a copy, blended once.
    overlay = image.copy()
    for _ in range(int(width * height / ppm**2 / 4)):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.uniform(0.05, 0.4) * ppm), int(rng.uniform(0.05, 0.3) * ppm))
        cv2.ellipse(overlay, center, axes, float(rng.uniform(0, 180)), 0, 360, random_color(rng, val=(0.1, 0.5)),
                    -1, cv2.LINE_AA)
    return cv2.addWeighted(overlay, 0.35, image, 0.65, 0)


def ceiling_texture(rng: np.random.Generator, width: int, height: int, ppm: float) -> np.ndarray:
    """Ceiling panels with lamps and vents (uint8 RGB)."""
    panel = int(0.6 * ppm)
    base = random_color(rng, sat=(0.0, 0.1), val=(0.75, 0.9))
    image = np.clip(_tinted(base, fractal_noise(rng, height, width, (ppm, ppm * 0.2, 1.0)), 0.08),
                    0, 255).astype(np.uint8)
    for x in range(0, width, panel):
        cv2.line(image, (x, 0), (x, height), (90, 90, 95), max(1, panel // 30))
    for y in range(0, height, panel):
        cv2.line(image, (0, y), (width, y), (90, 90, 95), max(1, panel // 30))
    for _ in range(int(width * height / ppm**2 / 5)):
        px, py = int(rng.integers(0, width // panel + 1)) * panel, int(rng.integers(0, height // panel + 1)) * panel
        if rng.random() < 0.6:
            cv2.rectangle(image, (px + panel // 6, py + panel // 3), (px + 5 * panel // 6, py + 2 * panel // 3),
                          (250, 248, 235), -1)
        else:
            for k in range(4, panel - 4, max(3, panel // 10)):
                cv2.line(image, (px + 4, py + k), (px + panel - 4, py + k), (60, 60, 60), 1)
    return image


def crate_texture(rng: np.random.Generator, width: int, height: int, ppm: float) -> np.ndarray:
    """Wooden planks or a labelled cardboard box (uint8 RGB)."""
    if rng.random() < 0.5:
        base = random_color(rng, hue=rng.uniform(0.05, 0.12), sat=(0.4, 0.7), val=(0.4, 0.7))
        grain = value_noise(rng, height, max(width // 8, 1), ppm * 0.05)
        grain = cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR) - 0.5
        image = np.clip(_tinted(base, grain + 0.3 * fractal_noise(rng, height, width, (ppm * 0.3, 1.0)), 0.4),
                        0, 255).astype(np.uint8)
        plank = max(4, int(rng.uniform(0.1, 0.2) * ppm))
        for y in range(0, height, plank):
            cv2.line(image, (0, y), (width, y), (40, 25, 10), max(1, plank // 12))
    else:
        base = random_color(rng, hue=rng.uniform(0.07, 0.11), sat=(0.3, 0.5), val=(0.55, 0.75))
        image = np.clip(_tinted(base, fractal_noise(rng, height, width, (ppm * 0.5, 2.0, 1.0)), 0.12),
                        0, 255).astype(np.uint8)
        w, h = image.shape[1], image.shape[0]
        _draw_poster(rng, image, int(w * 0.15), int(h * 0.15), int(w * 0.85), int(h * 0.6), ppm)
        _draw_text_block(rng, image, int(w * 0.1), int(h * 0.65), int(w * 0.9), int(h * 0.95), ppm)
    _scatter_details(rng, image, ppm, density=15.0)
    return image
