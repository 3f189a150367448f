import cv2
import numpy as np
import pytest
from PIL import Image

from s2s_sweep.images import ImageError, read_image, to_uint8, write_png

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
GRAY16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)


def test_reads_8_bit_rgb_png_exactly(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.shape == (20, 30, 3)
    assert np.array_equal(to_uint8(image), RGB8)


def test_reads_16_bit_rgb_png_and_tiff_without_losing_bits(tmp_path):
    for name in ("a.png", "a.tif"):
        cv2.imwrite(str(tmp_path / name), RGB16[..., ::-1])
        image = read_image(tmp_path / name)
        assert np.array_equal(np.round(image * 65535).astype(np.uint16), RGB16), name


def test_reads_16_bit_and_8_bit_grayscale_as_one_channel(tmp_path):
    Image.fromarray(GRAY16).save(tmp_path / "g16.png")
    assert np.array_equal(np.round(read_image(tmp_path / "g16.png")[..., 0] * 65535).astype(np.uint16), GRAY16)
    Image.fromarray(RGB8[..., 0]).save(tmp_path / "g8.png")
    assert read_image(tmp_path / "g8.png").shape == (20, 30, 1)


def test_reads_jpeg_and_palette_png_as_rgb(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (20, 30, 3)
    Image.fromarray(RGB8).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (20, 30, 3)


def test_opaque_alpha_is_dropped_transparent_alpha_is_an_error(tmp_path):
    rgba = np.dstack([RGB8, np.full((20, 30), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    assert np.array_equal(to_uint8(read_image(tmp_path / "opaque.png")), RGB8)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with pytest.raises(ImageError, match=r"alpha\.png: has a transparent alpha channel"):
        read_image(tmp_path / "alpha.png")


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: no such image file"):
        read_image(tmp_path / "nope.png")
    Image.fromarray(RGB8).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "a.png").read_bytes()[:40])
    with pytest.raises(ImageError, match=r"broken\.png: cannot decode"):
        read_image(tmp_path / "broken.png")


def test_write_png_rounds_to_nearest_and_keeps_channels(tmp_path):
    image = np.array([[[100.6, 0.4, 254.6]]], np.float32).repeat(2, 0).repeat(2, 1) / 255
    write_png(tmp_path / "out" / "x.png", image)
    assert np.asarray(Image.open(tmp_path / "out" / "x.png"))[0, 0].tolist() == [101, 0, 255]
    write_png(tmp_path / "floor.png", image, quantize="floor")  # as the authors' code saves
    assert np.asarray(Image.open(tmp_path / "floor.png"))[0, 0].tolist() == [100, 0, 254]
    write_png(tmp_path / "gray.png", np.full((4, 5, 1), 0.5, np.float32))
    saved = Image.open(tmp_path / "gray.png")
    assert saved.mode == "L" and np.asarray(saved)[0, 0] == 128
