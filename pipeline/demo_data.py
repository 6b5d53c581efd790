"""Real photos of people that ship inside installed packages: the offline demo's input.

No download and no ``../shared``: scikit-image keeps ``astronaut.png`` (Eileen Collins, NASA) and
``camera.png`` (the cameraman, grayscale) in its wheel, and matplotlib keeps ``grace_hopper.jpg`` (U.S. Navy
photo) in its sample data. They are the only full-size photos of people among this project's installed
packages (a search of the site-packages found the rest to be charts, icons, textures and animals).
"""

from __future__ import annotations

import os
from pathlib import Path

from sinet_plus.files import write_bytes_atomic


def demo_photo_files() -> dict[str, Path]:
    """The packaged photos by demo name; raises ``FileNotFoundError`` naming a file a package lacks."""
    import matplotlib
    import skimage.data

    skimage_data = Path(skimage.data.__file__).parent
    photos = {"astronaut": skimage_data / "astronaut.png", "camera": skimage_data / "camera.png",
              "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"}
    for name, path in photos.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the demo photo {name!r} is not in the installed package")
    return photos


def write_demo_photos(folder: str | os.PathLike) -> list[Path]:
    """Copy the packaged photos into ``folder`` (atomically, byte for byte) and return their paths."""
    folder = Path(folder)
    written = []
    for name, source in demo_photo_files().items():
        target = folder / f"{name}{source.suffix}"
        if not target.is_file():
            write_bytes_atomic(target, source.read_bytes())
        written.append(target)
    return written
