"""The built-in `demo` dataset: procedurally drawn ducks and fish in upright scenes.

It lets `edge-ssl train` run with no download and gives the tests real pictures. Every scene has
an unmistakable "up" (sky above a horizon, lighter towards the top, objects standing upright)
because the rotation pretext can only learn an orientation that is visible. Both classes share
every background and every colour palette, so the class lives in the shapes, not in the colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edge_ssl.atomic import write_with
from edge_ssl.errors import DataError

CLASSES: tuple[str, ...] = ("duck", "fish")

Color = tuple[int, int, int]

# Base colours, jittered per image; shared by both classes so mean colour carries no label.
_SKIES = np.array([[110, 170, 235], [150, 200, 240], [235, 170, 135], [170, 180, 195],
                   [185, 155, 210]], dtype=np.float64)
_WATERS = np.array([[40, 100, 170], [30, 120, 130], [55, 110, 95], [50, 75, 140]], dtype=np.float64)
_GRASSES = np.array([[70, 130, 50], [110, 140, 60], [60, 100, 45], [140, 130, 70]],
                    dtype=np.float64)
_SANDS = np.array([[200, 180, 130], [170, 150, 110], [150, 140, 125]], dtype=np.float64)
_BODIES = np.array([[240, 205, 60], [240, 240, 230], [140, 95, 55], [235, 130, 40],
                    [150, 150, 160], [200, 70, 50], [90, 110, 160]], dtype=np.float64)
_ORANGE: Color = (240, 140, 30)
_SCENES = ("lake", "meadow", "tank")
_SUPERSAMPLE = 2  # drawn at 2x and box-reduced: anti-aliased edges at little cost


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float = 25.0) -> np.ndarray:
    """One palette colour with a random offset per channel, float [3]."""
    base = palette[rng.integers(len(palette))]
    return np.clip(base + rng.uniform(-jitter, jitter, 3), 0, 255)


def _shade(color: np.ndarray, factor: float) -> np.ndarray:
    """Darken (factor < 1) towards black or lighten (factor > 1) towards white."""
    if factor < 1:
        return color * factor
    return color + (255 - color) * min(factor - 1, 1)


def _row(bg: np.ndarray, y: float) -> np.ndarray:
    """The background colour at height `y` (the bands are uniform across a row), float [3]."""
    return bg[min(int(y), len(bg) - 1), 0].astype(np.float64)


def _rgb(color: np.ndarray) -> Color:
    return (int(color[0]), int(color[1]), int(color[2]))


def _band(rows: np.ndarray, y0: int, y1: int, top: np.ndarray, bottom: np.ndarray) -> None:
    """Fill `rows[y0:y1]` (float [S, 3], one colour per row) with a top-to-bottom gradient."""
    t = np.linspace(0.0, 1.0, max(y1 - y0, 1))[:, None]
    rows[y0:y1] = top * (1 - t) + bottom * t


def _background(rng: np.random.Generator, scene: str, s: int) -> tuple[np.ndarray, dict[str, int]]:
    """Gradient bands, lit from above: returns `uint8 [s, s, 3]` and the band edges (pixels)."""
    rows = np.zeros((s, 3))
    sky, water = _pick(rng, _SKIES), _pick(rng, _WATERS)
    horizon = int(s * rng.uniform(*{"lake": (0.3, 0.55), "meadow": (0.3, 0.45),
                                    "tank": (0.22, 0.32)}[scene]))
    _band(rows, 0, horizon, _shade(sky, 1.4), _shade(sky, 0.95))
    layout = {"horizon": horizon, "water_top": horizon, "water_bottom": s, "grass_bottom": 0}
    if scene == "meadow":
        pond = int(s * rng.uniform(0.64, 0.74))
        grass = _pick(rng, _GRASSES)
        _band(rows, horizon, pond, _shade(grass, 1.1), _shade(grass, 0.75))
        layout.update(water_top=pond, grass_bottom=pond)
    if scene == "tank":
        sand_top = int(s * rng.uniform(0.84, 0.93))
        sand = _pick(rng, _SANDS)
        _band(rows, sand_top, s, sand, _shade(sand, 0.7))
        layout["water_bottom"] = sand_top
    _band(rows, layout["water_top"], layout["water_bottom"], _shade(water, 1.2), _shade(water, 0.5))
    return np.repeat(rows.clip(0, 255).astype(np.uint8)[:, None, :], s, axis=1), layout


def _textures(draw: ImageDraw.ImageDraw, rng: np.random.Generator, bg: np.ndarray,
              layout: dict[str, int], s: int) -> None:
    """Clouds, waves, grass strokes and shared distractors (sun, rocks, reeds, bubbles)."""
    horizon, top, bottom = layout["horizon"], layout["water_top"], layout["water_bottom"]
    width = max(1, s // 64)
    for _ in range(rng.integers(0, 3) if horizon > s * 0.25 else 0):
        x, y, r = rng.uniform(0, s), rng.uniform(0.1, 0.6) * horizon, rng.uniform(0.04, 0.1) * s
        cloud = _rgb(_shade(_row(bg, y), rng.uniform(1.25, 1.5)))
        for dx in (-r, 0.0, r):
            draw.ellipse((x + dx - r, y - r * 0.5, x + dx + r, y + r * 0.5), fill=cloud)
    for _ in range(rng.integers(3, 9)):  # short horizontal wave crests
        y = rng.uniform(top + 2, bottom - 1)
        x, length = rng.uniform(0, s), rng.uniform(0.05, 0.15) * s
        wave = _rgb(_shade(_row(bg, y), 1.25))
        draw.line((x, y, x + length, y), fill=wave, width=width)
    if layout["grass_bottom"]:
        for _ in range(rng.integers(10, 30)):  # upright blades
            x, y = rng.uniform(0, s), rng.uniform(horizon + 2, layout["grass_bottom"])
            blade = _rgb(_shade(_row(bg, y), rng.choice([0.7, 1.3])))
            draw.line((x, y, x + rng.uniform(-1, 1) * width, y - rng.uniform(0.02, 0.06) * s),
                      fill=blade, width=width)
    kinds = rng.choice(["sun", "rock", "reeds", "bubbles"], size=rng.integers(0, 3), replace=False)
    for kind in kinds:
        if kind == "sun" and horizon > s * 0.3:
            x, y = rng.uniform(0.1, 0.9) * s, rng.uniform(0.1, 0.2) * s
            r = rng.uniform(0.04, 0.07) * s
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 245, 200))
        elif kind == "rock":
            x, r = rng.uniform(0, s), rng.uniform(0.04, 0.09) * s
            y = bottom if bottom < s else rng.uniform(0.85, 1.0) * s
            grey = int(rng.uniform(70, 150))
            draw.ellipse((x - r, y - r * 0.6, x + r, y + r * 0.4), fill=(grey, grey, grey - 10))
            draw.chord((x - r, y - r * 0.6, x + r, y + r * 0.4), 180, 360,
                       fill=(grey + 40, grey + 40, grey + 30))
        elif kind == "reeds":
            x0, base = rng.uniform(0, s), float(layout["grass_bottom"] or bottom)
            for x in x0 + rng.uniform(-0.05, 0.05, rng.integers(2, 5)) * s:
                tip = base - rng.uniform(0.15, 0.3) * s
                draw.line((x, base, x, tip), fill=(70, 110, 40), width=width)
                draw.ellipse((x - 1.5 * width, tip, x + 1.5 * width, tip + 0.05 * s),
                             fill=(110, 70, 40))
        elif kind == "bubbles":
            x = rng.uniform(0, s)
            for y in rng.uniform(top + 0.05 * s, bottom, rng.integers(2, 5)):
                r = rng.uniform(0.01, 0.025) * s
                draw.ellipse((x - r, y - r, x + r, y + r), outline=(220, 235, 245), width=width)


def _duck(draw: ImageDraw.ImageDraw, cx: float, cy: float, u: float, body: np.ndarray,
          legs: int) -> None:
    """A duck facing right; `u` is the body's half-width, (cx, cy) the body's centre.

    `legs` is the stroke width of its legs, 0 for a duck afloat (the caller sinks its belly).
    """
    bh, r, fill = 0.62 * u, 0.42 * u, _rgb(body)
    hx, hy, feet = cx + 0.6 * u, cy - bh - 0.35 * u, cy + 1.07 * u
    if legs:
        for lx in (cx - 0.25 * u, cx + 0.1 * u):
            draw.line([(lx, cy + 0.4 * u), (lx, feet), (lx + 0.3 * u, feet)], fill=_ORANGE,
                      width=legs)
    draw.polygon([(cx - 0.7 * u, cy - 0.1 * u), (cx - 1.25 * u, cy - 0.55 * u),
                  (cx - 0.85 * u, cy + 0.25 * u)], fill=fill)
    draw.ellipse((cx - u, cy - bh, cx + u, cy + bh), fill=fill)
    draw.chord((cx - u, cy - bh, cx + u, cy + bh), 190, 350, fill=_rgb(_shade(body, 1.3)))
    draw.ellipse((cx - 0.55 * u, cy - 0.25 * u, cx + 0.3 * u, cy + 0.3 * u),
                 fill=_rgb(_shade(body, 0.75)))
    draw.rectangle((hx - 0.6 * r, hy, hx + 0.5 * r, cy - 0.3 * bh), fill=fill)
    draw.ellipse((hx - r, hy - r, hx + r, hy + r), fill=fill)
    draw.polygon([(hx + 0.75 * r, hy - 0.1 * r), (hx + 1.7 * r, hy + 0.2 * r),
                  (hx + 0.75 * r, hy + 0.45 * r)], fill=_ORANGE)
    e = 0.15 * r
    draw.ellipse((hx + 0.3 * r - e, hy - 0.25 * r - e, hx + 0.3 * r + e, hy - 0.25 * r + e),
                 fill=(20, 20, 20))


def _fish(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, u: float,
          body: np.ndarray) -> None:
    """A fish swimming right, dorsal fin up, dark back and light belly (lit from above)."""
    bh = u * rng.uniform(0.38, 0.55)
    back, belly = _rgb(_shade(body, 0.75)), _rgb(_shade(body, 1.35))
    draw.polygon([(cx - 0.8 * u, cy), (cx - 1.45 * u, cy - 1.1 * bh),
                  (cx - 1.3 * u, cy), (cx - 1.45 * u, cy + 1.1 * bh)], fill=back)
    draw.polygon([(cx - 0.5 * u, cy - 0.8 * bh), (cx - 0.3 * u, cy - 1.65 * bh),
                  (cx + 0.25 * u, cy - 0.85 * bh)], fill=back)
    draw.polygon([(cx - 0.1 * u, cy + 0.85 * bh), (cx - 0.3 * u, cy + 1.3 * bh),
                  (cx + 0.1 * u, cy + 0.9 * bh)], fill=belly)
    draw.ellipse((cx - u, cy - bh, cx + u, cy + bh), fill=back)
    draw.chord((cx - u, cy - bh, cx + u, cy + bh), 10, 170, fill=belly)
    draw.arc((cx + 0.15 * u, cy - 0.8 * bh, cx + 0.55 * u, cy + 0.8 * bh), 300, 60,
             fill=_rgb(_shade(body, 0.5)), width=max(1, int(u / 16)))
    ex, ey, e = cx + 0.6 * u, cy - 0.25 * bh, 0.13 * u
    draw.ellipse((ex - e, ey - e, ex + e, ey + e), fill=(245, 245, 245))
    draw.ellipse((ex - e / 2, ey - e / 2, ex + e / 2, ey + e / 2), fill=(15, 15, 15))


def _scene(rng: np.random.Generator, label: int, image_size: int) -> np.ndarray:
    """One picture, `uint8 [image_size, image_size, 3]`."""
    s = image_size * _SUPERSAMPLE
    bg, layout = _background(rng, _SCENES[rng.integers(len(_SCENES))], s)
    image = Image.fromarray(bg)
    draw = ImageDraw.Draw(image)
    _textures(draw, rng, bg, layout, s)
    top, bottom = layout["water_top"], layout["water_bottom"]
    u, body = rng.uniform(0.13, 0.22) * s, _pick(rng, _BODIES, 30)
    if CLASSES[label] == "fish":
        u = min(u, (bottom - top) / 2.0)
        cy = rng.uniform(top + 0.9 * u, bottom - 0.8 * u)
        _fish(draw, rng, rng.uniform(1.3 * u, s - 1.1 * u), cy, u, body)
    elif layout["grass_bottom"] and rng.random() < 0.5:
        feet = rng.uniform(layout["horizon"] + 0.1 * s, layout["grass_bottom"] - 0.02 * s)
        _duck(draw, rng.uniform(1.3 * u, s - 1.4 * u), feet - 1.07 * u, u, body, max(1, s // 64))
    else:
        on_surface = layout["grass_bottom"] or top < 0.3 * s  # a pond or a tank: float on top
        waterline = top if on_surface else rng.uniform(top + 0.05 * s, 0.88 * s)
        u = min(u, (waterline - 0.02 * s) / 1.6)
        cx, cy = rng.uniform(1.3 * u, s - 1.4 * u), waterline - 0.19 * u
        _duck(draw, cx, cy, u, body, 0)
        # Sink the lower body: put the water back below the waterline, then draw the ripple.
        box = (int(cx - 1.3 * u), int(waterline), int(cx + 1.5 * u) + 1, int(cy + u) + 1)
        image.paste(Image.fromarray(bg).crop(box), box[:2])
        draw.line((cx - 1.4 * u, waterline, cx + 1.5 * u, waterline),
                  fill=_rgb(_shade(_row(bg, waterline), 1.3)), width=max(1, s // 64))
    small = np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.float32)
    noise = rng.standard_normal(small.shape, dtype=np.float32) * rng.uniform(1.5, 5)
    small = small * rng.uniform(0.8, 1.15) + noise
    if rng.random() < 0.5:  # facing left or right: a mirror keeps the scene upright
        small = small[:, ::-1]
    return small.clip(0, 255).astype(np.uint8)


def generate(n_per_class: int, seed: int, image_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n_per_class` images of each class in a seeded, shuffled order.

    Returns:
        `uint8 [N, image_size, image_size, 3]` RGB images and `int64 [N]` labels indexing
        `CLASSES`, with N = 2 * n_per_class. The same seed gives the same bytes.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES), dtype=np.int64), n_per_class))
    return np.stack([_scene(rng, int(label), image_size) for label in labels]), labels


def _save_all(folder: Path, prefix: str, images: np.ndarray) -> int:
    """Write `images` as `folder/prefix_0000.png`..., replacing earlier files of that pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{prefix}_*.png"):  # a smaller rerun must not leave old images
        stale.unlink()
    digits = max(4, len(str(len(images) - 1)))
    for i, pixels in enumerate(images):
        write_with(folder / f"{prefix}_{i:0{digits}d}.png", Image.fromarray(pixels).save)
    return len(images)


def write(directory: Path, n_per_class: int, seed: int, image_size: int = 64,
          unlabeled: int = 0, overwrite: bool = False) -> dict[str, int]:
    """Write the demo set as `directory/<class>/*.png` plus a flat `directory/unlabeled/`.

    The unlabeled images come from a seed derived from `seed`, so they are not copies of the
    labelled ones. Returns the number of images written per folder name.

    Raises:
        DataError: `directory` is a file, or is not empty and `overwrite` is False.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{directory} is a file; choose a folder for the demo data.")
    if not overwrite and directory.is_dir() and any(directory.iterdir()):
        raise DataError(f"{directory} is not empty; pass --overwrite or choose an empty folder.")
    if unlabeled < 0:
        raise ValueError(f"unlabeled must be 0 or more, got {unlabeled}")
    images, labels = generate(n_per_class, seed, image_size)
    counts = {name: _save_all(directory / name, name, images[labels == index])
              for index, name in enumerate(CLASSES)}
    if unlabeled:
        other_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        extra, _ = generate(-(-unlabeled // 2), other_seed, image_size)
        counts["unlabeled"] = _save_all(directory / "unlabeled", "unlabeled", extra[:unlabeled])
    return counts
