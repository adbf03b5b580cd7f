"""Incidents through real topics: a distress_node process, estimates and cues from the test."""

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from emotion_ros_msgs.msg import (AudioCues, AudioFrame, DistressAlert, Incident, IncidentArray,
                                  PersonEmotionArray)
from emotion_ros_msgs.srv import IncidentCommand, ListIncidents
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from visualization_msgs.msg import MarkerArray

from conftest import wait_until
from emotion_ros.llm.contract import CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.ros import conversions
from emotion_ros.types import (AudioCueResult, EmotionOutput, FrameResult, LEVEL_DISTRESS,
                               LEVEL_EMERGENCY, PersonEstimate, Position)
from rosgraph import params

LATCHED = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def estimate(track_id, fear, box=(100, 50, 160, 250), camera='', xyz=None, valence=None):
    """A person estimate (fear score, low valence with fear)."""
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[CATEGORY_INDEX['Fear']] = fear
    scores[CATEGORY_INDEX['Happiness']] = 0.8 if fear == 0 else 0.0
    valence = valence if valence is not None else (2.0 if fear > 0.5 else 6.5)
    position = None
    if xyz is not None:
        cov = (0.02, 0, 0, 0, 0.02, 0, 0, 0, 0.02)
        position = Position(frame_id='map', xyz=xyz, covariance=cov,
                            azimuth=0.1, elevation=0.0, camera_frame=f'{camera}_optical',
                            source='depth')
    return PersonEstimate(track_id=track_id, box=box, detection_confidence=0.9,
                          emotion=EmotionOutput(scores=scores, vad=(valence, 6.0, 4.0)),
                          model_id='test', camera=camera, evidence_weight=1.0,
                          position=position)


def cues(stamp, help_detected=False):
    """One audio cue window."""
    return AudioCueResult(stamp=stamp, window_s=1.5, speech_probability=0.9,
                          voice_active=help_detected, help_detected=help_detected,
                          keywords=['help'] if help_detected else [],
                          keyword_confidence=0.9 if help_detected else 0.0, scream_score=0.0,
                          loudness_dbfs=-20.0, pitch_hz=200.0, spectral_centroid_hz=900.0,
                          vocal_arousal=5.0)


class Driver:
    """The test's side of the graph: publishes estimates/cues, collects alerts and incidents."""

    def __init__(self, ros_node, name='incident_driver'):
        self.spin = ros_node.spin
        self.node = node = ros_node(name)
        self.alerts, self.incidents, self.diags, self.markers = [], [], [], []
        node.create_subscription(DistressAlert, 'distress_alerts', self.alerts.append, 100)
        node.create_subscription(IncidentArray, 'incidents', self.incidents.append, LATCHED)
        node.create_subscription(DiagnosticArray, '/diagnostics', self.diags.append, 50)
        node.create_subscription(MarkerArray, 'incident_markers', self.markers.append, LATCHED)
        self.persons = node.create_publisher(PersonEmotionArray, 'persons', 50)
        self.cues = node.create_publisher(AudioCues, 'audio_cues', 50)
        self.clients = {}

    def wait_connected(self, process):
        """Until the distress node subscribes to what we publish."""
        assert wait_until(lambda: self.persons.get_subscription_count() > 0
                          and self.cues.get_subscription_count() > 0, 60, self.spin), \
            process.output()[-3000:]

    def frame(self, stamp, persons, camera='', frame_id='cam_optical'):
        """Publish one PersonEmotionArray and let the graph breathe."""
        result = FrameResult(stamp=stamp, frame_id=frame_id, width=640, height=480,
                             persons=persons, timings_ms={}, camera=camera)
        self.persons.publish(conversions.frame_to_msg(result, 1.0))
        self.spin(0.01)

    def cue(self, stamp, help_detected=False, frame_id='mic'):
        """Publish one AudioCues."""
        self.cues.publish(conversions.cues_to_msg(cues(stamp, help_detected), frame_id))
        self.spin(0.01)

    def settle(self, predicate, timeout=20):
        """Spin until ``predicate()`` or the deadline."""
        return wait_until(predicate, timeout, self.spin)

    def call(self, srv_type, name, request):
        """Call a service of the distress node."""
        client = self.clients.get(name) or self.node.create_client(srv_type, name)
        self.clients[name] = client
        assert wait_until(client.service_is_ready, 30, self.spin)
        future = client.call_async(request)
        assert wait_until(future.done, 30, self.spin)
        return future.result()

    def status(self):
        """Key/values of the distress node's newest /diagnostics status."""
        for array in reversed(self.diags):
            for status in array.status:
                if status.name == 'emotion_ros: distress_node':
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def wait_frames(self, count):
        """Until the distress node has received ``count`` person frames (diagnostics)."""
        assert self.settle(lambda: int(self.status().get('person_frames_total', 0)) >= count)

    def open_incidents(self):
        """Open incidents of the newest latched list."""
        if not self.incidents:
            return []
        return [i for i in self.incidents[-1].incidents if i.state != Incident.STATE_RESOLVED]


def message_time_node(start_node, *overrides):
    """A distress node judging stamps against the newest stamp (the test's own time line)."""
    return start_node('distress_node', *params('use_node_clock:=false', 'expect_audio:=false',
                                               'diagnostics_period_s:=0.2', *overrides))


def test_out_of_view_and_back_is_one_incident(start_node, ros_node):
    """A frightened person out of view for 3 s and back (new track id) is one incident: no
    second alert, both tracks listed."""
    node = message_time_node(start_node)
    drv = Driver(ros_node)
    drv.wait_connected(node)
    t0 = 1000.0
    for k in range(15):
        drv.frame(t0 + 0.2 * k, [estimate(1, 0.95)])
    for k in range(15):  # 3 s nobody
        drv.frame(t0 + 3.0 + 0.2 * k, [])
    for k in range(15):
        drv.frame(t0 + 6.0 + 0.2 * k, [estimate(8, 0.95, box=(130, 60, 190, 255))])
    assert drv.settle(lambda: drv.open_incidents()
                      and len(drv.open_incidents()[0].tracks) == 2), node.output()[-3000:]
    assert len({a.incident_id for a in drv.alerts}) == 1
    levels = [a.level for a in drv.alerts]
    assert levels == sorted(set(levels)), levels
    [incident] = drv.open_incidents()
    assert incident.tracks == ['cam_optical/1', 'cam_optical/8']
    assert all(a.header.frame_id == 'cam_optical' for a in drv.alerts)


def test_call_for_help_leave_come_back_is_one_incident_that_escalates(start_node, ros_node):
    """He calls for help in view, leaves while it is heard, comes back frightened: one
    incident, DISTRESS then EMERGENCY, the audio alert framed by the microphone."""
    node = message_time_node(start_node)
    drv = Driver(ros_node)
    drv.wait_connected(node)
    t0 = 2000.0
    for k in range(10):
        drv.frame(t0 + 0.2 * k, [estimate(2, 0.0, valence=4.5)])
    drv.wait_frames(10)  # topics are not ordered with each other: frames first, then the call
    for k in range(8):
        drv.cue(t0 + 2.0 + 0.5 * k, help_detected=k < 3)
        drv.frame(t0 + 2.0 + 0.5 * k, [estimate(2, 0.0, valence=4.5)] if k == 0 else [])
    for k in range(20):
        drv.frame(t0 + 7.0 + 0.2 * k, [estimate(5, 0.95)])
    expected = [LEVEL_DISTRESS, LEVEL_EMERGENCY]
    assert drv.settle(lambda: [a.level for a in drv.alerts] == expected), \
        [conversions.format_alert(a) for a in drv.alerts]
    assert len({a.incident_id for a in drv.alerts}) == 1
    assert drv.alerts[0].header.frame_id == 'mic' and drv.alerts[0].has_person
    assert drv.alerts[0].person.header.frame_id == 'cam_optical'
    assert drv.settle(lambda: drv.open_incidents() and drv.open_incidents()[0].help_heard)


def test_two_namespaced_cameras_same_person_is_one_incident(start_node, ros_node):
    """Two cameras (namespaced publishers, same track id) seeing one person at the same map
    position give one incident with both cameras; a second person 4 m away gets another."""
    node = message_time_node(start_node)
    left = Driver(ros_node, 'cam_left_driver')
    left.wait_connected(node)
    right_node = ros_node('perception_node_right')
    right = right_node.create_publisher(PersonEmotionArray, '/persons', 50)
    assert wait_until(lambda: right.get_subscription_count() > 0, 30, left.spin)
    t0 = 3000.0
    for k in range(20):
        left.frame(t0 + 0.2 * k, [estimate(1, 0.95, camera='cam_left', xyz=(4.0, 1.0, 0.0))],
                   camera='cam_left', frame_id='left_optical')
        result = FrameResult(stamp=t0 + 0.2 * k + 0.05, frame_id='right_optical', width=640,
                             height=480, camera='cam_right', timings_ms={}, persons=[
                                 estimate(1, 0.95, camera='cam_right', xyz=(4.2, 1.1, 0.0)),
                                 estimate(2, 0.95, box=(400, 50, 460, 250), camera='cam_right',
                                          xyz=(4.0, 5.0, 0.0))])
        right.publish(conversions.frame_to_msg(result, 1.0))
    assert left.settle(lambda: len(left.open_incidents()) == 2
                       and any(len(i.cameras) == 2 for i in left.open_incidents()))
    shared = next(i for i in left.open_incidents() if len(i.cameras) == 2)
    assert shared.cameras == ['cam_left', 'cam_right']
    assert shared.tracks == ['cam_left/1', 'cam_right/1']
    assert shared.position.point.header.frame_id == 'map' and shared.position.has_point
    # RViz markers: a sphere per incident with a position.
    assert left.settle(lambda: left.markers and len(
        [m for m in left.markers[-1].markers if m.ns == 'incidents']) == 2)


def test_late_transient_local_subscriber_gets_every_open_incident(start_node, ros_node):
    """Three distressed people, then a late TRANSIENT_LOCAL subscriber (periodic republish
    off) receives the list with all three open incidents at once."""
    node = message_time_node(start_node, 'incidents_period_s:=0.0')
    drv = Driver(ros_node)
    drv.wait_connected(node)
    people = [estimate(i + 1, 0.9, box=(40 + 200 * i, 50, 100 + 200 * i, 250)) for i in range(3)]
    for k in range(15):
        drv.frame(4000.0 + 0.2 * k, people)
    assert drv.settle(lambda: len(drv.open_incidents()) == 3)
    late = ros_node('late_operator_ui')
    received = []
    late.create_subscription(IncidentArray, 'incidents', received.append, LATCHED)
    assert wait_until(lambda: received and len(received[-1].incidents) == 3, 20, drv.spin)
    assert sorted(i.id for i in received[-1].incidents) == sorted(
        i.id for i in drv.open_incidents())
    listed = drv.call(ListIncidents, 'list_incidents', ListIncidents.Request())
    assert len(listed.incidents) == 3


def test_acknowledge_and_reject_through_services(start_node, ros_node):
    """acknowledge/reject services change the state; the rejected person does not re-alert
    (even escalating); unknown ids are refused."""
    node = message_time_node(start_node, 'reject_hold_s:=600.0')
    drv = Driver(ros_node)
    drv.wait_connected(node)
    t0 = 5000.0
    a_box, b_box = (40, 50, 100, 250), (400, 50, 460, 250)
    for k in range(10):
        drv.frame(t0 + 0.2 * k, [estimate(1, 0.5, box=a_box, valence=4.5),
                                 estimate(2, 0.5, box=b_box, valence=4.5)])
    assert drv.settle(lambda: len(drv.open_incidents()) == 2)
    first, second = sorted(drv.open_incidents(), key=lambda i: i.tracks)
    reply = drv.call(IncidentCommand, 'acknowledge_incident',
                     IncidentCommand.Request(id=first.id, note='on my way', operator_id='op'))
    assert reply.success and reply.incident.state == Incident.STATE_ACKNOWLEDGED
    reply = drv.call(IncidentCommand, 'reject_incident',
                     IncidentCommand.Request(id=second.id, note='mannequin', operator_id='op'))
    assert reply.success and reply.incident.rejected
    bad = drv.call(IncidentCommand, 'confirm_incident',
                   IncidentCommand.Request(id=999, operator_id='op'))
    assert not bad.success and '999' in bad.message
    before = len(drv.alerts)
    for k in range(25):  # both now frightened: only the acknowledged one escalates
        drv.frame(t0 + 2.0 + 0.2 * k, [estimate(1, 0.95, box=a_box),
                                       estimate(7, 0.95, box=b_box)])
    assert drv.settle(lambda: any(a.incident_id == first.id and a.level == LEVEL_EMERGENCY
                                  for a in drv.alerts))
    assert all(a.incident_id != second.id for a in drv.alerts[before:])
    listed = drv.call(ListIncidents, 'list_incidents', ListIncidents.Request())
    states = {i.id: i for i in listed.incidents}
    assert states[second.id].state == Incident.STATE_REJECTED
    assert states[second.id].note == 'mannequin' and 'cam_optical/7' in states[second.id].tracks
    assert states[first.id].acknowledged


def test_clock_step_back_and_future_stamp_are_handled(start_node, ros_node):
    """With the node clock: a cue stamped 10^6 s ahead is rejected and counted (no alert); after
    the stamps step back 100 s a new call for help still alerts at once; both counted in
    /diagnostics."""
    node = start_node('distress_node', *params('expect_audio:=false',
                                               'diagnostics_period_s:=0.5'))
    drv = Driver(ros_node)
    drv.wait_connected(node)
    now = time.time()
    for k in range(10):
        drv.frame(now + 0.1 * k, [estimate(1, 0.0)])
        drv.cue(now + 0.1 * k)
    drv.cue(now + 1e6, help_detected=True)
    for k in range(10):
        drv.frame(now + 1.0 + 0.1 * k, [estimate(1, 0.0)])
    stepped = now - 100.0
    for k in range(4):
        drv.cue(stepped + 0.5 * k, help_detected=k == 3)
    assert drv.settle(lambda: drv.alerts), node.output()[-3000:]
    assert len(drv.alerts) == 1 and drv.alerts[0].header.stamp.sec == int(stepped + 1.5)

    def counters():
        for array in reversed(drv.diags):
            for status in array.status:
                if status.name == 'emotion_ros: distress_node':
                    return {kv.key: kv.value for kv in status.values}
        return {}
    assert drv.settle(lambda: counters().get('future_stamps_rejected') == '1'
                      and counters().get('clock_steps_back') == '1')
    assert counters().get('bad_input.future_stamp') == '1'
    assert 'clock stepped back' in node.output()


def test_audio_node_killed_turns_distress_node_warn(start_node, ros_node):
    """With audio expected, killing the audio node mid-stream turns distress_node's
    /diagnostics to WARN within a few seconds, naming the audio cues."""
    audio = start_node('audio_node', *params('vad_backend:=energy', 'keyword_spotting:=false'))
    distress = start_node('distress_node', *params('diagnostics_period_s:=0.5',
                                                   'input_timeout_s:=2.0'))
    drv = Driver(ros_node)
    audio_pub = drv.node.create_publisher(AudioFrame, 'audio', 50)
    assert wait_until(lambda: audio_pub.get_subscription_count() > 0, 60, drv.spin), \
        audio.output()[-2000:]

    def status():
        for array in reversed(drv.diags):
            for s in array.status:
                if s.name == 'emotion_ros: distress_node':
                    return s
        return None

    rate = 16000
    t = time.time()
    noise = np.random.default_rng(0).normal(0, 0.05, rate // 10).astype(np.float32)
    deadline = time.monotonic() + 60
    got_cues = False
    while time.monotonic() < deadline and not got_cues:
        audio_pub.publish(conversions.samples_to_audio_frame(
            noise, rate, 'S16LE', conversions.make_header(t, 'mic')))
        t += 0.1
        drv.frame(t, [estimate(1, 0.0)])
        drv.spin(0.08)
        s = status()
        got_cues = s is not None and float(dict(
            (kv.key, kv.value) for kv in s.values).get('audio_cues_rate_hz', '0')) > 0
    assert got_cues, distress.output()[-2000:] + audio.output()[-2000:]
    audio.stop()
    killed = time.monotonic()
    warned = False
    while time.monotonic() - killed < 15 and not warned:
        t += 0.2
        drv.frame(t, [estimate(1, 0.0)])  # person estimates keep coming
        drv.spin(0.2)
        s = status()
        warned = s is not None and s.level == s.WARN and 'audio cues stopped' in s.message
    assert warned, status()
    assert time.monotonic() - killed < 10


def test_alert_monitor_shows_and_acknowledges_incidents(start_node, ros_node):
    """alert_monitor started late prints the open incident; `alert_monitor --operator alice
    acknowledge <id>` acknowledges it through the service, bob's repeat is refused naming
    alice, `history` lists both commands, the monitor prints them and `list` shows the
    flag."""
    import subprocess
    import sys
    from pathlib import Path
    node = message_time_node(start_node)
    drv = Driver(ros_node)
    drv.wait_connected(node)
    for k in range(15):
        drv.frame(6000.0 + 0.2 * k, [estimate(3, 0.95)])
    assert drv.settle(lambda: drv.open_incidents())
    [incident] = drv.open_incidents()
    monitor = start_node('alert_monitor')
    assert wait_until(lambda: f'incident #{incident.id} ' in monitor.output(), 30, drv.spin), \
        monitor.output()
    exe = str(Path(sys.executable).parent / 'alert_monitor')
    ack = subprocess.run([exe, '--operator', 'alice', 'acknowledge', str(incident.id),
                          'team 2 on the way'], capture_output=True, text=True, timeout=60)
    assert ack.returncode == 0, ack.stdout + ack.stderr
    assert f'incident {incident.id} acknowledged by alice' in ack.stdout
    again = subprocess.run([exe, '--operator', 'bob', 'acknowledge', str(incident.id), 'me too'],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and 'already acknowledged by alice' in again.stdout
    history = subprocess.run([exe, 'history', str(incident.id)], capture_output=True,
                             text=True, timeout=60)
    lines = history.stdout.splitlines()
    assert history.returncode == 0 and len(lines) == 3, history.stdout
    assert 'alice acknowledge "team 2 on the way" -> ACKNOWLEDGED' in lines[1]
    assert 'bob acknowledge "me too" refused: already acknowledged by alice' in lines[2]
    assert wait_until(lambda: f'incident #{incident.id} command: ' in monitor.output()
                      and 'bob acknowledge' in monitor.output(), 30, drv.spin), \
        monitor.output()
    listed = subprocess.run([exe, 'list'], capture_output=True, text=True, timeout=60)
    assert f'#{incident.id} ' in listed.stdout and '[ack]' in listed.stdout, listed.stdout
    assert wait_until(lambda: 'ACKNOWLEDGED [ack]' in monitor.output(), 30, drv.spin)
    missing = subprocess.run([exe, 'reject', '4242'], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and '4242' in missing.stdout


def set_parameters(drv, node_name, **values):
    """Set parameters of a node through its set_parameters service; the results."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    params_ = []
    for name, value in values.items():
        if isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        params_.append(Parameter(name=name, value=pv))
    reply = drv.call(SetParameters, f'/{node_name}/set_parameters',
                     SetParameters.Request(parameters=params_))
    return reply.results


def test_run_time_parameters_take_effect_or_are_refused(start_node, ros_node):
    """A fusion parameter changed at run time changes what the node does (persons below the new
    min_detection_confidence are ignored, then counted again); a QoS parameter is refused as
    read-only."""
    node = message_time_node(start_node)
    drv = Driver(ros_node)
    drv.wait_connected(node)
    [result] = set_parameters(drv, 'distress_node', min_detection_confidence=0.95)
    assert result.successful, result.reason
    # Frames go out every 0.2 s of message time until the node has counted 15 of them (on a
    # loaded machine the first ones can be lost before both sides of the topic match).
    stamps = iter(7000.0 + 0.2 * k for k in range(1000))
    stamp = 0.0

    def send_until(done):
        nonlocal stamp
        stamp = next(stamps)
        drv.frame(stamp, [estimate(1, 0.95)])  # detection confidence 0.9
        return done()
    assert wait_until(lambda: send_until(
        lambda: int(drv.status().get('person_frames_total', 0)) >= 15), 60, drv.spin)
    drv.spin(0.5)
    assert drv.open_incidents() == [] and drv.alerts == []
    [result] = set_parameters(drv, 'distress_node', min_detection_confidence=0.3)
    assert result.successful, result.reason
    assert wait_until(lambda: send_until(lambda: drv.alerts and drv.open_incidents()), 60,
                      drv.spin)
    [refused] = set_parameters(drv, 'distress_node', incidents_depth=50)
    assert not refused.successful and 'read-only' in refused.reason.lower()


def test_incidents_age_when_all_input_stops(start_node, ros_node):
    """When no estimates or cues arrive any more, an open incident still goes STALE and then
    RESOLVED on the node's clock (latched list updated)."""
    node = start_node('distress_node', *params('expect_audio:=false', 'stale_after_s:=2.0',
                                               'expire_s:=4.0'))
    drv = Driver(ros_node)
    drv.wait_connected(node)
    now = time.time()
    for k in range(15):
        drv.frame(now + 0.2 * k, [estimate(1, 0.95)])
    assert drv.settle(lambda: drv.open_incidents())
    [incident] = drv.open_incidents()
    assert drv.settle(lambda: any(i.id == incident.id and i.state == Incident.STATE_STALE
                                  for i in drv.incidents[-1].incidents), 30)
    assert drv.settle(lambda: any(i.id == incident.id and i.state == Incident.STATE_RESOLVED
                                  for i in drv.incidents[-1].incidents), 30)
    assert 'no evidence' in next(i for i in drv.incidents[-1].incidents
                                 if i.id == incident.id).resolution


def test_audio_only_estimate_on_voice_emotions_opens_an_audio_only_incident(start_node,
                                                                            ros_node):
    """voice_emotions (the audio_visual model scoring a voice with nobody in view): a
    frightened voice opens one audio-only incident naming the voice, a calm one nothing;
    counted in /diagnostics."""
    node = message_time_node(start_node)
    drv = Driver(ros_node)
    voices = drv.node.create_publisher(PersonEmotionArray, 'voice_emotions', 20)
    drv.wait_connected(node)
    assert wait_until(lambda: voices.get_subscription_count() > 0, 60, drv.spin)

    def send(stamp, fear):
        voice = estimate(0, fear, box=(0, 0, 0, 0))
        voice.emotion.face_visible = False
        result = FrameResult(stamp=stamp, frame_id='cam_optical', width=640, height=480,
                             persons=[], timings_ms={}, voice=voice)
        voices.publish(conversions.voice_to_msg(result, 1.0))
        drv.spin(0.01)

    stamps = iter(8000.0 + 0.2 * k for k in range(1000))
    # A calm voice: nothing, however long it is heard.
    assert wait_until(lambda: send(next(stamps), 0.0) or
                      int(drv.status().get('voice_estimates_total', 0)) >= 15, 60, drv.spin)
    drv.spin(0.5)
    assert drv.open_incidents() == [] and drv.alerts == []
    # A frightened voice: one audio-only incident, above WATCH once it lasted.
    assert wait_until(lambda: send(next(stamps), 0.95) or any(
        a.level >= LEVEL_DISTRESS for a in drv.alerts), 60, drv.spin), drv.status()
    [incident] = drv.open_incidents()
    assert not incident.has_person and 'nobody visible' in incident.reasons
    assert any('voice heard' in r for r in incident.reasons), incident.reasons
    assert {a.incident_id for a in drv.alerts} == {incident.id}


def command(drv, action, incident_id, operator, note=''):
    """Call one operator command service."""
    return drv.call(IncidentCommand, f'{action}_incident',
                    IncidentCommand.Request(id=incident_id, note=note, operator_id=operator))


def test_operators_outside_the_accepted_list_are_refused_and_history_is_published(
        start_node, ros_node):
    """With accepted_operators set, a command from another operator id (or none) is refused
    with the reason, changes nothing, is counted in /diagnostics (WARN naming it); accepted
    operators' commands, a refused repeat included, are in the incident's history in the
    latched IncidentArray (who, when, action, note, outcome, state)."""
    node = message_time_node(start_node, 'accepted_operators:=[alice,bob]')
    drv = Driver(ros_node)
    drv.wait_connected(node)
    for k in range(15):
        drv.frame(9000.0 + 0.2 * k, [estimate(1, 0.95)])
    assert drv.settle(lambda: drv.open_incidents())
    [incident] = drv.open_incidents()
    rogue = command(drv, 'reject', incident.id, '/some_other_robot/rogue_ui', 'not ours')
    assert not rogue.success
    assert "'/some_other_robot/rogue_ui' is not among the accepted operators" in rogue.message
    assert "['alice', 'bob']" in rogue.message
    nameless = command(drv, 'acknowledge', incident.id, '')
    assert not nameless.success and 'operator_id is empty' in nameless.message
    listed = drv.call(ListIncidents, 'list_incidents', ListIncidents.Request())
    [same] = listed.incidents
    assert not same.rejected and not same.acknowledged and list(same.history) == []
    assert command(drv, 'acknowledge', incident.id, 'alice', 'on my way').success
    repeat = command(drv, 'acknowledge', incident.id, 'bob', 'me too')
    assert not repeat.success and 'already acknowledged by alice' in repeat.message
    confirmed = command(drv, 'confirm', incident.id, 'bob', 'seen on camera 2')
    assert confirmed.success and confirmed.incident.state == Incident.STATE_CONFIRMED
    back = command(drv, 'acknowledge', incident.id, 'alice')
    assert not back.success and back.incident.state == Incident.STATE_CONFIRMED

    def published():
        found = [i for i in (drv.incidents[-1].incidents if drv.incidents else [])
                 if i.id == incident.id]
        return found[0] if found and len(found[0].history) == 4 else None
    assert drv.settle(lambda: published() is not None)
    shown = published()
    assert [(e.operator_id, e.action, e.note, e.accepted, e.state) for e in shown.history] == [
        ('alice', 'acknowledge', 'on my way', True, Incident.STATE_ACKNOWLEDGED),
        ('bob', 'acknowledge', 'me too', False, Incident.STATE_ACKNOWLEDGED),
        ('bob', 'confirm', 'seen on camera 2', True, Incident.STATE_CONFIRMED),
        ('alice', 'acknowledge', '', False, Incident.STATE_CONFIRMED)]
    stamps = [conversions.stamp_to_sec(e.stamp) for e in shown.history]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 120  # node clock
    assert shown.confirmed and shown.note == 'seen on camera 2'
    expected = {'commands_refused.operator_not_accepted': '1',
                'commands_refused.no_operator': '1', 'commands_refused.transition': '2',
                'commands_accepted': '2', 'commands_refused': '4'}
    # A status published before the last commands may still be the newest one received.
    assert drv.settle(lambda: all(drv.status().get(k) == v for k, v in expected.items())), \
        drv.status()
    warn = next(s for a in reversed(drv.diags) for s in a.status
                if s.name == 'emotion_ros: distress_node')
    assert warn.level == warn.WARN and 'rogue_ui' in warn.message
    assert 'not among the accepted operators' in node.output()


def test_resolved_incident_stays_listed_closed_keep_s_after_the_resolve(start_node, ros_node):
    """Resolved 1.5 s after its last evidence, an incident is still in every published list
    (RESOLVED, with the resolve in its history) until closed_keep_s (2 s) after the command on
    the node's clock, and gone after that."""
    node = message_time_node(start_node, 'closed_keep_s:=2.0', 'incidents_period_s:=0.2')
    drv = Driver(ros_node)
    drv.wait_connected(node)
    for k in range(15):
        drv.frame(9500.0 + 0.2 * k, [estimate(1, 0.95)])
    assert drv.settle(lambda: drv.open_incidents())
    [incident] = drv.open_incidents()
    drv.spin(1.5)  # no evidence for a while: the old code counted from the last evidence
    reply = command(drv, 'resolve', incident.id, 'alice', 'paramedics took over')
    assert reply.success and reply.incident.state == Incident.STATE_RESOLVED
    resolved_at = conversions.stamp_to_sec(reply.incident.history[-1].stamp)
    start = len(drv.incidents)

    def gone():
        return any(conversions.stamp_to_sec(a.header.stamp) > resolved_at and not any(
            i.id == incident.id for i in a.incidents) for a in drv.incidents[start:])
    assert drv.settle(gone, 30), node.output()[-2000:]
    lists = [(conversions.stamp_to_sec(a.header.stamp), {i.id: i for i in a.incidents})
             for a in drv.incidents[start:]]
    kept = [(t, found[incident.id]) for t, found in lists
            if t >= resolved_at and incident.id in found]
    assert kept and max(t for t, _ in kept) >= resolved_at + 1.6, \
        [round(t - resolved_at, 2) for t, _ in lists]
    assert all(i.state == Incident.STATE_RESOLVED and i.history[-1].operator_id == 'alice'
               for _, i in kept)
    missing = [t - resolved_at for t, found in lists if incident.id not in found]
    assert missing and min(missing) >= 2.0, missing
