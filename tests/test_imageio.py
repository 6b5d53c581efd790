"""Image I/O on real photos and on the broken files real datasets contain."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sinet_plus.imageio import (
    IGNORE,
    ImageReadError,
    read_image,
    read_mask,
    read_pair,
    write_jpeg,
    write_mask,
    write_png,
)


@pytest.fixture
def photo(eg1800_dir):
    return eg1800_dir / "images" / "00001.jpg"


def test_reads_real_photo_and_mask(eg1800_dir, photo):
    image, mask = read_pair(photo, eg1800_dir / "masks" / "00001.png")
    assert image.shape == (800, 600, 3) and image.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    assert 0.05 < mask.mean() < 0.95


def test_grayscale_jpeg_becomes_rgb(eg1800_dir):
    image = read_image(eg1800_dir / "images" / "00357.jpg")  # a grayscale JPEG in the dataset
    assert image.shape[2] == 3
    assert np.array_equal(image[..., 0], image[..., 1])


def test_unknown_value_in_raw_masks(eg1800_dir):
    raw = next((eg1800_dir / "raw" / "masks").glob("*.png"))
    stored = np.asarray(Image.open(raw))
    mask = read_mask(raw, unknown_value=128)
    assert np.array_equal(mask == IGNORE, stored == 128)
    assert np.array_equal(mask == 1, stored == 255)


def test_truncated_jpeg_names_the_file(tmp_path, photo):
    broken = tmp_path / "cut.jpg"
    broken.write_bytes(photo.read_bytes()[:5000])
    with pytest.raises(ImageReadError) as caught:
        read_image(broken)
    assert "cut.jpg" in str(caught.value) and "truncated" in caught.value.reason


def test_garbage_and_missing_files(tmp_path):
    garbage = tmp_path / "noise.png"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(garbage)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "absent.jpg")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(bomb)  # 1-bit: a small file, 400 M pixels
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(bomb)
    large = tmp_path / "large.png"
    Image.new("1", (10_000, 8_500)).save(large)  # under Pillow's own limit, over ours
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(large)


def test_exif_orientation_applied(tmp_path, photo):
    original = read_image(photo)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(original).save(rotated, exif=exif, quality=98)
    shown = read_image(rotated)
    assert shown.shape == (600, 800, 3)
    expected = np.rot90(original, k=-1)
    assert np.abs(shown.astype(int) - expected).mean() < 4


def test_sixteen_bit_png(tmp_path):
    ramp = (np.arange(256 * 4, dtype=np.uint16).reshape(16, 64) * 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (16, 64, 3)
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] >= 250


def test_rgba_composited_on_white_and_cmyk(tmp_path, photo):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    image = read_image(tmp_path / "cut.png")
    assert tuple(image[0, 0]) == (255, 0, 0) and tuple(image[-1, -1]) == (255, 255, 255)
    Image.open(photo).convert("CMYK").save(tmp_path / "cmyk.jpg")
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (800, 600, 3)
    assert np.abs(cmyk.astype(int) - read_image(photo)).mean() < 12


@pytest.mark.parametrize("encoding", ["0-255", "0-1", "palette", "rgb", "bool"])
def test_mask_encodings_agree(tmp_path, eg1800_dir, encoding):
    truth = read_mask(eg1800_dir / "masks" / "00001.png")
    path = tmp_path / "mask.png"
    if encoding == "0-255":
        Image.fromarray(truth * 255).save(path)
    elif encoding == "0-1":
        Image.fromarray(truth).save(path)
    elif encoding == "palette":
        palette = Image.fromarray(truth, "L").convert("P")
        palette.putpalette([0, 0, 0, 192, 0, 0] + [0] * 762)
        palette.save(path)
    elif encoding == "rgb":
        Image.fromarray(np.stack([truth * 200, truth * 0, truth * 0], axis=2)).save(path)
    else:
        Image.fromarray(truth.astype(bool)).save(path)
    assert np.array_equal(read_mask(path), truth)


def test_mask_of_wrong_size_is_refused(tmp_path, eg1800_dir, photo):
    small = tmp_path / "small.png"
    Image.open(eg1800_dir / "masks" / "00001.png").resize((300, 400)).save(small)
    with pytest.raises(ImageReadError, match="mask is 300x400 but its photo 00001.jpg is 600x800"):
        read_pair(photo, small)


def test_writes_round_trip_and_leave_no_temp_files(tmp_path, photo):
    image = read_image(photo)
    write_png(tmp_path / "a.png", image)
    write_jpeg(tmp_path / "a.jpg", image)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    mask[0, 0] = IGNORE
    write_mask(tmp_path / "m.png", mask)
    assert np.array_equal(read_image(tmp_path / "a.png"), image)
    assert np.abs(read_image(tmp_path / "a.jpg").astype(int) - image).mean() < 3
    assert np.array_equal(read_mask(tmp_path / "m.png", unknown_value=128), mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png", "m.png"]
