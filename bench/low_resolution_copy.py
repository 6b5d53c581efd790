"""A copy of a manifest's photos and masks at another resolution: does low resolution alone cost what crops cost?

    python bench/low_resolution_copy.py runs/experiment/data/eg1800.csv --split train --size 128x170 \
        --source eg1800_lowres --out runs/share/lowres

`crop-baidu`'s crops of the full-body photos come from about 128 x 170 pixels of the source photo (the median of
`crop_x1 - crop_x0` and `crop_y1 - crop_y0` in `make experiment`) enlarged to 600 x 800 (cubic for the photo,
nearest for the mask). This writes the same treatment of other photos: each photo shrunk to ``--size`` (area
interpolation; portrait orientation as given, landscape photos transposed) and enlarged back to its own size
(cubic), its mask shrunk and enlarged with nearest neighbours (the unknown value 128 stays 128). The rows keep
their other columns, with ids ``<source>/<stem>``, so the copy trains beside the originals
(`sinet train --source-share`). The study that uses it is in `docs/training.md`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
from rich.progress import track

from sinet_plus import manifest as mf
from sinet_plus.manifest import Manifest, write_manifest


def shrink_and_enlarge(image, size: tuple[int, int], photo: bool):
    """``image`` brought down to ``size`` (width, height) and back to its own size."""
    height, width = image.shape[:2]
    small = size if height >= width else size[::-1]
    down, up = (cv2.INTER_AREA, cv2.INTER_CUBIC) if photo else (cv2.INTER_NEAREST, cv2.INTER_NEAREST)
    return cv2.resize(cv2.resize(image, small, interpolation=down), (width, height), interpolation=up)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--split", default="train", help="rows of this split (with a mask) are copied")
    parser.add_argument("--size", default="128x170", help="WIDTHxHEIGHT the photos pass through (portrait)")
    parser.add_argument("--source", required=True, help="source and id prefix of the copied rows")
    parser.add_argument("--out", type=Path, required=True, help="folder for images/, masks/ and manifest.csv")
    args = parser.parse_args()
    size = tuple(int(side) for side in args.size.split("x"))
    manifest = mf.select(mf.load(args.manifest), split=args.split, with_mask=True)
    rows = manifest.frame.copy()
    for folder in ("images", "masks"):
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    stems = [key.split("/")[-1] for key in rows["id"]]
    images, masks = [], []
    for stem, image, mask in track(list(zip(stems, manifest.paths("image"), manifest.paths("mask"))),
                                   description=f"copying at {args.size}"):
        photo, labels = cv2.imread(str(image)), cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        if photo is None or labels is None:
            raise SystemExit(f"{image if photo is None else mask}: not a readable image")
        images.append(f"images/{stem}.jpg")
        masks.append(f"masks/{stem}.png")
        cv2.imwrite(str(args.out / images[-1]), shrink_and_enlarge(photo, size, True), [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(args.out / masks[-1]), shrink_and_enlarge(labels, size, False))
    rows["id"] = [f"{args.source}/{stem}" for stem in stems]
    rows["source"], rows["image"], rows["mask"] = args.source, images, masks
    write_manifest(Manifest(rows.reset_index(drop=True), args.out.resolve()), args.out / "manifest.csv")
    print(f"{len(rows)} rows -> {args.out / 'manifest.csv'}")


if __name__ == "__main__":
    main()
