"""Reading image files as RGB arrays, oriented like their annotation (Pillow, loaded lazily).

Shared by the EMOTIC data (person crops), the audio-visual data (a clip's
frame folder, EMOTIC images in a mixed run) and evaluation.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from emotion_ros.errors import InputError


def exif_orientation(image: Any) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not hide the pixels
        return 1


def display_size(raw: Tuple[int, int], orientation: int) -> Tuple[int, int]:
    # EXIF orientations 5-8 rotate by 90 degrees: width and height swap on display.
    return (raw[1], raw[0]) if orientation in (5, 6, 7, 8) else raw


def load_image_rgb(path: str, size: Optional[Tuple[int, int]] = None,
                   exif_transpose: Optional[bool] = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, oriented like its annotation.

    EMOTIC boxes are in the stored pixel frame; for photos whose EXIF tag says
    "rotate", the frame the annotator saw is found by comparing with ``size``.

    Args:
        path: the image file.
        size: (width, height) the annotation expects, if known.
        exif_transpose: apply the EXIF orientation (True), do not (False), or
            decide from ``size`` (None; without ``size`` the EXIF tag is applied,
            as image viewers do).

    Raises:
        InputError: when the file is missing, unreadable or truncated, or its
            size matches neither ``size`` nor its EXIF-rotated form.
    """
    from PIL import Image, ImageOps  # lazy: only training loads image files

    try:
        with Image.open(path) as image:
            raw = image.size
            orientation = exif_orientation(image)
            if exif_transpose is None:
                # Without a size, do what image viewers do; with one, rotate only when
                # the stored frame does not fit and the rotated one does.
                exif_transpose = size is None or (
                    tuple(size) != raw and display_size(raw, orientation) == tuple(size))
            if exif_transpose and orientation != 1:
                image = ImageOps.exif_transpose(image)
            array = np.asarray(image.convert('RGB'), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise InputError(f'image file not found: {path}', 'image_file') from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f'cannot read image {path}: {exc}', 'image_file') from exc
    if size is not None and (array.shape[1], array.shape[0]) != tuple(size):
        raise InputError(f'image {path} is {array.shape[1]}x{array.shape[0]} but the '
                         f'annotation expects {size[0]}x{size[1]}', 'image_size')
    return array
