"""Every node's callbacks sit behind the error boundary; docs match the code.

A child process (its own namespace, so diagnostics names and topics are
qualified) builds every node executable's node for real: perception_node
configured and active (depth and camera_info on), audio_node, distress_node,
microphone_node (WAV source), alert_monitor and bag_player (a real bag). It
walks what each node registered with rclpy (subscriptions and their event
handlers, timers, services, guard conditions) and reports any callback of ours
that is not wrapped by the boundary, each publisher's and subscription's QoS
depth and reliability, and each node's diagnostics status name. It also takes
perception_node through five configure/cleanup cycles counting subscriptions,
publishers, timers and services after each step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = 'walk18'
ENTITY_KINDS = ('subscriptions', 'publishers', 'timers', 'services')


def _ours(callback) -> bool:
    module = getattr(callback, '__module__', '') or ''
    return not module.startswith(('rclpy', 'tf2_ros'))


def _walk(node) -> dict:
    """Callbacks of ``node`` (ours only) not behind the boundary, and its QoS per topic."""
    from emotion_ros.ros.health import is_guarded
    unwrapped, qos = [], []
    for sub in node.subscriptions:
        if _ours(sub.callback) and not is_guarded(sub.callback):
            unwrapped.append(f'subscription {sub.topic_name}')
        for handler in getattr(sub, 'event_handlers', []) or []:
            callback = getattr(handler, 'callback', None)
            if callback is not None and _ours(callback) and not is_guarded(callback):
                unwrapped.append(f'event handler of {sub.topic_name}')
        qos.append(['subscription', sub.topic_name, sub.qos_profile.depth,
                    sub.qos_profile.reliability.name.lower()])
    for pub in node.publishers:
        qos.append(['publisher', pub.topic_name, pub.qos_profile.depth,
                    pub.qos_profile.reliability.name.lower()])
    for timer in node.timers:
        if _ours(timer.callback) and not is_guarded(timer.callback):
            unwrapped.append(f'timer {timer.callback!r}')
    for srv in node.services:
        if _ours(srv.callback) and not is_guarded(srv.callback):
            unwrapped.append(f'service {srv.srv_name}')
    for guard in node.guards:
        if _ours(guard.callback) and not is_guarded(guard.callback):
            unwrapped.append(f'guard condition {guard.callback!r}')
    diagnostics = getattr(node, 'diagnostics', None)
    return {'unwrapped': unwrapped, 'qos': qos,
            'diagnostics': diagnostics._name if diagnostics is not None else '',
            'fqn': node.get_fully_qualified_name()}


def _counts(node) -> dict:
    return {kind: len(list(getattr(node, kind))) for kind in ENTITY_KINDS}


def _faults(perception, monitor, work: Path) -> dict:
    """Make faults inside real callbacks; what the nodes' health counted."""
    import time

    from emotion_ros_msgs.msg import DistressAlert
    from sensor_msgs.msg import CameraInfo, Image

    from emotion_ros.errors import ModelLoadError
    from emotion_ros.ros import conversions
    out = {}
    # A processing failure of the pipeline (not the frame's fault): errors_total, not bad input.

    def broken(*args, **kwargs):
        raise ModelLoadError('the emotion model vanished (fault made by the test)')
    perception.pipeline.process = broken
    import numpy as np
    perception._latest = (conversions.rgb_to_image(np.zeros((48, 64, 3), np.uint8),
                                                   Image().header), time.monotonic())
    before_bad = perception.bad_inputs.total
    perception._process()
    values = perception.health.values()
    out['process'] = {'errors_total': values['errors_total'],
                      'errors.timer.process': values.get('errors.timer.process', 0),
                      'bad_inputs_added': perception.bad_inputs.total - before_bad,
                      'level': ord(perception.health.status()[0]),
                      'reason': perception.health.last_reason}
    # camera_info and depth callbacks: an unexpected error stops at the boundary.
    for sub in perception.subscriptions:
        if sub.topic_name.endswith(('/camera_info', '/depth')):
            sub.callback(CameraInfo() if sub.topic_name.endswith('/depth') else None)
    out['camera'] = {k: v for k, v in perception.health.counts.items()
                     if k.startswith('subscription.')}
    # alert_monitor: an output file that cannot be written.
    monitor.output = str(work)  # a directory
    for sub in monitor.subscriptions:
        if sub.topic_name.endswith('/distress_alerts'):
            sub.callback(DistressAlert(level=2, reasons=['fault made by the test']))
    out['monitor'] = {'counts': dict(monitor.health.counts),
                      'level': ord(monitor.health.status()[0])}
    return out


def child(out: Path, work: Path) -> None:
    """Build every node, walk it, write the report to ``out``."""
    import numpy as np
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from emotion_ros.audio.pcm import write_wav
    from emotion_ros.evaluation import bags
    from emotion_ros.evaluation.bags import BagWriter, project_typestore

    wav = work / 'tone.wav'
    write_wav(wav, (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32), 16000)
    store = project_typestore()
    bag = work / 'bag'
    with BagWriter(bag, 'mcap', store) as writer:
        writer.add_topic('/cam', bags.IMAGE_TYPE)
        writer.write('/cam', int(1e9), bags.image_message(
            store, np.zeros((12, 16, 3), np.uint8), 1.0))
    rclpy.init(args=['walk', '--ros-args', '-r', f'__ns:=/{NAMESPACE}',
                     '-p', 'detector.type:=face', '-p', 'localization.use_depth:=true',
                     '-p', 'source:=wav', '-p', f'wav_path:={wav}'])
    from emotion_ros.ros.alert_monitor import AlertMonitor
    from emotion_ros.ros.audio_node import AudioNode
    from emotion_ros.ros.bag_player_node import BagPlayer
    from emotion_ros.ros.distress_node import DistressNode
    from emotion_ros.ros.microphone_node import MicrophoneNode
    from emotion_ros.ros.perception_node import PerceptionNode
    report = {'nodes': {}, 'cycles': []}
    perception = PerceptionNode()
    base = _counts(perception)
    for _ in range(5):
        assert perception.trigger_configure() == TransitionCallbackReturn.SUCCESS
        configured = _counts(perception)
        assert perception.trigger_activate() == TransitionCallbackReturn.SUCCESS
        active = _counts(perception)
        assert perception.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert perception.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        report['cycles'].append({'configured': configured, 'active': active,
                                 'cleaned_up': _counts(perception)})
    report['base'] = base
    perception.trigger_configure()
    perception.trigger_activate()
    nodes = [perception, AudioNode(), DistressNode(), MicrophoneNode(), AlertMonitor(),
             BagPlayer([Parameter('bag', value=str(bag))])]
    for node in nodes:
        report['nodes'][node.get_name()] = _walk(node)
    report['faults'] = _faults(perception, nodes[4], work)
    out.write_text(json.dumps(report, indent=1))
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    """The child's report (nodes built once for all tests here)."""
    work = tmp_path_factory.mktemp('walk')
    out = work / 'report.json'
    proc = subprocess.run([sys.executable, __file__, str(out), str(work)], cwd=ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0 and out.exists(), (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())


def test_the_walk_finds_unwrapped_callbacks(ros_node):
    """The walk reports a plain subscription, timer and service callback (so a pass above
    means something) and accepts the same callbacks behind NodeHealth.wrap."""
    from emotion_ros.ros.health import NodeHealth
    from std_msgs.msg import String
    from emotion_ros_msgs.srv import ListIncidents
    node = ros_node('walk_check')
    node.create_subscription(String, 'plain', lambda msg: None, 10)
    node.create_timer(10.0, lambda: None)
    node.create_service(ListIncidents, 'plain_srv', lambda req, res: res)
    assert len(_walk(node)['unwrapped']) == 3
    other = ros_node('walk_check_wrapped')
    health = NodeHealth(other)
    other.create_subscription(String, 'plain', health.wrap(lambda msg: None, 'subscription',
                                                           'plain'), 10)
    other.create_timer(10.0, health.wrap(lambda: None, 'timer', 't'))
    other.create_service(ListIncidents, 'wrapped_srv',
                         health.wrap(lambda req, res: res, 'service', 's'))
    assert _walk(other)['unwrapped'] == []


EXECUTABLES = ('perception_node', 'audio_node', 'distress_node', 'microphone_node',
               'alert_monitor', 'bag_player')


def test_every_node_executable_is_walked(report):
    """Each node executable of setup.py is among the walked nodes (a new node is walked
    too, or this fails)."""
    text = (ROOT / 'setup.py').read_text()
    executables = set(re.findall(r"'(\w+) = emotion_ros\.ros\.\w+:main'", text))
    assert executables == set(EXECUTABLES) == set(report['nodes'])


@pytest.mark.parametrize('node', EXECUTABLES)
def test_every_callback_is_behind_the_boundary(report, node):
    """Every subscription (and event handler), timer, service and guard condition callback
    a node registered is wrapped by the error boundary."""
    assert report['nodes'][node]['unwrapped'] == []


@pytest.mark.parametrize('node', EXECUTABLES)
def test_diagnostics_name_is_namespace_and_node(report, node):
    """Each node's /diagnostics status is named 'emotion_ros: <namespace>/<node>', as
    docs/messages.md says."""
    walked = report['nodes'][node]
    assert walked['diagnostics'] == f'emotion_ros: {NAMESPACE}/{node}'
    assert walked['fqn'] == f'/{NAMESPACE}/{node}'
    doc = (ROOT / 'docs' / 'messages.md').read_text()
    assert 'status name `emotion_ros: <namespace>/<node>`' in doc


def _doc_rows() -> dict:
    rows = {}
    text = (ROOT / 'docs' / 'messages.md').read_text()
    topics = text.split('\n## Topics\n', 1)[1].split('\n## ', 1)[0]
    for line in topics.splitlines():
        cells = [c.strip() for c in line.split('|')]
        if len(cells) > 4 and cells[1].startswith('`'):
            for topic in re.findall(r'`([/\w]+)`', cells[1]):
                rows[topic] = cells[3]
    return rows


def test_documented_qos_depths_and_reliability_match_the_code(report):
    """For every topic in docs/messages.md, each publisher and subscription the nodes create
    on it has its depth and reliability written in the topic's QoS cell."""
    rows = _doc_rows()
    checked = 0
    for node, walked in report['nodes'].items():
        for kind, topic, depth, reliability in walked['qos']:
            name = topic if not topic.startswith(f'/{NAMESPACE}/') else \
                topic[len(NAMESPACE) + 2:]
            if node == 'bag_player' or name not in rows:
                continue  # bag_player republishes a bag's topics (qos_depth parameter)
            cell = rows[name]
            depths = {int(d) for d in re.findall(r'depth (\d+)', cell)}
            depths |= {int(d) for d in re.findall(r'_depth` \((\d+)\)', cell)}
            assert depth in depths, (node, kind, name, depth, cell)
            words = {'reliable': 'reliable', 'best_effort': 'best effort'}
            if not cell.startswith('sensor data') and '_reliability' not in cell:
                assert words[reliability] in cell, (node, kind, name, reliability, cell)
            checked += 1
    assert checked >= 20, checked


def test_faults_in_callbacks_are_counted_errors(report):
    """Faults made inside real callbacks stop at the boundary and are counted: a pipeline
    processing failure in errors_total (not as bad input) with ERROR and its reason; a
    camera_info and a depth callback that raise; alert_monitor unable to write its file."""
    from diagnostic_msgs.msg import DiagnosticStatus
    faults = report['faults']
    process = faults['process']
    assert process['errors.timer.process'] == 1 and process['errors_total'] >= 1
    assert process['bad_inputs_added'] == 0
    assert process['level'] == ord(DiagnosticStatus.ERROR)
    assert 'emotion model vanished' in process['reason']
    assert faults['camera'] == {'subscription.camera_info': 1, 'subscription.depth': 1}
    assert faults['monitor']['counts'] == {'subscription.distress_alerts': 1}
    assert faults['monitor']['level'] == ord(DiagnosticStatus.ERROR)


def test_five_configure_cleanup_cycles_leave_nothing_behind(report):
    """Over five configure/activate/deactivate/cleanup cycles perception_node's
    subscriptions, publishers, timers and services are the same in every cycle, more
    while configured, and back to the unconfigured count after each cleanup."""
    base, cycles = report['base'], report['cycles']
    assert len(cycles) == 5
    for cycle in cycles:
        assert cycle['cleaned_up'] == base, cycle
        assert cycle == cycles[0]
    first = cycles[0]
    assert first['configured']['subscriptions'] >= base['subscriptions'] + 3  # image, info, depth
    assert first['configured']['publishers'] >= base['publishers'] + 2
    assert first['configured']['services'] == base['services'] + 1  # explain_person
    assert first['active']['timers'] == first['configured']['timers'] + 1  # processing


def test_parameters_doc_is_generated_for_every_node():
    """docs/parameters.md is what tools/gen_params.py renders now, with a section for every
    node executable (bag_player and alert_monitor included)."""
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import gen_params
    finally:
        sys.path.pop(0)
    text = (ROOT / 'docs' / 'parameters.md').read_text()
    assert text == gen_params.render_markdown()
    for node in EXECUTABLES:
        assert f'\n## {node}\n' in text


if __name__ == '__main__':
    child(Path(sys.argv[1]), Path(sys.argv[2]))
