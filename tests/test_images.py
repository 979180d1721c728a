"""Reading image files: every odd file becomes the RGB image it looks like, or a clear reason."""

from __future__ import annotations

import pickle
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from headstart.data import MAX_PIXELS, UnreadableImage, load_image, probe_image
from headstart.data.decoded import DecodedImages
from headstart.errors import HeadstartError

RED, WHITE, BLACK = (255, 0, 0), (255, 255, 255), (0, 0, 0)


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def assert_unreadable(path: Path, reason_contains: str) -> UnreadableImage:
    """Both entry points refuse ``path`` with a message that names it and says why."""
    for read in (probe_image, load_image):
        with pytest.raises(UnreadableImage) as caught:
            read(path)
        error = caught.value
        assert error.path == path
        assert str(error) == f"{path}: {error.reason}"
        assert reason_contains in error.reason
    return error


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and header declaring ``width`` x ``height``, and no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


# --- Modes: each comes back as the RGB image a viewer would show ------------------------------


def test_rgb_jpeg_loads_as_is(tmp_path):
    path = tmp_path / "red.jpg"
    Image.new("RGB", (32, 24), RED).save(path)
    image = load_image(path)
    assert image.size == (32, 24)
    assert np.abs(pixels(image).astype(int) - RED).max() <= 2  # JPEG rounding


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (4, 4), 77).save(path)
    assert (pixels(load_image(path)) == 77).all()


def test_one_bit_image_is_black_and_white(tmp_path):
    path = tmp_path / "bits.png"
    bits = Image.new("1", (4, 2), 0)
    bits.putpixel((0, 0), 1)
    bits.save(path)
    rgb = pixels(load_image(path))
    assert tuple(rgb[0, 0]) == WHITE
    assert tuple(rgb[1, 3]) == BLACK


def test_transparent_pixels_become_white_not_the_colour_stored_under_them(tmp_path):
    path = tmp_path / "logo.png"
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)  # transparent black everywhere...
    rgba[0, 0] = (255, 0, 0, 255)  # ...but one opaque red pixel
    rgba[0, 1] = (0, 0, 0, 128)  # and one half-transparent black one
    Image.fromarray(rgba).save(path)
    rgb = pixels(load_image(path))
    assert tuple(rgb[0, 0]) == RED
    assert tuple(rgb[1, 1]) == WHITE
    assert 120 <= rgb[0, 1, 0] <= 135  # black at half opacity over white is mid-grey


def test_grayscale_with_alpha_is_composited_onto_white(tmp_path):
    path = tmp_path / "la.png"
    Image.new("LA", (2, 2), (0, 0)).save(path)
    assert (pixels(load_image(path)) == 255).all()


def test_palette_image_with_a_transparent_index(tmp_path):
    path = tmp_path / "icon.gif"
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, 1 red
    palette.putpixel((1, 0), 1)
    palette.save(path, transparency=0)  # the black index is see-through
    rgb = pixels(load_image(path))
    assert tuple(rgb[0, 0]) == WHITE
    assert tuple(rgb[0, 1]) == RED


def test_16_bit_grayscale_uses_the_full_8_bit_range(tmp_path):
    path = tmp_path / "scan.png"
    gradient = np.arange(0, 65536, 257, dtype=np.uint16).reshape(1, 256).repeat(3, axis=0)
    Image.fromarray(gradient).save(path)  # a 16-bit PNG, 0..65535
    rgb = pixels(load_image(path))
    assert rgb.min() == 0 and rgb.max() == 255  # not clipped to 255 at value 255
    assert (rgb[0, :, 0] == np.arange(256)).all()  # 257 * k maps to exactly k


def test_32_bit_integer_image_in_16_bit_range_is_scaled_like_16_bit(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32)).save(path)
    assert list(pixels(load_image(path))[0, :, 0]) == [0, 128, 255]


def test_float_images_in_0_to_1_are_scaled_and_others_stretched(tmp_path):
    unit, wide = tmp_path / "unit.tif", tmp_path / "wide.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(unit)
    Image.fromarray(np.array([[-10.0, 0.0, 10.0]], dtype=np.float32)).save(wide)
    assert list(pixels(load_image(unit))[0, :, 0]) == [0, 128, 255]
    assert list(pixels(load_image(wide))[0, :, 0]) == [0, 128, 255]


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path)  # no cyan or black: red
    assert np.abs(pixels(load_image(path)).astype(int) - RED).max() <= 3


def test_lab_tiff_converts_to_the_colour_it_encodes(tmp_path):
    path = tmp_path / "lab.tif"
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    ImageCms.applyTransform(Image.new("RGB", (4, 4), RED), to_lab).save(path)
    assert np.abs(pixels(load_image(path)).astype(int) - RED).max() <= 6


def test_multi_frame_file_uses_the_first_frame(tmp_path):
    path = tmp_path / "animation.gif"
    frames = [Image.new("RGB", (4, 4), colour) for colour in (RED, (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert tuple(pixels(load_image(path))[0, 0]) == RED


def test_exif_orientation_turns_a_phone_photo_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    stored = Image.new("RGB", (40, 20), WHITE)
    stored.paste(RED, (0, 0, 10, 20))  # the stored image has a red left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored.save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == (20, 40)
    rgb = pixels(image).astype(int)
    assert np.abs(rgb[2, 10] - RED).max() < 10  # the left edge is now the top
    assert np.abs(rgb[37, 10] - WHITE).max() < 10


def test_large_jpeg_is_decoded_at_a_reduced_scale_when_a_size_is_given(tmp_path):
    path = tmp_path / "photo.jpg"
    gradient = np.add.outer(np.arange(3000, dtype=np.uint8), np.arange(4000, dtype=np.uint8))
    Image.fromarray(gradient).convert("RGB").save(path, quality=90)  # 12 megapixels

    start = time.perf_counter()
    small = load_image(path, draft_size=256)
    drafted = time.perf_counter() - start
    assert 256 <= min(small.size) <= 3000 // 4
    assert small.size[0] / small.size[1] == pytest.approx(4 / 3)

    start = time.perf_counter()
    full = load_image(path)
    assert full.size == (4000, 3000)
    assert drafted < time.perf_counter() - start


def test_draft_size_never_shrinks_below_the_requested_side(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (2000, 300), RED).save(path)
    assert min(load_image(path, draft_size=256).size) >= 256
    assert load_image(path, draft_size=1000).size == (2000, 300)  # already small: untouched


def test_result_is_fully_loaded_and_independent_of_the_file(tmp_path):
    path = tmp_path / "raw.bmp"
    Image.new("RGB", (8, 8), RED).save(path)
    image = load_image(path)
    path.unlink()
    assert tuple(pixels(image)[7, 7]) == RED


# --- Files that cannot be used: a specific reason, with the path --------------------------


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    assert_unreadable(path, "empty file (0 bytes)")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    assert_unreadable(path, "not an image")


def test_web_page_saved_as_jpg_is_named_as_such(tmp_path):
    path = tmp_path / "download.jpg"
    path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    assert_unreadable(path, "HTML page")


def test_git_lfs_pointer_says_how_to_get_the_image(tmp_path):
    path = tmp_path / "cat.png"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n")
    assert_unreadable(path, "git lfs pull")


def test_missing_file(tmp_path):
    assert_unreadable(tmp_path / "gone.jpg", "file not found")


def test_truncated_jpeg_fails_to_load_but_passes_the_header_probe(tmp_path):
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted download

    probe_image(path)  # the header is intact: cheap discovery cannot tell
    with pytest.raises(UnreadableImage, match="truncated or corrupt image data") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_declared_huge_png_is_refused_before_decoding(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    error = assert_unreadable(path, "decompression bomb")
    assert "900 megapixels" in error.reason and "limit 160" in error.reason


def test_size_limit_holds_even_with_pillows_own_limit_disabled(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    side = int(MAX_PIXELS**0.5) + 1
    path = png_header_only(tmp_path / "bomb.png", side, side)
    error = assert_unreadable(path, "decompression bomb")
    assert f"{side}x{side}" in error.reason


def test_unreadable_image_is_a_headstart_error_and_survives_pickling(tmp_path):
    error = UnreadableImage(tmp_path / "x.jpg", "empty file (0 bytes)")
    assert isinstance(error, HeadstartError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


@pytest.mark.parametrize("size", [(4000, 2), (3, 900)], ids=["wide strip", "tall strip"])
def test_an_extreme_strip_keeps_its_central_part_not_gigabytes(tmp_path, size):
    # Resized to a shortest side of 256, a 4000 x 2 strip would be 256 x 512,000 pixels; a
    # 40,000 x 2 one ran out of memory. Beyond 10:1 only the central part is kept.
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, width // 2 :] = 255  # the right half white: the kept part is the centre
    Image.fromarray(pixels).save(tmp_path / "strip.png")
    decoded = DecodedImages(256, "bilinear").get(tmp_path / "strip.png")
    long_side, short_side = max(decoded.shape[:2]), min(decoded.shape[:2])
    assert short_side == 256 and long_side == 10 * 256
    if width > height:
        assert decoded[:, :1200].max() == 0 and decoded[:, 1400:].min() == 255
