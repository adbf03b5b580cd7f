"""Camera frames as large as the docs claim (4K rgb8, 24.9 MB) reach perception_node through
the loopback Fast DDS profile; with a segment too small, the loss is counted and shown."""

from __future__ import annotations

import os
from pathlib import Path
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import wait_until
from emotion_ros.ros import conversions
from rosgraph import params

NAME = 'emotion_ros: perception_node'
W, H = 3840, 2160
FRAMES = 8
LOSSY_FRAMES = 20

# Publishes LOSSY_FRAMES 4K rgb8 frames, 0.25 s apart, at sensor-data QoS (best effort), from its
# own process so that it can use another Fast DDS profile than the test process.
PUBLISHER = f"""
import time, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('publisher_4k')
pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
data = np.zeros({W} * {H} * 3, np.uint8).tobytes()
while pub.get_subscription_count() == 0:
    rclpy.spin_once(node, timeout_sec=0.1)
time.sleep(1.0)
for i in range({LOSSY_FRAMES}):
    msg = Image(width={W}, height={H}, encoding='rgb8', step=3 * {W}, data=data)
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    time.sleep(0.25)
time.sleep(2.0)
print('published', {LOSSY_FRAMES})
"""


def _diagnostics(ros_node):
    node = ros_node('large_frames_diag')
    statuses = []
    node.create_subscription(DiagnosticArray, '/diagnostics',
                             lambda m: statuses.extend(
                                 s for s in m.status
                                 if s.name == NAME and s.hardware_id == '/perception_node'), 50)
    return node, statuses


def _values(status):
    return {kv.key: int(float(kv.value)) if kv.value.replace('.', '').isdigit() else kv.value
            for kv in status.values}


def test_4k_rgb8_frames_all_arrive(start_node, ros_node):
    """Every one of 8 4K rgb8 frames published from this process at sensor-data QoS
    (repository profile, 64 MiB segments) is received by the node; none is counted as lost."""
    proc = start_node('perception_node', *params('autostart:=true', 'detector.type:=face',
                                                 'diagnostics_period_s:=0.5'))
    node, statuses = _diagnostics(ros_node)
    pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    assert wait_until(lambda: pub.get_subscription_count() > 0 and statuses and
                      _values(statuses[-1])['state'] == 'active', 120, ros_node.spin), \
        proc.output()[-3000:]
    before = _values(statuses[-1])['frames_received']
    rgb = np.zeros((H, W, 3), np.uint8)
    for _ in range(FRAMES):
        pub.publish(conversions.rgb_to_image(rgb, conversions.make_header(time.time(), 'cam')))
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            ros_node.spin(0.05)
    assert wait_until(lambda: _values(statuses[-1])['frames_received'] - before == FRAMES, 30,
                      ros_node.spin), _values(statuses[-1])
    assert _values(statuses[-1])['frames_lost_in_transport'] == 0
    assert proc.alive()


def test_too_small_segment_loss_is_counted(start_node, ros_node, tmp_path):
    """With the old 16 MiB segment in the publisher's profile many of 20 4K frames are lost:
    the node counts those it sees missing (frames_lost_in_transport), says WARN, and logs
    where the limit is set."""
    profile = Path(os.environ['FASTDDS_DEFAULT_PROFILES_FILE']).read_text()
    small = tmp_path / 'fastdds_16mib.xml'
    small.write_text(profile.replace('<segment_size>67108864</segment_size>',
                                     '<segment_size>16777216</segment_size>'))
    assert small.read_text() != profile
    proc = start_node('perception_node', *params('autostart:=true', 'detector.type:=face',
                                                 'diagnostics_period_s:=0.5'))
    node, statuses = _diagnostics(ros_node)
    assert wait_until(lambda: statuses and _values(statuses[-1])['state'] == 'active', 120,
                      ros_node.spin), proc.output()[-3000:]
    publisher = start_node('python', '-c', PUBLISHER,
                           env={'FASTDDS_DEFAULT_PROFILES_FILE': str(small)})
    assert wait_until(lambda: not publisher.alive(), 120, ros_node.spin), publisher.output()
    assert wait_until(lambda: _values(statuses[-1])['frames_lost_in_transport'] > 0, 10,
                      ros_node.spin), (_values(statuses[-1]), publisher.output())
    values = _values(statuses[-1])
    assert values['frames_received'] + values['frames_lost_in_transport'] <= LOSSY_FRAMES
    assert values['frames_received'] < LOSSY_FRAMES
    assert any(s.level == DiagnosticStatus.WARN and 'lost in transport' in s.message
               for s in statuses)
    assert 'shared-memory segment' in proc.output()
