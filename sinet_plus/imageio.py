"""Robust photo and mask I/O shared by every stage.

Photos come back as ``uint8`` RGB arrays (H, W, 3) with EXIF orientation applied, whatever their mode
(grayscale, RGBA, palette, 16-bit, CMYK). Masks come back as ``uint8`` (H, W) in one convention:
``0`` background, ``1`` person, ``IGNORE`` (255) unknown. Masks are written as 8-bit PNGs with
0 = background, 255 = person and 128 = unknown, the convention of the datasets we read.
Every failure raises :class:`ImageReadError` naming the file and the reason.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sinet_plus.errors import PathError
from sinet_plus.files import write_bytes_atomic

IGNORE = 255
"""Mask value for pixels whose label is unknown (excluded from losses and metrics)."""

STORED_UNKNOWN = 128
"""Value that marks unknown pixels in mask PNGs on disk."""

MAX_PIXELS = 80_000_000
"""Largest photo we decode (about 9,000 x 9,000); larger files are refused as likely decompression bombs."""

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(PathError):
    """A photo or mask that cannot be used; ``str()`` names the file and the reason."""


def _open(path: str | os.PathLike, max_pixels: int) -> Image.Image:
    """Open and fully decode ``path`` with EXIF orientation applied, refusing bombs and truncation."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, _missing_reason(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(path, f"{width}x{height} pixels exceeds the limit of {max_pixels:,} "
                                           "(possible decompression bomb)")
            image.load()
            return ImageOps.exif_transpose(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file (unknown format or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(path, f"decompression bomb refused ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"corrupt or truncated image ({error})") from None


def _missing_reason(path: Path) -> str:
    """Why ``path`` is not a readable file: a symbolic link to nothing, or no file at all."""
    if path.is_symlink():
        return f"broken symbolic link (it points to {os.readlink(path)}, which does not exist)"
    return "file not found"


def _to_8bit(array: np.ndarray) -> np.ndarray:
    """Scale integer arrays of more than 8 bits (16-bit PNG, 32-bit 'I') to 0..255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array, 0, 255).astype(np.uint8)
    top = 65535 if array.max(initial=0) > 255 else 255
    return np.clip(array.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)


def _composite(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white, so cut-out photos keep their visible look."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a photo as ``uint8`` RGB (H, W, 3), EXIF orientation applied."""
    image = _open(path, max_pixels)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _to_8bit(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _composite(image)
    elif image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageReadError(path, f"unsupported image mode {image.mode}")
    return np.ascontiguousarray(array)


def read_mask(path: str | os.PathLike, unknown_value: int | None = None,
              max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a person mask as ``uint8`` (H, W): 0 background, 1 person, ``IGNORE`` unknown.

    Accepted encodings: 0/255 or 0/1 grayscale (any value > 127 is person), 16-bit, 1-bit, palette
    (index 0 background, index 255 unknown, any other index person) and 3/4-channel masks (person wherever
    a colour channel is non-zero). ``unknown_value`` (e.g. 128) marks a grayscale value as unknown.
    """
    image = _open(path, max_pixels)
    if image.mode == "P":
        index = np.asarray(image)
        mask = (index != 0).astype(np.uint8)
        mask[index == 255] = IGNORE
        return mask
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        channels = np.asarray(image.convert("RGB"))
        return (channels.max(axis=2) > 127).astype(np.uint8)
    gray = np.asarray(image)
    if gray.ndim == 3:
        gray = gray[:, :, 0]
    if gray.dtype == bool:
        return gray.astype(np.uint8)
    if gray.max(initial=0) <= 1:
        return gray.astype(np.uint8)
    gray = _to_8bit(gray)
    mask = (gray > 127).astype(np.uint8)
    if unknown_value is not None:
        mask[gray == unknown_value] = IGNORE
    return mask


def read_probability(path: str | os.PathLike, shape: tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a probability map written as an 8-bit grayscale PNG (0..255 = P(person), e.g. ``soft_mask``) as
    ``uint8`` (H, W), refusing one whose size is not ``shape`` (its photo's)."""
    image = _open(path, max_pixels)
    if image.mode != "L":
        raise ImageReadError(path, f"a probability map must be 8-bit grayscale, not mode {image.mode}")
    array = np.asarray(image)
    if array.shape != tuple(shape):
        raise ImageReadError(path, f"probability map is {array.shape[1]}x{array.shape[0]} but its photo is "
                                   f"{shape[1]}x{shape[0]}")
    return np.ascontiguousarray(array)


def read_pair(image_path: str | os.PathLike, mask_path: str | os.PathLike,
              unknown_value: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a photo and its mask, refusing a mask whose size differs from the photo's."""
    image = read_image(image_path)
    mask = read_mask(mask_path, unknown_value=unknown_value)
    if mask.shape != image.shape[:2]:
        raise ImageReadError(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its photo "
                                        f"{Path(image_path).name} is {image.shape[1]}x{image.shape[0]}")
    return image, mask


def encode_mask(mask: np.ndarray) -> np.ndarray:
    """Turn a 0/1/IGNORE mask into its stored 0/255/128 form."""
    stored = np.where(mask == 1, 255, 0).astype(np.uint8)
    stored[mask == IGNORE] = STORED_UNKNOWN
    return stored


def _encode(array: np.ndarray, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format=format, **options)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a ``uint8`` array (H, W) or (H, W, 3) as PNG, atomically."""
    write_bytes_atomic(path, _encode(array, "PNG", compress_level=1))


def write_jpeg(path: str | os.PathLike, array: np.ndarray, quality: int = 95) -> None:
    """Write a ``uint8`` RGB array as JPEG, atomically."""
    write_bytes_atomic(path, _encode(array, "JPEG", quality=quality, subsampling=0))


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a 0/1/IGNORE mask as an 8-bit 0/255/128 PNG, atomically."""
    write_png(path, encode_mask(mask))


def list_photos(folder: str | os.PathLike) -> list[Path]:
    """The photo files directly inside ``folder``, sorted by name.

    A symbolic link with a photo's name is listed even when it points nowhere, so the stage that reads it
    records why it was skipped instead of the photo silently missing from the plan.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PathError(folder, "not a folder")
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in PHOTO_SUFFIXES)
