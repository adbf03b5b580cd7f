"""A perception node's camera geometry inputs: CameraInfo, aligned depth, tf2 (ROS glue).

The geometry itself lives in :mod:`emotion_ros.perception.localization` (no ROS). This
class keeps the latest CameraInfo as a CameraModel, the latest aligned depth
image, and transforms 3D positions into ``localization.fixed_frame`` with
tf2_ros when that package is installed (it is on robots; it is not on PyPI).
Without tf2_ros, or without a transform, positions stay in the camera's
optical frame and the node's /diagnostics turn WARN with the reason (a configured
fixed frame that cannot be reached is a degradation: two cameras then give two
incidents for one person).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.duration import Duration
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from emotion_ros.errors import InputError
from emotion_ros.perception.localization import (CameraModel, depth_to_metres, LocalizationConfig,
                                                 transform_position)
from emotion_ros.ros.conversions import stamp_to_sec
from emotion_ros.types import FrameResult

try:  # tf2_ros comes with ROS on robots; it is not on PyPI.
    import tf2_ros
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None


def camera_name(node: Any, configured: str) -> str:
    """The camera's name: ``configured``, else the node's namespace without slashes."""
    if configured:
        return configured
    return node.get_namespace().strip('/')


def depth_image_to_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (16UC1 mm / 32FC1 m) -> float32 metres, NaN where invalid.

    Raises:
        InputError: for other encodings or a wrong data size.
    """
    dtype = {'16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}.get(msg.encoding)
    if dtype is None:
        return depth_to_metres(msg.encoding, np.zeros((1, 1)))  # raises with the message
    itemsize = np.dtype(dtype).itemsize
    if msg.step < msg.width * itemsize or len(msg.data) < msg.step * msg.height:
        raise InputError(f'depth image {msg.width}x{msg.height} {msg.encoding}: step '
                         f'{msg.step} / {len(msg.data)} bytes do not fit', kind='depth_size')
    raw = np.frombuffer(bytes(msg.data), np.uint8)[:msg.step * msg.height]
    rows = raw.reshape(msg.height, msg.step)[:, :msg.width * itemsize]
    array = rows.copy().view(np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<'))
    return depth_to_metres(msg.encoding, array.astype(dtype))


class CameraInputs:
    """Latest CameraInfo / depth of one camera, and the transform into the fixed frame."""

    def __init__(self, node: Any, config: LocalizationConfig, name: str, bad_inputs: Any
                 ) -> None:
        """Subscribe to 'camera_info' (and 'depth' when use_depth) of ``node``."""
        self._node = node
        self.config = config
        self.name = name
        self._bad = bad_inputs
        self._lock = threading.Lock()
        self.model: Optional[CameraModel] = None
        self._info_key: Optional[Tuple] = None
        self._depth: Optional[Tuple[float, np.ndarray]] = None
        self.depth_used = 0
        self.depth_missing = 0
        self.transformed = 0
        self.transform_failures = 0
        self.tf_status = 'positions in the camera optical frame (fixed_frame empty)'
        # Behind the node's error boundary: an unexpected error is counted, not fatal.
        health = getattr(node, 'health', None)

        def guarded(fn: Any, name: str) -> Any:
            return health.wrap(fn, 'subscription', name) if health is not None else fn
        self._subs = []
        if config.enabled:  # localization.enabled gates every geometry input
            self._subs.append(node.create_subscription(
                CameraInfo, 'camera_info', guarded(self._on_info, 'camera_info'),
                qos_profile_sensor_data))
            if config.use_depth:
                self._subs.append(node.create_subscription(
                    Image, 'depth', guarded(self._on_depth, 'depth'), qos_profile_sensor_data))
        else:
            self.tf_status = 'localization disabled (localization.enabled false)'
        self._tf_buffer = None
        self._tf_listener = None
        self._health = getattr(node, 'health', None)
        if config.enabled and config.fixed_frame:
            if tf2_ros is None:
                self.tf_status = (f'fixed_frame {config.fixed_frame!r} cannot be reached: '
                                  'tf2_ros is not installed, so positions stay in the camera '
                                  'optical frame (install ROS tf2_ros, e.g. apt install '
                                  'ros-<distro>-tf2-ros, or set localization.fixed_frame: '
                                  "'')")
                self._degraded(self.tf_status)
            else:
                self._tf_buffer = tf2_ros.Buffer()
                self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, node)
                self.tf_status = f'transforming into {config.fixed_frame!r}'

    def destroy(self) -> None:
        """Unregister everything this created (lifecycle cleanup): the subscriptions and
        the tf2 listener's subscriptions (/tf, /tf_static)."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs = []
        if self._tf_listener is not None:
            self._tf_listener.unregister()
        self._tf_listener = None
        self._tf_buffer = None
        if self._health is not None:
            self._health.clear_condition('fixed_frame')

    def _degraded(self, reason: Optional[str]) -> None:
        """WARN in /diagnostics with ``reason`` while the fixed frame is out of reach
        (``None``: reached again). Logged once per change by NodeHealth."""
        if self._health is None:
            if reason:
                self._node.get_logger().warning(reason)
        elif reason:
            self._health.set_condition('fixed_frame', DiagnosticStatus.WARN, reason)
        else:
            self._health.clear_condition('fixed_frame')

    # ------------------------------------------------------------- callbacks
    def _on_info(self, msg: CameraInfo) -> None:
        key = (tuple(msg.k), tuple(msg.d), msg.distortion_model, msg.width, msg.height,
               msg.header.frame_id)
        if key == self._info_key:
            return
        try:
            model = CameraModel(msg.k, msg.d, msg.distortion_model, msg.width, msg.height,
                                msg.header.frame_id)
        except InputError as exc:
            self._bad.report(exc.kind, str(exc))
            return
        with self._lock:
            self.model, self._info_key = model, key

    def _on_depth(self, msg: Image) -> None:
        try:
            array = depth_image_to_array(msg)
        except InputError as exc:
            self._bad.report(exc.kind, str(exc))
            return
        with self._lock:
            self._depth = (stamp_to_sec(msg.header.stamp), array)

    # ------------------------------------------------------------------ use
    def depth_for(self, stamp: float) -> Optional[np.ndarray]:
        """The latest depth image when it is within max_depth_age_s of ``stamp``."""
        if not self.config.use_depth:
            return None
        with self._lock:
            depth = self._depth
        if depth is None or abs(depth[0] - stamp) > self.config.max_depth_age_s:
            self.depth_missing += 1
            return None
        self.depth_used += 1
        return depth[1]

    def to_fixed(self, result: FrameResult) -> None:
        """Transform every 3D position of ``result`` into the fixed frame (when possible)."""
        if self._tf_buffer is None:
            return
        target = self.config.fixed_frame
        for person in result.persons:
            position = person.position
            if position is None or not position.has_point or position.frame_id == target:
                continue
            try:
                tf = self._tf_buffer.lookup_transform(
                    target, position.frame_id, Time(nanoseconds=int(result.stamp * 1e9)),
                    timeout=Duration(nanoseconds=int(self.config.tf_timeout_s * 1e9)))
            except Exception as exc:  # noqa: B902 - tf2 raises several unrelated types
                self.transform_failures += 1
                self.tf_status = (f'no transform {position.frame_id!r} -> {target!r}: '
                                  f'{type(exc).__name__}: {exc}; positions stay in the camera '
                                  'frame')
                self._bad.report('transform', self.tf_status)
                self._degraded(f'fixed_frame {target!r} cannot be reached: no transform from '
                               f'{position.frame_id!r} ({type(exc).__name__}); positions stay '
                               'in the camera optical frame')
                continue
            r, t = tf.transform.rotation, tf.transform.translation
            person.position = transform_position(position, (r.x, r.y, r.z, r.w),
                                                 (t.x, t.y, t.z), target)
            self.transformed += 1
            self.tf_status = f'transforming into {target!r}'
            self._degraded(None)

    def values(self) -> Dict[str, Any]:
        """Diagnostics of the camera geometry inputs."""
        model = self.model
        return {'camera': self.name or '(none)',
                'camera_info': (f'{model.width}x{model.height} {model.model or "no distortion"} '
                                f'in {model.frame_id!r}') if model else
                ('none received: persons have no position' if self.config.enabled else
                 'not subscribed (localization.enabled false)'),
                'depth_frames_used': self.depth_used,
                'depth_frames_missing': self.depth_missing,
                'positions_transformed': self.transformed,
                'transform_failures': self.transform_failures,
                'position_frame': self.tf_status}
