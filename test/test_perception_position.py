"""A namespaced perception node with CameraInfo + depth puts camera, weight and 3D positions in
its estimates (real node process, real model, real topics)."""

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from emotion_ros_msgs.msg import PersonEmotionArray
from sensor_msgs.msg import CameraInfo, Image

from conftest import wait_until
from emotion_ros.ros import conversions
from rosgraph import params, sample_frame

K = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]


def test_namespaced_camera_with_depth_gives_positions(start_node, ros_node):
    """Frames of two people + CameraInfo + a 16UC1 depth image (3 m) from /cam_left give
    estimates qualified by camera 'cam_left', weighted by the light backend, with 3D points
    at 3 m in the optical frame; a fixed frame that cannot be reached (no tf2_ros here) is a
    WARN condition in diagnostics naming the frame and the reason."""
    node = start_node('perception_node', *params(
        'autostart:=true', 'localization.use_depth:=true', 'localization.fixed_frame:=map',
        'diagnostics_period_s:=0.5'), '-r', '__ns:=/cam_left')
    driver = ros_node('camera_driver')
    persons, diags = [], []
    driver.create_subscription(PersonEmotionArray, '/cam_left/persons', persons.append, 10)
    driver.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    image_pub = driver.create_publisher(Image, '/cam_left/image', 5)
    info_pub = driver.create_publisher(CameraInfo, '/cam_left/camera_info', 5)
    depth_pub = driver.create_publisher(Image, '/cam_left/depth', 5)
    assert wait_until(lambda: image_pub.get_subscription_count() > 0
                      and depth_pub.get_subscription_count() > 0, 90, ros_node.spin), \
        node.output()[-3000:]
    rgb = sample_frame('zidane')
    depth = np.full((240, 320), 3000, np.uint16)  # half resolution, registered
    depth[::7, ::3] = 0  # invalid pixels
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(
            p.has_position and p.position.has_point for m in persons for p in m.persons):
        stamp = time.time()
        header = conversions.make_header(stamp, 'cam_left_optical')
        info_pub.publish(CameraInfo(header=header, width=640, height=480, k=K,
                                    d=[0.0] * 5, distortion_model='plumb_bob'))
        depth_pub.publish(Image(header=header, height=240, width=320, encoding='16UC1',
                                step=640, data=depth.tobytes()))
        image_pub.publish(conversions.rgb_to_image(rgb, header))
        ros_node.spin(0.2)
    located = [(m, p) for m in persons for p in m.persons if p.has_position
               and p.position.has_point]
    assert located, node.output()[-3000:]
    msg, person = located[-1]
    assert msg.camera == 'cam_left' and person.camera == 'cam_left'
    assert person.evidence_weight == np.float32(0.55)
    pos = person.position
    assert pos.source == 'depth' and pos.camera_frame == 'cam_left_optical'
    assert pos.point.header.frame_id == 'cam_left_optical'
    assert abs(pos.point.point.z - 3.0) < 0.05
    # The bearing is that of the box's body centre.
    u = (person.x_min + person.x_max) / 2
    assert abs(pos.azimuth - np.arctan2((u - 320.0) / 500.0, 1.0)) < 0.02

    def status():
        for array in reversed(diags):
            for s in array.status:
                if s.name == 'emotion_ros: cam_left/perception_node':
                    return {kv.key: kv.value for kv in s.values}
        return {}
    assert wait_until(lambda: int(status().get('depth_frames_used', 0)) >= 1, 20,
                      ros_node.spin), status()
    # The configured fixed frame cannot be reached here: a WARN naming it and the reason.
    reason = ('no transform' if _has_tf2() else 'tf2_ros is not installed')
    assert reason in status()['position_frame']
    condition = status().get('condition.fixed_frame', '')
    assert "fixed_frame 'map' cannot be reached" in condition and reason in condition


def _has_tf2() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


def test_unreachable_fixed_frame_is_a_warn(start_node, ros_node):
    """Two cameras that differ only in localization.fixed_frame: with 'map' and no way to
    reach it (no tf2_ros here, or no transform) /diagnostics say WARN with the reason in the
    message while estimates keep coming; without a fixed frame the same node is OK."""
    common = ('autostart:=true', 'detector.type:=face', 'localization.use_depth:=true',
              'diagnostics_period_s:=0.5')
    nodes = {'cam_map': start_node('perception_node', *params(
                 *common, 'localization.fixed_frame:=map'), '-r', '__ns:=/cam_map'),
             'cam_plain': start_node('perception_node', *params(*common),
                                     '-r', '__ns:=/cam_plain')}
    driver = ros_node('camera_driver')
    diags, persons = [], {name: [] for name in nodes}
    driver.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    pubs = {}
    for name in nodes:
        driver.create_subscription(PersonEmotionArray, f'/{name}/persons',
                                   persons[name].append, 10)
        pubs[name] = [driver.create_publisher(Image, f'/{name}/image', 5),
                      driver.create_publisher(CameraInfo, f'/{name}/camera_info', 5),
                      driver.create_publisher(Image, f'/{name}/depth', 5)]
    assert wait_until(lambda: all(p[0].get_subscription_count() > 0 for p in pubs.values()),
                      90, ros_node.spin), '\n'.join(n.output()[-2000:] for n in nodes.values())
    rgb = sample_frame('zidane')
    depth = np.full((480, 640), 3000, np.uint16)

    def latest(name):
        for array in reversed(diags):
            for s in array.status:
                if s.name == f'emotion_ros: {name}/perception_node':
                    return s
        return None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(
            any(p.has_position and p.position.has_point for m in persons[n] for p in m.persons)
            for n in nodes):
        for name, (image_pub, info_pub, depth_pub) in pubs.items():
            header = conversions.make_header(time.time(), f'{name}_optical')
            info_pub.publish(CameraInfo(header=header, width=640, height=480, k=K,
                                        d=[0.0] * 5, distortion_model='plumb_bob'))
            depth_pub.publish(Image(header=header, height=480, width=640, encoding='16UC1',
                                    step=1280, data=depth.tobytes()))
            image_pub.publish(conversions.rgb_to_image(rgb, header))
        ros_node.spin(0.2)
    assert all(persons.values()), '\n'.join(n.output()[-2000:] for n in nodes.values())
    ros_node.spin(1.0)
    assert wait_until(lambda: latest('cam_map') is not None and latest('cam_plain') is not None,
                      10, ros_node.spin)
    warned, plain = latest('cam_map'), latest('cam_plain')
    assert warned.level == DiagnosticStatus.WARN, (warned.message, nodes['cam_map'].output())
    assert "fixed_frame 'map' cannot be reached" in warned.message
    assert ('no transform' if _has_tf2() else 'tf2_ros is not installed') in warned.message
    assert plain.level == DiagnosticStatus.OK, plain.message
    assert not any(kv.key == 'condition.fixed_frame' for kv in plain.values)
    for node in nodes.values():
        assert node.alive(), node.output()[-2000:]
