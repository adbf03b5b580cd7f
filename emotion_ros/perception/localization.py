"""Where a person is: bearing from camera intrinsics, range from depth or size (no ROS).

A ``CameraModel`` is built from the fields of a sensor_msgs/CameraInfo (K, D,
distortion model, size, frame). For a person box it gives the bearing of the
body centre (azimuth/elevation in the optical frame, distortion removed) and,
with an aligned depth image (16UC1 in mm or 32FC1 in m), a 3D point whose
depth is a robust statistic over the body region: invalid pixels (0, NaN,
out of range) are skipped and background behind the person is separated by
taking the nearest dense cluster of depths. Without depth the range can come
from the box height and an assumed person height (large uncertainty), or is
left unknown (bearing only). The covariance is reported with every point.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from emotion_ros.config.schema import field
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.types import Box, Position

DISTORTION_MODELS = ('', 'plumb_bob', 'rational_polynomial', 'equidistant')


@dataclasses.dataclass(frozen=True)
class LocalizationConfig:
    """How person positions are computed (perception node parameters ``localization.*``)."""

    enabled: bool = field(
        True, "Subscribe to 'camera_info' (sensor_msgs/CameraInfo) and put a bearing (and a "
        '3D point when the range is known) in every person estimate; false: no camera_info, '
        'depth or tf subscriptions and no positions.')
    use_depth: bool = field(
        False, "Subscribe to an aligned depth image on 'depth' (16UC1 in mm or 32FC1 in m, "
        'registered to the colour image) for 3D points.')
    fixed_frame: str = field(
        '', 'Transform positions into this frame (e.g. map, odom) with tf2_ros when it is '
        "installed; '' keeps them in the camera's optical frame.")
    tf_timeout_s: float = field(
        0.05, 'How long to wait for the camera -> fixed_frame transform.', min=0.0)
    max_depth_age_s: float = field(
        0.15, 'A depth image is used only when its stamp is this close to the colour image.',
        positive=True)
    depth_min_m: float = field(0.2, 'Depths below this are invalid.', min=0.0)
    depth_max_m: float = field(25.0, 'Depths above this are invalid.', positive=True)
    body_region: Tuple[float, ...] = field(
        (0.3, 0.7, 0.15, 0.55), 'Body region of the person box used for depth and bearing: '
        'x_min, x_max, y_min, y_max as fractions of the box (default: the torso).')
    min_valid_fraction: float = field(
        0.05, 'At least this fraction of the body region must have valid depth.',
        min=0.0, max=1.0)
    depth_sigma_floor_m: float = field(
        0.02, 'Smallest depth standard deviation reported (sensor noise floor).', min=0.0)
    box_jitter: float = field(
        0.05, 'Standard deviation of the box centre in box widths/heights (lateral '
        'uncertainty).', min=0.0)
    assumed_person_height_m: float = field(
        0.0, 'Without depth, estimate the range from the box height assuming people this tall '
        '(only for boxes not cut by the image border); 0: bearing only.', min=0.0, max=2.5)
    size_range_sigma: float = field(
        0.3, 'Relative standard deviation of a range estimated from the box height.',
        positive=True)

    def validate(self) -> None:
        """Cross-check fields; raise ConfigError naming the parameter."""
        region = self.body_region
        if (len(region) != 4 or not (0 <= region[0] < region[1] <= 1)
                or not (0 <= region[2] < region[3] <= 1)):
            raise ConfigError('localization.body_region: need 0 <= x_min < x_max <= 1 and '
                              f'0 <= y_min < y_max <= 1, got {list(region)}')
        if self.depth_max_m <= self.depth_min_m:
            raise ConfigError('localization.depth_max_m: must exceed depth_min_m')


class CameraModel:
    """Pinhole camera with lens distortion, from CameraInfo fields."""

    def __init__(self, k: Sequence[float], d: Sequence[float], distortion_model: str,
                 width: int, height: int, frame_id: str) -> None:
        """Build from K (9 values, row-major), D, the distortion model name and image size.

        Raises:
            InputError: for an all-zero/invalid K or an unknown distortion model.
        """
        kmat = np.asarray(k, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(kmat)) or kmat[0, 0] <= 0 or kmat[1, 1] <= 0:
            raise InputError(f'CameraInfo of {frame_id!r}: K has no focal length '
                             f'({list(k)}); is the camera calibrated?', kind='camera_info')
        if distortion_model not in DISTORTION_MODELS:
            raise InputError(f'CameraInfo of {frame_id!r}: distortion model '
                             f'{distortion_model!r} not supported (known: '
                             f'{[m for m in DISTORTION_MODELS if m]})', kind='camera_info')
        self.k = kmat
        self.d = np.asarray(d, dtype=np.float64)
        self.model = distortion_model
        self.width, self.height = int(width), int(height)
        self.frame_id = frame_id

    @property
    def fx(self) -> float:
        """Focal length in x (pixels)."""
        return float(self.k[0, 0])

    @property
    def fy(self) -> float:
        """Focal length in y (pixels)."""
        return float(self.k[1, 1])

    def normalized(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) -> undistorted normalised coordinates (N, 2) (z = 1)."""
        pts = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if self.d.size == 0 or not np.any(self.d):
            out = (pts[:, 0, :] - self.k[:2, 2]) / np.array([self.fx, self.fy])
            return out
        import cv2  # local: only needed with distortion
        if self.model == 'equidistant':
            out = cv2.fisheye.undistortPoints(pts, self.k, self.d[:4].reshape(4, 1))
        else:
            # Iterate to convergence (the default 5 iterations leave pixels of error at the
            # image corners with strong distortion).
            out = cv2.undistortPointsIter(
                pts, self.k, self.d, None, None,
                (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10))
        return out.reshape(-1, 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """3D points (N, 3) in the optical frame -> distorted pixel coordinates (N, 2)."""
        import cv2
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 1, 3)
        zero = np.zeros(3)
        if self.model == 'equidistant':
            out, _ = cv2.fisheye.projectPoints(pts, zero, zero, self.k,
                                               self.d[:4].reshape(4, 1))
        else:
            out, _ = cv2.projectPoints(pts, zero, zero, self.k,
                                       self.d if self.d.size else np.zeros(5))
        return out.reshape(-1, 2)

    def scaled_to(self, width: int, height: int) -> 'CameraModel':
        """The same camera for an image of another size (the node's images may be resized)."""
        if (width, height) == (self.width, self.height) or not self.width or not self.height:
            return self
        sx, sy = width / self.width, height / self.height
        k = self.k.copy()
        k[0] *= sx
        k[1] *= sy
        return CameraModel(k.ravel(), self.d, self.model, width, height, self.frame_id)


def bearing(xn: float, yn: float) -> Tuple[float, float]:
    """Normalised image coordinates -> (azimuth right-positive, elevation up-positive)."""
    return math.atan2(xn, 1.0), math.atan2(-yn, math.hypot(xn, 1.0))


def body_pixel(box: Box, region: Sequence[float]) -> Tuple[float, float]:
    """Centre of the body region of a box (pixels)."""
    x0, y0, x1, y1 = box
    return (x0 + (x1 - x0) * (region[0] + region[1]) / 2,
            y0 + (y1 - y0) * (region[2] + region[3]) / 2)


def depth_to_metres(encoding: str, array: np.ndarray) -> np.ndarray:
    """A depth image (16UC1 mm / 32FC1 m) as float32 metres with NaN where invalid.

    Raises:
        InputError: for other encodings.
    """
    if encoding in ('16UC1', 'mono16'):
        out = array.astype(np.float32) / 1000.0
        out[array == 0] = np.nan
        return out
    if encoding == '32FC1':
        out = array.astype(np.float32, copy=True)
        out[~np.isfinite(out) | (out <= 0)] = np.nan
        return out
    raise InputError(f'depth image encoding {encoding!r} not supported (16UC1 in mm or 32FC1 '
                     'in m)', kind='depth_encoding')


def robust_depth(depth_m: np.ndarray, box: Box, image_size: Tuple[int, int],
                 config: LocalizationConfig) -> Optional[Tuple[float, float, int]]:
    """(depth, standard deviation, valid pixels) of the body region, or None when too few.

    ``box`` is in colour-image pixels (``image_size`` = width, height); the depth
    image may have another resolution (it is registered to the colour image).
    The person is the nearest dense cluster: depths within a tolerance of the
    20th percentile, so background behind the person and stray near pixels do
    not pull the estimate.
    """
    h, w = depth_m.shape[:2]
    sx, sy = w / image_size[0], h / image_size[1]
    r = config.body_region
    x0, y0, x1, y1 = box
    bx0, bx1 = x0 + (x1 - x0) * r[0], x0 + (x1 - x0) * r[1]
    by0, by1 = y0 + (y1 - y0) * r[2], y0 + (y1 - y0) * r[3]
    c0, c1 = int(max(0, math.floor(bx0 * sx))), int(min(w, math.ceil(bx1 * sx)))
    r0, r1 = int(max(0, math.floor(by0 * sy))), int(min(h, math.ceil(by1 * sy)))
    if c1 <= c0 or r1 <= r0:
        return None
    patch = depth_m[r0:r1, c0:c1].ravel()
    valid = patch[np.isfinite(patch) & (patch >= config.depth_min_m)
                  & (patch <= config.depth_max_m)]
    if valid.size < max(8, config.min_valid_fraction * patch.size):
        return None
    anchor = float(np.percentile(valid, 20))
    tolerance = max(0.25, 0.08 * anchor)
    inliers = valid[np.abs(valid - anchor) <= tolerance]
    depth = float(np.median(inliers))
    mad = float(np.median(np.abs(inliers - depth))) * 1.4826
    sigma = math.hypot(config.depth_sigma_floor_m, mad / math.sqrt(max(inliers.size, 1)) * 3)
    return depth, sigma, int(inliers.size)


def locate(camera: CameraModel, box: Box, image_size: Tuple[int, int],
           config: LocalizationConfig, depth_m: Optional[np.ndarray] = None) -> Position:
    """Position of the person in ``box`` (colour-image pixels of an image of ``image_size``)."""
    cam = camera.scaled_to(*image_size)
    u, v = body_pixel(box, config.body_region)
    xn, yn = cam.normalized(np.array([[u, v]]))[0]
    azimuth, elevation = bearing(float(xn), float(yn))
    nan3 = (math.nan, math.nan, math.nan)
    position = Position(frame_id=cam.frame_id, xyz=nan3, covariance=(math.nan,) * 9,
                        azimuth=azimuth, elevation=elevation, camera_frame=cam.frame_id,
                        source='bearing')
    rng: Optional[Tuple[float, float]] = None
    if depth_m is not None:
        found = robust_depth(depth_m, box, image_size, config)
        if found is not None:
            rng = (found[0], found[1])
            position.source = 'depth'
    if rng is None and config.assumed_person_height_m > 0:
        x0, y0, x1, y1 = box
        cut = y0 <= 2 or y1 >= image_size[1] - 2
        if not cut and y1 > y0:
            z = cam.fy * config.assumed_person_height_m / (y1 - y0)
            rng = (z, config.size_range_sigma * z)
            position.source = 'size'
    if rng is None:
        return position
    z, sigma_z = rng
    ray = np.array([xn, yn, 1.0])
    point = ray * z
    # Lateral uncertainty from the box centre's jitter, along the image axes.
    width, height = box[2] - box[0], box[3] - box[1]
    sigma_xn = config.box_jitter * width / cam.fx
    sigma_yn = config.box_jitter * height / cam.fy
    cov = (z * z) * (sigma_xn ** 2 * np.outer([1, 0, 0], [1, 0, 0])
                     + sigma_yn ** 2 * np.outer([0, 1, 0], [0, 1, 0]))
    cov += (sigma_z ** 2) * np.outer(ray, ray)
    position.xyz = tuple(float(c) for c in point)
    position.covariance = tuple(float(c) for c in cov.ravel())
    return position


def transform_position(position: Position, rotation: Sequence[float],
                       translation: Sequence[float], frame_id: str) -> Position:
    """The position expressed in ``frame_id`` given the transform (quaternion x, y, z, w and
    translation) from the position's frame into it; the covariance is rotated too."""
    if not position.has_point:
        return position
    rot = quaternion_matrix(rotation)
    point = rot @ np.asarray(position.xyz) + np.asarray(translation, dtype=np.float64)
    cov = rot @ np.asarray(position.covariance).reshape(3, 3) @ rot.T
    return dataclasses.replace(position, frame_id=frame_id,
                               xyz=tuple(float(c) for c in point),
                               covariance=tuple(float(c) for c in cov.ravel()))


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(c) for c in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if n == 0:
        raise InputError('transform has a zero quaternion', kind='transform')
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
