"""`emotion-ros up` starts the robot graph without ros2 launch: from a fresh environment
(tools/env.sh), with a sample bag replayed into it, alerts and incidents come out; a node
that dies at start makes it exit non-zero naming the node; Ctrl-C stops every node."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, wait_until


def _fresh_env(tmp_path: Path) -> dict:
    """Only what a new login shell has, plus this test run's domain (to listen in)."""
    env = {k: os.environ[k] for k in ('PATH', 'HOME', 'LANG', 'TERM') if k in os.environ}
    env['PATH'] = ':'.join(p for p in env.get('PATH', '/usr/bin:/bin').split(':')
                           if '.venv' not in p)
    env['ROS_DOMAIN_ID'] = os.environ['ROS_DOMAIN_ID']
    env['ROS_LOG_DIR'] = str(tmp_path / 'ros_log')
    return env


def _up(tmp_path: Path, *words: str) -> subprocess.Popen:
    log = open(tmp_path / 'up.out', 'w')
    command = ('. tools/env.sh && exec emotion-ros up --log-dir "$UP_LOGS" '
               + ' '.join(words))
    env = dict(_fresh_env(tmp_path), UP_LOGS=str(tmp_path / 'logs'))
    return subprocess.Popen(['bash', '-c', command], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _out(tmp_path: Path) -> str:
    return (tmp_path / 'up.out').read_text(errors='replace')


def test_up_runs_the_graph_on_a_replayed_bag(tmp_path, ros_node):
    """`emotion-ros up` in a namespace with one named camera, from a fresh shell: the managed
    perception node is brought to active, the remaps connect the camera and the shared
    topics, so the demo bag's call for help gives an alert and an open incident on
    <namespace>/distress_alerts and <namespace>/incidents; the replayed stamps are replay
    time. Ctrl-C stops every node cleanly and up exits 0."""
    from emotion_ros_msgs.msg import DistressAlert, IncidentArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from emotion_ros.ros.demo import build_bag
    bag = tmp_path / 'bag'
    build_bag(bag)  # /camera/image_raw and /audio, as a robot's drivers would publish them
    up = _up(tmp_path, 'namespace:=robot1', 'cameras:=camera', 'audio_topic:=/audio',
             'use_microphone:=false', '--quiet')
    node = ros_node('up_listener')
    alerts, lists = [], []
    node.create_subscription(DistressAlert, '/robot1/distress_alerts', alerts.append, 50)
    node.create_subscription(
        IncidentArray, '/robot1/incidents', lists.append,
        QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.TRANSIENT_LOCAL))
    try:
        assert wait_until(lambda: 'the graph is up' in _out(tmp_path) or up.poll() is not None,
                          240, lambda: ros_node.spin(0.2)), _out(tmp_path)
        assert up.poll() is None, _out(tmp_path)
        out = _out(tmp_path)
        assert '/robot1/camera/perception_node is active' in out
        assert f'logs: {tmp_path / "logs"}' in out
        assert f'ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}' in out
        # The remaps: the perception node hears the camera, distress_node its persons.
        assert wait_until(lambda: node.count_subscribers('/camera/image_raw') >= 1
                          and node.count_subscribers('/audio') >= 1
                          and node.count_subscribers('/robot1/persons') >= 1, 30,
                          ros_node.spin), _out(tmp_path)
        env = dict(_fresh_env(tmp_path))
        started = time.time()
        player = subprocess.run(['bash', '-c', f'. tools/env.sh && exec bag_player {bag}'],
                                cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        assert player.returncode == 0, player.stdout + player.stderr
        assert wait_until(lambda: any('call for help' in ' '.join(a.reasons) for a in alerts)
                          and any(lst.incidents for lst in lists), 30, ros_node.spin), \
            (_out(tmp_path), [list(a.reasons) for a in alerts])
        help_alert = next(a for a in alerts if 'call for help' in ' '.join(a.reasons))
        incident_ids = {i.id for lst in lists for i in lst.incidents}
        assert help_alert.incident_id in incident_ids
        # Restamped: the evidence stamps are replay time, so alert latency is meaningful.
        stamp = help_alert.header.stamp.sec + help_alert.header.stamp.nanosec * 1e-9
        assert started <= stamp <= time.time(), (started, stamp)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
        code = up.wait(60)
    out = _out(tmp_path)
    assert code == 0, out
    assert 'SIGINT: stopping the nodes' in out and 'not cleanly' not in out
    logs = sorted(p.name for p in (tmp_path / 'logs').glob('*.log'))
    assert logs == ['robot1.audio_node.log', 'robot1.camera.perception_node.log',
                    'robot1.distress_node.log'], logs
    assert 'models loaded' in (tmp_path / 'logs' / 'robot1.camera.perception_node.log'
                               ).read_text()


def test_up_exits_non_zero_naming_a_node_that_dies_at_start(tmp_path):
    """A node that cannot start (an invalid value in the parameters file) makes up stop
    the other nodes and exit 1, naming that node, its log and why."""
    from conftest import CONFIG
    bad = tmp_path / 'robot.yaml'
    text = CONFIG.read_text()
    assert '    cooldown_s: 0.0\n' in text
    bad.write_text(text.replace('    cooldown_s: 0.0\n', '    cooldown_s: -5.0\n'))
    up = _up(tmp_path, f'params_file:={bad}', 'use_microphone:=false', '--quiet')
    try:
        code = up.wait(240)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(60)
    out = _out(tmp_path)
    assert code == 1, out
    assert '/distress_node exited with code' in out and 'during the start' in out, out
    assert 'cooldown_s' in out  # its last lines say why
    assert 'distress_node.log' in out
