"""A confusion-matrix picture drawn with Pillow.

Pillow, not matplotlib: matplotlib comes only with the [train] extra, and `edge-ssl evaluate`
must draw the same picture on an edge device that has only the runtime installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge_ssl import atomic

WHITE, INK, GRID = (255, 255, 255), (20, 20, 20), (200, 200, 200)


def draw(matrix: np.ndarray, labels: Sequence[str], title: str) -> Image.Image:
    """Rows = true class, columns = predicted; each cell shaded by its share of the row (the
    recall on the diagonal) and labelled with its count."""
    font = ImageFont.load_default()
    n = len(labels)
    cell = max(14, min(48, 720 // max(n, 1)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str) -> int:
        left, _, right, _ = measure.textbbox((0, 0), text, font=font)
        return int(right - left)

    names = [_fit(label, 24) for label in labels]
    margin = max([width(name) for name in names] + [width("true")]) + 12
    top = 44
    side = cell * n
    legend = "rows: true class, columns: predicted; shade: share of the row"
    image = Image.new("RGB", (max(margin + side, width(title), width(legend)) + 16,
                              top + side + margin + 16), WHITE)
    pen = ImageDraw.Draw(image)
    pen.text((8, 6), title, fill=INK, font=font)
    pen.text((8, 24), legend, fill=INK, font=font)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    for i in range(n):
        for j in range(n):
            x, y = margin + j * cell, top + i * cell
            shade = int(255 - 200 * shares[i, j])
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            pen.rectangle((x, y, x + cell, y + cell), fill=colour, outline=GRID)
            if cell >= 22 and matrix[i, j]:
                text = str(int(matrix[i, j]))
                ink = WHITE if shares[i, j] > 0.6 else INK
                pen.text((x + (cell - width(text)) / 2, y + cell / 2 - 6), text, fill=ink,
                         font=font)
        pen.text((margin - width(names[i]) - 6, top + i * cell + cell / 2 - 6), names[i],
                 fill=INK, font=font)
    for j, name in enumerate(names):  # column labels, turned to read bottom-up
        tag = Image.new("RGB", (width(name) + 4, 14), WHITE)
        ImageDraw.Draw(tag).text((2, 0), name, fill=INK, font=font)
        turned = tag.rotate(90, expand=True)
        image.paste(turned, (margin + j * cell + (cell - turned.width) // 2, top + side + 6))
    return image


def save(matrix: np.ndarray, labels: Sequence[str], title: str, path: Path) -> Path:
    """Draw and write the PNG atomically."""
    picture = draw(matrix, labels, title)
    return atomic.write_with(path, lambda tmp: picture.save(tmp, format="PNG"))


def _fit(label: str, most: int) -> str:
    return label if len(label) <= most else label[:most - 3] + "..."
