"""Camera frames as large as the docs claim (4K rgb8, 24.9 MB) reach perception_node through
the loopback Fast DDS profile; frames that a publisher drops are counted and shown.

Both tests make their own conditions instead of relying on the machine: the delivery test
sends the next frame only once the node has counted the previous one (one 4K frame in
flight, two fit the 64 MiB segment), and the loss test makes a publisher drop a known number
of frames (``FLOW_CONTROLLER``), so that neither depends on how busy the machine is.
"""

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
LOST_FRAMES = 3

#: The lossy publisher's Fast DDS profile: the repository's loopback profile plus an
#: asynchronous writer behind a 10 MB/s flow controller. A 4K frame takes 2.5 s to leave,
#: and with history depth 1 each newer frame replaces the one still waiting, so a burst of
#: frames published well within 2.5 s leaves exactly one sequence number per dropped frame
#: that the node's subscription sees as a gap. (A shared-memory segment smaller than one
#: frame cannot make this fault: Fast DDS refuses a segment smaller than maxMessageSize and
#: fragments frames to fit, so whether a 16 MiB segment loses frames depends on timing.)
FLOW_CONTROLLER = """
      <flow_controller_descriptor_list>
        <flow_controller_descriptor>
          <name>slow_link</name>
          <scheduler>FIFO</scheduler>
          <max_bytes_per_period>1000000</max_bytes_per_period>
          <period_ms>100</period_ms>
        </flow_controller_descriptor>
      </flow_controller_descriptor_list>
"""
SLOW_WRITER = """
  <data_writer profile_name="slow_writer" is_default_profile="true">
    <qos>
      <publishMode>
        <kind>ASYNCHRONOUS</kind>
        <flow_controller_name>slow_link</flow_controller_name>
      </publishMode>
    </qos>
  </data_writer>
</profiles>
"""

# Publishes a small frame, waits for the file 'go', then LOST_FRAMES 4K rgb8 frames and a
# small frame back to back (history depth 1: only the last small frame is kept), and stays
# until the file 'stop' appears so that the flow controller can send it.
PUBLISHER = f"""
import sys, time, numpy as np, rclpy
from pathlib import Path
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
signals = Path(sys.argv[1])
rclpy.init()
node = rclpy.create_node('publisher_4k')
pub = node.create_publisher(Image, 'image',
                            QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
def frame(w, h, name):
    msg = Image(width=w, height=h, encoding='rgb8', step=3 * w, data=bytes(w * h * 3))
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = name
    return msg
big = [frame({W}, {H}, f'big{{i}}') for i in range({LOST_FRAMES})]
while pub.get_subscription_count() == 0:
    rclpy.spin_once(node, timeout_sec=0.1)
pub.publish(frame(64, 48, 'first'))
deadline = time.monotonic() + 120
while not (signals / 'go').exists() and time.monotonic() < deadline:
    time.sleep(0.05)
start = time.monotonic()
for msg in big:
    pub.publish(msg)
pub.publish(frame(64, 48, 'last'))
print(f'burst published in {{time.monotonic() - start:.2f}} s', flush=True)
while not (signals / 'stop').exists() and time.monotonic() < deadline:
    time.sleep(0.05)
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
    (repository profile, 64 MiB segments) is received by the node; none is counted as lost.
    Each frame is sent once the node has counted the one before (a camera at a low rate)."""
    proc = start_node('perception_node', *params('autostart:=true', 'detector.type:=face',
                                                 'diagnostics_period_s:=0.5'))
    node, statuses = _diagnostics(ros_node)
    pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    assert wait_until(lambda: pub.get_subscription_count() > 0 and statuses and
                      _values(statuses[-1])['state'] == 'active', 120, ros_node.spin), \
        proc.output()[-3000:]
    before = _values(statuses[-1])['frames_received']
    rgb = np.zeros((H, W, 3), np.uint8)
    for n in range(1, FRAMES + 1):
        pub.publish(conversions.rgb_to_image(rgb, conversions.make_header(time.time(), 'cam')))
        assert wait_until(lambda: _values(statuses[-1])['frames_received'] - before >= n, 30,
                          ros_node.spin), (n, _values(statuses[-1]))
    assert _values(statuses[-1])['frames_received'] - before == FRAMES
    assert _values(statuses[-1])['frames_lost_in_transport'] == 0
    assert proc.alive()


def test_frames_dropped_by_the_publisher_are_counted_exactly(start_node, ros_node, tmp_path):
    """A publisher whose link cannot send a 4K frame before the next one replaces it
    (FLOW_CONTROLLER) drops LOST_FRAMES frames between two small ones: the node receives the
    two small frames, counts exactly LOST_FRAMES frames_lost_in_transport, says WARN for
    that period and logs where the limit is documented."""
    profile = Path(os.environ['FASTDDS_DEFAULT_PROFILES_FILE']).read_text()
    lossy = tmp_path / 'fastdds_slow_link.xml'
    lossy.write_text(profile.replace('<rtps>', '<rtps>' + FLOW_CONTROLLER, 1)
                     .replace('</profiles>', SLOW_WRITER))
    assert 'slow_link' in lossy.read_text() and 'ASYNCHRONOUS' in lossy.read_text()
    proc = start_node('perception_node', *params('autostart:=true', 'detector.type:=face',
                                                 'diagnostics_period_s:=0.5'))
    node, statuses = _diagnostics(ros_node)
    assert wait_until(lambda: statuses and _values(statuses[-1])['state'] == 'active', 120,
                      ros_node.spin), proc.output()[-3000:]
    before = _values(statuses[-1])
    # AUTO: the publication mode comes from the profile (asynchronous, flow-controlled).
    publisher = start_node('python', '-c', PUBLISHER, str(tmp_path),
                           env={'FASTDDS_DEFAULT_PROFILES_FILE': str(lossy),
                                'RMW_FASTRTPS_PUBLICATION_MODE': 'AUTO'})
    try:
        assert wait_until(lambda: _values(statuses[-1])['frames_received'] ==
                          before['frames_received'] + 1, 120, ros_node.spin), \
            (_values(statuses[-1]), publisher.output())
        (tmp_path / 'go').touch()
        assert wait_until(lambda: _values(statuses[-1])['frames_received'] ==
                          before['frames_received'] + 2, 60, ros_node.spin), \
            (_values(statuses[-1]), publisher.output())
        assert wait_until(lambda: _values(statuses[-1])['frames_lost_in_transport'] ==
                          before['frames_lost_in_transport'] + LOST_FRAMES, 10,
                          ros_node.spin), (_values(statuses[-1]), publisher.output())
    finally:
        (tmp_path / 'stop').touch()
    assert wait_until(lambda: not publisher.alive(), 30), publisher.output()
    assert 'burst published' in publisher.output()
    assert any(s.level == DiagnosticStatus.WARN and 'lost in transport' in s.message
               for s in statuses)
    log = proc.output()
    assert 'lost in transport' in log and 'Large frames' in log, log[-3000:]
    assert proc.alive()
