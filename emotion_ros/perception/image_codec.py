"""Image decoding and encoding between ROS message fields and numpy (no ROS).

The nodes pass the fields of ``sensor_msgs/Image`` (encoding, width, height,
step, data) or ``sensor_msgs/CompressedImage`` (format, data) in; everything
downstream works on one layout: a contiguous ``H x W x 3`` ``uint8`` RGB array.
Malformed input raises :class:`~emotion_ros.errors.InputError` with a stable
``kind`` so the node can count it in its diagnostics and keep running.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence, Tuple

import cv2
import numpy as np

from emotion_ros.errors import InputError

# encoding -> (bytes per pixel, channels, bytes per channel)
_LAYOUTS: Dict[str, Tuple[int, int, int]] = {
    'rgb8': (3, 3, 1),
    'bgr8': (3, 3, 1),
    'rgba8': (4, 4, 1),
    'bgra8': (4, 4, 1),
    'mono8': (1, 1, 1),
    'mono16': (2, 1, 2),
    'rgb16': (6, 3, 2),
    'bgr16': (6, 3, 2),
    # OpenCV type names that some drivers publish (cv_bridge reads 8UC3 as bgr8).
    '8UC1': (1, 1, 1),
    '8UC3': (3, 3, 1),
    '16UC1': (2, 1, 2),
    # Packed YUV 4:2:2 (ROS: yuv422 is UYVY, yuv422_yuy2 is YUYV).
    'yuv422': (2, 2, 1),
    'uyvy': (2, 2, 1),
    'yuv422_yuy2': (2, 2, 1),
    'yuyv': (2, 2, 1),
    # Raw Bayer mosaics straight from the sensor.
    'bayer_rggb8': (1, 1, 1),
    'bayer_bggr8': (1, 1, 1),
    'bayer_gbrg8': (1, 1, 1),
    'bayer_grbg8': (1, 1, 1),
}

#: Encodings :func:`decode_image` accepts.
RAW_ENCODINGS: Tuple[str, ...] = tuple(_LAYOUTS)

#: Encodings :func:`encode_image` can produce.
ENCODE_ENCODINGS: Tuple[str, ...] = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16')

# Bayer naming: ROS names the first 2x2 pattern row-wise; OpenCV's COLOR_Bayer*
# constants name the pattern starting at the second row and column, hence the
# apparent swap.
_BAYER_TO_RGB = {
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB,
    'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB,
    'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
}


def _as_bytes_array(data: Any) -> np.ndarray:
    """View message data (bytes, bytearray, memoryview, array('B'), list) as uint8."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # rclpy can hand uint8[] fields over as a list of ints.
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def decode_image(encoding: str, width: int, height: int, step: int, data: Any,
                 is_bigendian: bool = False) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` into a contiguous H x W x 3 uint8 RGB array.

    Rows may be padded (``step > width * bytes_per_pixel``); the padding is
    dropped. 16-bit images are reduced to 8 bits by keeping the high byte.

    Args:
        encoding: the message's ``encoding`` (one of :data:`RAW_ENCODINGS`).
        width: image width in pixels.
        height: image height in pixels.
        step: bytes per row.
        data: the pixel bytes (bytes, bytearray, memoryview, array('B'), list).
        is_bigendian: byte order of 16-bit pixels (the message's ``is_bigendian``).

    Raises:
        InputError: ``kind='image_encoding'`` for an unsupported encoding,
            ``kind='image_empty'`` for zero width, height or data,
            ``kind='image_size'`` when step or the data length do not fit.
    """
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise InputError(f'unsupported image encoding {encoding!r}; supported: '
                         f'{", ".join(RAW_ENCODINGS)} (or use a CompressedImage topic)',
                         kind='image_encoding')
    bpp, channels, depth = layout
    buf = _as_bytes_array(data)
    if width <= 0 or height <= 0 or buf.size == 0:
        raise InputError(f'empty image: {width}x{height} with {buf.size} data bytes',
                         kind='image_empty')
    row_bytes = width * bpp
    if step < row_bytes:
        raise InputError(f'{encoding} image {width}x{height}: step {step} is smaller than '
                         f'width*{bpp} = {row_bytes} bytes', kind='image_size')
    if channels == 2 and width % 2:
        raise InputError(f'{encoding} packs pixel pairs: width must be even, got {width}',
                         kind='image_size')
    if buf.size != step * height:
        raise InputError(f'{encoding} image {width}x{height}: expected step*height = '
                         f'{step}*{height} = {step * height} data bytes, got {buf.size}',
                         kind='image_size')
    rows = buf.reshape(height, step)[:, :row_bytes]
    if depth == 2:
        dtype = np.dtype('>u2' if is_bigendian else '<u2')
        # High byte only: 16 -> 8 bits, same as cv_bridge's mono16 -> mono8.
        pixels = (np.ascontiguousarray(rows).view(dtype) >> 8).astype(np.uint8)
        pixels = pixels.reshape(height, width, channels)
    else:
        pixels = rows.reshape(height, width, channels)
    return _to_rgb(encoding, pixels)


def _to_rgb(encoding: str, pixels: np.ndarray) -> np.ndarray:
    if encoding in ('rgb8', 'rgb16'):
        return np.ascontiguousarray(pixels)
    if encoding in ('bgr8', '8UC3', 'bgr16'):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
    if encoding == 'rgba8':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)
    if encoding == 'bgra8':
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGRA2RGB)
    if encoding in ('yuv422', 'uyvy'):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_YUV2RGB_UYVY)
    if encoding in ('yuv422_yuy2', 'yuyv'):
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_YUV2RGB_YUYV)
    grey = np.ascontiguousarray(pixels[:, :, 0])
    if encoding in _BAYER_TO_RGB:
        return cv2.cvtColor(grey, _BAYER_TO_RGB[encoding])
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)


_JPEG_MAGIC = b'\xff\xd8'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def decode_compressed(fmt: str, data: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) into H x W x 3 uint8 RGB.

    ``fmt`` is the message's ``format`` field (``'jpeg'``, ``'png'``,
    ``'rgb8; jpeg compressed bgr8'``, ...); the codec is recognised from the
    data itself, so the field is only used to reject depth images.

    Raises:
        InputError: ``kind='image_empty'`` for no data, ``kind='image_corrupt'``
            for data that does not decode (or a JPEG cut short),
            ``kind='image_encoding'`` for ``compressedDepth`` payloads.
    """
    buf = _as_bytes_array(data)
    if buf.size == 0:
        raise InputError(f'empty compressed image (format {fmt!r})', kind='image_empty')
    if 'compresseddepth' in fmt.lower().replace(' ', ''):
        raise InputError(f'compressed depth images are not supported (format {fmt!r}); '
                         'subscribe to a colour image topic', kind='image_encoding')
    head = buf[:8].tobytes()
    if head.startswith(_JPEG_MAGIC):
        # libjpeg decodes a truncated stream into a half-grey image with only a
        # warning; require the end-of-image marker (trailing padding allowed).
        tail = buf[-64:].tobytes().rstrip(b'\x00\r\n ')
        if not tail.endswith(b'\xff\xd9'):
            raise InputError(f'truncated JPEG ({buf.size} bytes, no end-of-image marker)',
                             kind='image_corrupt')
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        kind_hint = ('JPEG' if head.startswith(_JPEG_MAGIC)
                     else 'PNG' if head.startswith(_PNG_MAGIC) else 'unknown codec')
        raise InputError(f'cannot decode compressed image (format {fmt!r}, {kind_hint}, '
                         f'{buf.size} bytes)', kind='image_corrupt')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check_rgb(rgb: np.ndarray, what: str = 'image') -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3:
        shape = getattr(rgb, 'shape', None)
        dtype = getattr(rgb, 'dtype', type(rgb).__name__)
        raise InputError(f'{what} must be an H x W x 3 uint8 RGB array, got shape {shape} '
                         f'dtype {dtype}', kind='image_format')
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f'{what} is empty ({rgb.shape[1]}x{rgb.shape[0]})', kind='image_empty')


def encode_image(rgb: np.ndarray, encoding: str = 'rgb8') -> Tuple[int, int, int, bytes]:
    """Encode an RGB array for a ``sensor_msgs/Image``: ``(height, width, step, data)``.

    Raises:
        InputError: for an array that is not H x W x 3 uint8, or an encoding not
            in :data:`ENCODE_ENCODINGS`.
    """
    _check_rgb(rgb)
    if encoding not in ENCODE_ENCODINGS:
        raise InputError(f'cannot encode to {encoding!r}; supported: '
                         f'{", ".join(ENCODE_ENCODINGS)}', kind='image_encoding')
    if encoding == 'rgb8':
        out = np.ascontiguousarray(rgb)
    elif encoding == 'bgr8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == 'rgba8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == 'bgra8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == 'mono8':
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:  # mono16, little endian; x * 257 maps 0..255 onto 0..65535 exactly.
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype('<u2') * np.uint16(257)
    height, width = rgb.shape[:2]
    step = out.nbytes // height
    return height, width, step, out.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    """Compress an RGB array to JPEG bytes (for crops in messages and debug images).

    Raises:
        InputError: for an array that is not H x W x 3 uint8 or a quality
            outside 1-100.
    """
    _check_rgb(rgb)
    if not 1 <= int(quality) <= 100:
        raise InputError(f'JPEG quality must be 1-100, got {quality}', kind='image_format')
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails here on broken builds
        raise InputError('JPEG encoding failed', kind='image_format')
    return buf.tobytes()


def clip_box(box: Sequence[float], width: int, height: int,
             margin: float = 0.0) -> Tuple[int, int, int, int]:
    """Integer pixel bounds ``(x0, y0, x1, y1)`` of a box widened by ``margin``, clipped.

    ``margin`` is a fraction of the box's width/height added on each side.
    The result may be empty (``x1 <= x0``) when the box lies outside the image.

    Raises:
        InputError: ``kind='box'`` for a box with NaN/inf or not 4 numbers.
    """
    if len(box) != 4:
        raise InputError(f'a box needs 4 numbers (x_min, y_min, x_max, y_max), got {box!r}',
                         kind='box')
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x_min, y_min, x_max, y_max)):
        raise InputError(f'box has non-finite coordinates: {box!r}', kind='box')
    dx = (x_max - x_min) * margin
    dy = (y_max - y_min) * margin
    x0 = int(max(0, min(width, math.floor(x_min - dx))))
    y0 = int(max(0, min(height, math.floor(y_min - dy))))
    x1 = int(max(0, min(width, math.ceil(x_max + dx))))
    y1 = int(max(0, min(height, math.ceil(y_max + dy))))
    return x0, y0, x1, y1


def crop(rgb: np.ndarray, box: Sequence[float], margin: float = 0.0) -> np.ndarray:
    """Copy the part of ``rgb`` inside ``box`` (x_min, y_min, x_max, y_max), clipped.

    ``margin`` widens the box by that fraction of its size on each side. A box
    entirely outside the image gives an empty ``0 x 0 x 3`` array.

    Raises:
        InputError: for a malformed image or a box with NaN coordinates.
    """
    _check_rgb(rgb)
    x0, y0, x1, y1 = clip_box(box, rgb.shape[1], rgb.shape[0], margin)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0, 3), np.uint8)
    return rgb[y0:y1, x0:x1].copy()
