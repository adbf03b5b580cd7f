"""How one person of an image is shown to the emotion model (train and serve alike).

Two views (``emotion_ros.llm.contract.PERSON_VIEWS``):

* ``'box'``: the whole image with a red box drawn around the person, as in the
  poster ("the person in the red box"), so the model sees the context;
* ``'crop'``: the person's box enlarged by a margin on every side, cut out.

By default the result is padded to a square with the CLIP mean colour, as
LLaVA-1.5 does (``image_aspect_ratio: pad``): image processors that resize the
short side and centre-crop would otherwise cut off people (and their red box)
near the left or right edge. Training and the robot call this same function
with the same arguments, which is what keeps what the model sees identical.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from emotion_ros.llm.contract import BOX_COLOR_RGB, PERSON_VIEWS
from emotion_ros.errors import ConfigError, InputError

# CLIP's image mean in 0-255, the colour LLaVA-1.5 pads with.
PAD_COLOR_RGB: Tuple[int, int, int] = (122, 116, 104)
DEFAULT_CROP_MARGIN = 0.1


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """Return the image if it is an (H, W, 3) uint8 array, else raise.

    Raises:
        InputError: naming the shape or dtype that was wrong.
    """
    if not isinstance(image_rgb, np.ndarray):
        raise InputError(f'image must be a numpy array, got {type(image_rgb).__name__}',
                         'image_encoding')
    if image_rgb.dtype != np.uint8:
        raise InputError(f'image must be uint8 RGB, got dtype {image_rgb.dtype}',
                         'image_encoding')
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or 0 in image_rgb.shape:
        raise InputError(f'image must be (height, width, 3) RGB, got shape {image_rgb.shape}',
                         'image_encoding')
    return image_rgb


def clip_box(box: Sequence[float], width: int, height: int) -> Tuple[int, int, int, int]:
    """Round a pixel box (x1, y1, x2, y2) to integers and clip it to the image.

    Raises:
        InputError: for a box that is not 4 finite numbers with x1 < x2 and
            y1 < y2, or that does not overlap the image by at least one pixel.
    """
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError) as exc:
        raise InputError(f'box must be 4 numbers (x1, y1, x2, y2), got {box!r}', 'box') from exc
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f'box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}', 'box')
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise InputError(f'box {box!r} is empty: needs x1 < x2 and y1 < y2', 'box')
    cx1 = int(min(max(math.floor(x1), 0), width))
    cy1 = int(min(max(math.floor(y1), 0), height))
    cx2 = int(min(max(math.ceil(x2), 0), width))
    cy2 = int(min(max(math.ceil(y2), 0), height))
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        raise InputError(f'box {box!r} lies outside the {width}x{height} image', 'box')
    return cx1, cy1, cx2, cy2


def box_line_width(width: int, height: int) -> int:
    """Width in pixels of the red box line for an image of this size.

    It scales with the image (0.5 % of the longer side, at least 2 px) so the
    box stays visible after the processor resizes the image to 336 px.
    """
    return max(2, int(round(0.005 * max(width, height))))


def pad_to_square(image_rgb: np.ndarray,
                  color: Tuple[int, int, int] = PAD_COLOR_RGB) -> np.ndarray:
    """Centre the image on a square canvas of ``color`` (LLaVA-1.5's ``expand2square``)."""
    height, width = image_rgb.shape[:2]
    if height == width:
        return image_rgb
    side = max(height, width)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = np.asarray(color, np.uint8)
    top = (side - height) // 2
    left = (side - width) // 2
    canvas[top:top + height, left:left + width] = image_rgb
    return canvas


def render_person(image_rgb: np.ndarray, box: Sequence[float], view: str = 'box', *,
                  margin: float = DEFAULT_CROP_MARGIN, square: bool = True,
                  line_width: Optional[int] = None) -> np.ndarray:
    """Render one person as the model sees them.

    Args:
        image_rgb: (H, W, 3) uint8 RGB image; it is not modified.
        box: the person's box (x1, y1, x2, y2) in pixels; parts outside the
            image are clipped.
        view: ``'box'`` (red box drawn on the whole image, as in the poster)
            or ``'crop'`` (the box enlarged by ``margin``, cut out).
        margin: for ``'crop'``, the fraction of the box's width/height added on
            each side (context around the person).
        square: pad the result to a square with the CLIP mean colour.
        line_width: red line width in pixels; default from the image size.

    Returns:
        A new (H', W', 3) uint8 RGB array.

    Raises:
        ConfigError: for an unknown view or a negative margin.
        InputError: for an image that is not uint8 RGB or a box that is
            malformed or outside the image.
    """
    if view not in PERSON_VIEWS:
        raise ConfigError(f'view: {view!r} is not one of {list(PERSON_VIEWS)}')
    if not margin >= 0:
        raise ConfigError(f'margin: must be >= 0, got {margin!r}')
    image = check_image(image_rgb)
    height, width = image.shape[:2]
    x1, y1, x2, y2 = clip_box(box, width, height)
    if view == 'box':
        out = image.copy()
        lw = box_line_width(width, height) if line_width is None else int(line_width)
        if lw < 1:
            raise ConfigError(f'line_width: must be >= 1, got {line_width!r}')
        # Drawn inside the box, so a box touching the border stays fully visible.
        lw_x = min(lw, (x2 - x1 + 1) // 2)
        lw_y = min(lw, (y2 - y1 + 1) // 2)
        color = np.asarray(BOX_COLOR_RGB, np.uint8)
        out[y1:y1 + lw_y, x1:x2] = color
        out[y2 - lw_y:y2, x1:x2] = color
        out[y1:y2, x1:x1 + lw_x] = color
        out[y1:y2, x2 - lw_x:x2] = color
    else:
        dx = (x2 - x1) * margin
        dy = (y2 - y1) * margin
        cx1, cy1, cx2, cy2 = clip_box((x1 - dx, y1 - dy, x2 + dx, y2 + dy), width, height)
        out = image[cy1:cy2, cx1:cx2].copy()
    return pad_to_square(out) if square else out
