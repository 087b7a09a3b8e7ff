"""edge_ssl.images: the decompression-bomb guard counts the pixels really decoded, thread-safely."""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from edge_ssl import images
from edge_ssl.errors import ImageDecodeError
from edge_ssl.images import load_rgb, resize_array

LIMIT = 1_000_000  # pixels; Pillow's default is 89 million, too many to write in a test


@pytest.fixture()
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming width × height pixels, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def from_threads(call: Callable[[], object], times: int = 16) -> list[object]:
    """`call()` from 8 threads at once; each result, or the exception it raised.

    While they run, touching the process-wide warning filters fails the call.
    """
    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("process-wide warning filters changed during decoding")

    def attempt(_: int) -> object:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            return exc

    with ExitStack() as stack:
        for name in ("catch_warnings", "simplefilter", "filterwarnings", "resetwarnings"):
            stack.enter_context(mock.patch.object(warnings, name, forbidden))
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(attempt, range(times)))


def test_a_large_jpeg_decodes_drafted_from_many_threads(
        tmp_path: Path, small_limit: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4.3 million pixels: over twice the limit, so Pillow's own check at open would refuse it;
    # drafted to 1/8 it is 300×225, which is what gets decoded and counted.
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)
    path = tmp_path / "phone.jpg"
    Image.fromarray(tiles).resize((2400, 1800), Image.Resampling.NEAREST).save(path, quality=90)

    results = from_threads(lambda: load_rgb(path, 64))

    assert all(isinstance(r, np.ndarray) and r.shape == (64, 64, 3) for r in results), results
    assert all(np.array_equal(r, results[0]) for r in results)  # type: ignore[arg-type]
    # The drafted decode is the same picture: close to the full decode resized.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as full:
        reference = resize_array(np.asarray(full.convert("RGB")), 64)
    assert np.mean(np.abs(results[0].astype(int) - reference)) < 4  # type: ignore[union-attr]


def test_a_jpeg_over_the_limit_after_drafting_is_refused(
        tmp_path: Path, small_limit: None) -> None:
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (2400, 1800), (90, 120, 30)).save(path)

    # 1000 px asked: DCT scaling cannot go below it, so all 4.3 million pixels would decode.
    for result in from_threads(lambda: load_rgb(path, 1000), times=8) + [
            from_threads(lambda: load_rgb(path), times=1)[0]]:
        assert isinstance(result, ImageDecodeError)
        assert "2400×1800 pixels" in str(result) and "decompression-bomb limit" in str(result)
    assert "even after JPEG downscaling" in str(from_threads(lambda: load_rgb(path, 1000), 1)[0])


def test_png_bombs_are_refused_from_many_threads(tmp_path: Path, small_limit: None) -> None:
    huge = png_claiming(tmp_path / "huge.png", 20_000, 20_000)  # Pillow refuses it at open
    # Between the limit and twice it: Pillow only warns at open, the explicit count refuses.
    wide = Image.new("RGB", (1200, 1000), (10, 200, 30))
    wide.save(tmp_path / "wide.png")

    with pytest.warns(Image.DecompressionBombWarning):
        results = from_threads(lambda: load_rgb(huge, 64)) + from_threads(
            lambda: load_rgb(tmp_path / "wide.png", 64))

    for result in results:
        assert isinstance(result, ImageDecodeError), result
        assert "decompression-bomb limit" in str(result)
    assert "1200×1000 pixels" in str(results[-1])


def test_the_limit_follows_pillows_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)
    with pytest.raises(ImageDecodeError, match="300×200 pixels"), \
            pytest.warns(Image.DecompressionBombWarning):
        load_rgb(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's way to switch it off
    assert load_rgb(path).shape == (200, 300, 3)


def jpeg_kinds(folder: Path) -> dict[str, tuple[Path, bool]]:
    """JPEGs of every kind a folder holds: path, and whether simplejpeg decodes it (the rest,
    any with EXIF or an XMP orientation among them, fall back to Pillow)."""
    rng = np.random.default_rng(1)
    smooth = Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).resize(
        (640, 480), Image.Resampling.BICUBIC)
    kinds: dict[str, tuple[Path, bool]] = {}

    def save(name: str, image: Image.Image, fast: bool, **options: object) -> None:
        path = folder / f"{name.replace('/', ' of ')}.jpg"
        image.save(path, **options)
        kinds[name] = (path, fast)

    save("small 4:2:0", smooth.resize((64, 64)), True, quality=90)
    save("wide 4:4:4", smooth.resize((300, 200)), True, quality=95, subsampling=0)
    save("photo, drafted to 1/8", smooth.resize((1200, 900)), True, quality=85)
    save("odd size, drafted to 1/2", smooth.resize((261, 131)), True, quality=85)
    save("progressive", smooth.resize((200, 150)), True, quality=80, progressive=True)
    save("greyscale", smooth.convert("L").resize((96, 72)), True, quality=90)
    save("CMYK", smooth.convert("CMYK").resize((80, 60)), False, quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise
    save("EXIF-rotated", smooth.resize((120, 90)), False, quality=90, exif=exif)
    upright = Image.Exif()
    upright[0x0112] = 1
    save("EXIF upright", smooth.resize((120, 90)), False, quality=90, exif=upright)
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="3"/></x:xmpmeta>'
    save("XMP-rotated", smooth.resize((120, 90)), False, quality=90, xmp=xmp)
    return kinds


@pytest.mark.parametrize("size", [None, 32, 64])
def test_the_fast_jpeg_decode_gives_pillows_pixels(tmp_path: Path, size: int | None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = jpeg_kinds(tmp_path)
    turbo = images._turbo_decode
    used: list[bool] = []

    def spy(data: bytes, name: str, size: int | None) -> np.ndarray | None:
        found = turbo(data, name, size)
        used.append(found is not None)
        return found

    monkeypatch.setattr(images, "_turbo_decode", spy)
    fast = {name: load_rgb(path, size) for name, (path, _) in kinds.items()}
    assert used == [expected for _, expected in kinds.values()]
    monkeypatch.setattr(images, "_turbo_decode", lambda *_: None)  # Pillow alone
    for name, (path, _) in kinds.items():
        reference = load_rgb(path, size)
        assert fast[name].shape == reference.shape, name
        assert np.array_equal(fast[name], reference), name


def test_a_truncated_jpeg_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-400])

    with pytest.raises(ImageDecodeError, match="cut.jpg: corrupt or truncated"):
        load_rgb(path, 64)


def test_listing_finds_the_images_a_glob_would_in_path_order(tmp_path: Path) -> None:
    for name in ["b/2.jpg", "b/1.PNG", "a-b/x.jpeg", "a/z.JPEG", "top.webp", "a/deep/er/c.gif",
                 ".hidden.jpg", "a/.also-hidden.png", ".hidden-folder/kept.jpg", "notes.txt",
                 "a/no-suffix"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()  # a folder is never an image, whatever its name
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")  # reported later, not dropped
    (tmp_path / "linked").symlink_to(tmp_path / "b", target_is_directory=True)  # not followed
    (tmp_path / "b" / "loop.jpg").symlink_to(tmp_path / "b" / "loop.jpg")  # listed, not followed

    def glob(pattern: str) -> list[Path]:
        return sorted(p for p in tmp_path.glob(pattern) if not p.name.startswith(".")
                      and images.is_image_file(p) and (p.is_file() or p.is_symlink()))

    found = images.list_images(tmp_path, recursive=True)
    assert found == glob("**/*")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        ".hidden-folder/kept.jpg", "a/deep/er/c.gif", "a/z.JPEG", "a-b/x.jpeg", "b/1.PNG",
        "b/2.jpg", "b/loop.jpg", "gone.jpg", "top.webp"]
    assert images.list_images(tmp_path) == glob("*") == [tmp_path / "gone.jpg",
                                                         tmp_path / "top.webp"]
    assert images.list_images(tmp_path / "nowhere") == []
