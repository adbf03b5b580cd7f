"""Person positions: bearing from CameraInfo (with distortion), 3D from depth, transforms."""

import math

import numpy as np
import pytest

from emotion_ros.config.schema import from_mapping
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.perception.localization import (CameraModel, depth_to_metres, LocalizationConfig,
                                                 locate, transform_position)
from emotion_ros.types import Position

K = (525.0, 0.0, 319.5, 0.0, 525.0, 239.5, 0.0, 0.0, 1.0)
MODELS = {
    'none': ('plumb_bob', (0.0, 0.0, 0.0, 0.0, 0.0)),
    'plumb_bob': ('plumb_bob', (-0.21, 0.06, 0.001, -0.0015, -0.005)),
    'rational_polynomial': ('rational_polynomial',
                            (-0.3, 0.1, 0.0005, 0.0008, 0.0, 0.05, 0.01, 0.002)),
    'equidistant': ('equidistant', (0.05, -0.01, 0.002, -0.0005)),
}
PERSON_HEIGHT, PERSON_WIDTH = 1.7, 0.5
CONFIG = LocalizationConfig()


def camera(model='plumb_bob'):
    """A 640x480 camera with the named distortion."""
    name, d = MODELS[model]
    return CameraModel(K, d, name, 640, 480, 'cam_optical')


def render(cam, x, y_top, z, rng, background=6.0, noise=0.01, invalid=0.0):
    """A depth image (metres) of a flat person at depth z in front of a wall, and their box."""
    # Person box: the distorted projection of the person's outline.
    outline = np.array([[x + dx, y_top + dy, z] for dx in np.linspace(-0.25, 0.25, 9)
                        for dy in np.linspace(0, PERSON_HEIGHT, 17)])
    pixels = cam.project(outline)
    box = (pixels[:, 0].min(), pixels[:, 1].min(), pixels[:, 0].max(), pixels[:, 1].max())
    depth = np.full((480, 640), background, np.float32)
    # Which pixels see the person: undistort every pixel and intersect with the plane z.
    grid = np.stack(np.meshgrid(np.arange(640) + 0.0, np.arange(480) + 0.0), -1).reshape(-1, 2)
    rays = cam.normalized(grid).reshape(480, 640, 2)
    px, py = rays[..., 0] * z, rays[..., 1] * z
    on_person = (np.abs(px - x) <= PERSON_WIDTH / 2) & (py >= y_top) & \
        (py <= y_top + PERSON_HEIGHT)
    depth[on_person] = z
    depth += rng.normal(0.0, noise, depth.shape).astype(np.float32)
    if invalid:
        depth[rng.random(depth.shape) < invalid] = np.nan
    return depth, box


def truth(x, y_top, z):
    """The body-region centre of the person in 3D (what locate() reports)."""
    r = CONFIG.body_region
    return np.array([x, y_top + PERSON_HEIGHT * (r[2] + r[3]) / 2, z])


def mahalanobis(position, point):
    """Mahalanobis distance of ``point`` from the reported position."""
    err = np.asarray(position.xyz) - point
    cov = np.asarray(position.covariance).reshape(3, 3)
    return float(math.sqrt(err @ np.linalg.solve(cov, err)))


@pytest.mark.parametrize('model', sorted(MODELS))
@pytest.mark.parametrize('x, y_top', [(0.0, -0.6), (-1.0, -0.9), (1.1, -0.5), (0.5, -1.0)])
def test_depth_gives_point_within_5cm_at_3m(model, x, y_top):
    """A person at 3 m in a synthetic depth image + CameraInfo is located within 5 cm, and
    within the reported uncertainty; the bearing is that of the true point."""
    rng = np.random.default_rng(7)
    cam = camera(model)
    depth, box = render(cam, x, y_top, 3.0, rng)
    position = locate(cam, box, (640, 480), CONFIG, depth)
    true = truth(x, y_top, 3.0)
    assert position.source == 'depth' and position.frame_id == 'cam_optical'
    assert np.linalg.norm(np.asarray(position.xyz) - true) < 0.05
    assert mahalanobis(position, true) < 3.0
    assert position.azimuth == pytest.approx(math.atan2(true[0], true[2]), abs=0.01)
    assert position.elevation == pytest.approx(
        math.atan2(-true[1], math.hypot(true[0], true[2])), abs=0.01)
    assert position.sigma_m < 0.15


@pytest.mark.parametrize('seed', range(8))
@pytest.mark.parametrize('invalid', [0.3, 0.5])
def test_invalid_depth_pixels_stay_within_uncertainty(seed, invalid):
    """With 30-50 % of depth pixels invalid (NaN / 0) and background behind the person, the
    point stays within 5 cm and within the reported uncertainty (Mahalanobis < 3)."""
    rng = np.random.default_rng(seed)
    x, y_top = rng.uniform(-1.0, 1.0), rng.uniform(-1.0, -0.4)
    cam = camera('plumb_bob')
    depth, box = render(cam, x, y_top, 3.0, rng, noise=0.02, invalid=invalid)
    # As a 16UC1 image in millimetres: invalid pixels are 0.
    mm = np.nan_to_num(depth * 1000.0, nan=0.0).astype(np.uint16)
    for image in (depth, depth_to_metres('16UC1', mm)):
        position = locate(cam, box, (640, 480), CONFIG, image)
        true = truth(x, y_top, 3.0)
        assert np.linalg.norm(np.asarray(position.xyz) - true) < 0.05
        assert mahalanobis(position, true) < 3.0


def test_depth_at_other_resolution_and_ranges():
    """A half-resolution registered depth image and persons at 2.5-8 m are located within 2 %
    of their range."""
    cam = camera('plumb_bob')
    for z in (2.5, 3.0, 5.0, 8.0):
        rng = np.random.default_rng(int(z * 10))
        depth, box = render(cam, 0.3, -0.5, z, rng, background=z + 4)
        small = depth[::2, ::2]
        position = locate(cam, box, (640, 480), CONFIG, small)
        assert np.linalg.norm(np.asarray(position.xyz) - truth(0.3, -0.5, z)) < 0.02 * z


def test_no_valid_depth_falls_back_to_bearing_or_size():
    """All depth invalid: bearing only by default, a size-based range when a person height is
    assumed (with a large uncertainty that covers the truth)."""
    cam = camera('none')
    rng = np.random.default_rng(1)
    depth, box = render(cam, 0.2, -0.8, 4.0, rng)
    depth[:] = np.nan
    position = locate(cam, box, (640, 480), CONFIG, depth)
    assert position.source == 'bearing' and not position.has_point
    assert position.sigma_m == math.inf
    sized = locate(cam, box, (640, 480), from_mapping(LocalizationConfig,
                                                      {'assumed_person_height_m': 1.7}), depth)
    assert sized.source == 'size' and sized.has_point
    assert mahalanobis(sized, truth(0.2, -0.8, 4.0)) < 3.0


@pytest.mark.parametrize('model', sorted(MODELS))
def test_bearing_matches_direction_over_the_image(model):
    """Azimuth/elevation of pixels spread over the image equal the direction of the 3D point
    that projects there (distortion removed)."""
    cam = camera(model)
    r = CONFIG.body_region
    for x, y in [(-1.5, -0.8), (0.0, 0.0), (1.2, 0.7), (0.7, -1.0)]:
        point = np.array([[x, y, 3.0]])
        u, v = cam.project(point)[0]
        # A box whose body-region centre is (u, v).
        w, h = 40.0, 120.0
        x0 = u - w * (r[0] + r[1]) / 2
        y0 = v - h * (r[2] + r[3]) / 2
        position = locate(cam, (x0, y0, x0 + w, y0 + h), (640, 480), CONFIG)
        assert position.azimuth == pytest.approx(math.atan2(x, 3.0), abs=2e-3)
        assert position.elevation == pytest.approx(math.atan2(-y, math.hypot(x, 3.0)),
                                                   abs=2e-3)


def test_bad_camera_info_and_depth_are_input_errors():
    """Uncalibrated K, unknown distortion models and depth encodings raise InputError."""
    with pytest.raises(InputError, match='focal'):
        CameraModel((0.0,) * 9, (), 'plumb_bob', 640, 480, 'cam')
    with pytest.raises(InputError, match='kannala'):
        CameraModel(K, (0.1,), 'kannala', 640, 480, 'cam')
    with pytest.raises(InputError, match='rgb8'):
        depth_to_metres('rgb8', np.zeros((2, 2), np.uint8))
    with pytest.raises(ConfigError, match='body_region'):
        from_mapping(LocalizationConfig, {'body_region': [0.7, 0.3, 0.1, 0.5]})


@pytest.mark.parametrize('yaw_deg', [0, 30, 90, -135])
def test_transform_rotates_point_and_covariance(yaw_deg):
    """A transform moves the point and rotates its covariance (distances preserved)."""
    yaw = math.radians(yaw_deg)
    q = (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))
    position = Position(frame_id='cam', xyz=(1.0, 0.0, 0.0),
                        covariance=(0.04, 0, 0, 0, 0.01, 0, 0, 0, 0.01), azimuth=0.0,
                        elevation=0.0, camera_frame='cam', source='depth')
    moved = transform_position(position, q, (10.0, 5.0, 0.0), 'map')
    assert moved.frame_id == 'map' and moved.camera_frame == 'cam'
    assert moved.xyz[0] == pytest.approx(10 + math.cos(yaw))
    assert moved.xyz[1] == pytest.approx(5 + math.sin(yaw))
    cov = np.asarray(moved.covariance).reshape(3, 3)
    assert np.trace(cov) == pytest.approx(0.06)
    assert cov[0, 0] == pytest.approx(0.04 * math.cos(yaw) ** 2 + 0.01 * math.sin(yaw) ** 2)
