"""One definition of levels and states; incident conversions and RViz markers."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from emotion_ros_msgs.msg import DistressAlert, Incident, IncidentArray
from visualization_msgs.msg import Marker

from emotion_ros.fusion import incidents as inc
from emotion_ros import types
from emotion_ros.llm.contract import CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.fusion.distress import DistressFusion, FusionConfig
from emotion_ros.ros import conversions
from emotion_ros.ros.markers import incident_markers
from emotion_ros.types import (EmotionOutput, FrameResult, PersonEstimate, Position,
                               Transcript)

ROOT = Path(__file__).resolve().parents[1]


def test_levels_and_states_are_defined_once():
    """The message constants equal the one Python definition, and the docs list the same."""
    for name in ('LEVEL_WATCH', 'LEVEL_DISTRESS', 'LEVEL_EMERGENCY'):
        assert getattr(DistressAlert, name) == getattr(types, name) == getattr(Incident, name)
        assert getattr(types.Alert, name) == getattr(types, name)
    for value, name in inc.STATE_NAMES.items():
        assert getattr(Incident, f'STATE_{name}') == value
        assert conversions.STATE_NAMES[value] == name
    assert conversions.LEVEL_NAMES == types.LEVEL_NAMES
    docs = (ROOT / 'docs' / 'messages.md').read_text()
    for value, name in types.LEVEL_NAMES.items():
        assert re.search(rf'\| {name} \| {value} \|', docs), name
    for value, name in inc.STATE_NAMES.items():
        assert f'`STATE_{name}` ({value})' in docs or f'`{name}` ({value})' in docs, name


def _fused_incident(fusion=None):
    fusion = fusion if fusion is not None else DistressFusion(FusionConfig())
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[CATEGORY_INDEX['Fear']] = 0.95
    position = Position(frame_id='map', xyz=(4.0, 2.0, 0.0), covariance=(0.04, 0, 0, 0, 0.04,
                                                                         0, 0, 0, 0.09),
                        azimuth=0.2, elevation=-0.1, camera_frame='left_optical',
                        source='depth')
    for k in range(15):
        person = PersonEstimate(track_id=3, box=(10, 10, 50, 120), detection_confidence=0.9,
                                emotion=EmotionOutput(scores=scores, vad=(2.0, 7.5, 3.0)),
                                model_id='test', crop_jpeg=b'\xff\xd8jpeg', camera='cam_left',
                                position=position)
        fusion.update_frame(FrameResult(stamp=100 + 0.2 * k, frame_id='left_optical',
                                        width=640, height=480, persons=[person], timings_ms={},
                                        camera='cam_left'))
    fusion.update_transcript(Transcript(stamp=102.0, end=103.0, frame_id='microphone',
                                        text='help me', help_detected=True,
                                        help_phrase='help me'))
    return fusion.incidents()[0]


def test_incident_to_msg_carries_evidence_location_and_tracks():
    """An incident converts with its id, level, tracks, cameras, position (frame, covariance),
    person crop with its image header, and transcript."""
    incident = _fused_incident()
    msg = conversions.incident_to_msg(incident)
    assert msg.id == incident.id and msg.level == Incident.LEVEL_EMERGENCY
    assert msg.tracks == ['cam_left/3'] and msg.cameras == ['cam_left'] and msg.help_heard
    assert msg.has_position and msg.position.has_point
    assert msg.position.point.header.frame_id == 'map'
    assert msg.position.point.point.x == 4.0 and msg.position.covariance[8] == 0.09
    assert msg.has_person and bytes(msg.person.crop.data) == b'\xff\xd8jpeg'
    assert msg.person.header.frame_id == 'left_optical'
    assert msg.has_transcript and msg.transcript.text == 'help me'
    assert msg.header.frame_id == 'microphone'  # newest evidence: the transcript
    assert conversions.stamp_to_sec(msg.first_seen) < conversions.stamp_to_sec(msg.last_seen)
    back = conversions.msg_to_position(msg.position)
    assert back.xyz == (4.0, 2.0, 0.0) and back.source == 'depth'
    line = conversions.format_incident(msg)
    assert line.startswith(f'#{msg.id} EMERGENCY') and 'in map' in line


def test_person_position_round_trip_and_bearing_only():
    """PersonEmotion carries camera, weight and a bearing-only position (NaN point) intact."""
    person = PersonEstimate(
        track_id=2, box=(1, 2, 3, 4), detection_confidence=0.5,
        emotion=EmotionOutput.unknown(), model_id='m', camera='cam_right', evidence_weight=0.55,
        position=Position(frame_id='right_optical', xyz=(math.nan,) * 3,
                          covariance=(math.nan,) * 9, azimuth=-0.3, elevation=0.1,
                          camera_frame='right_optical', source='bearing'))
    msg = conversions.person_to_msg(person, conversions.make_header(5.0, 'right_optical'))
    assert msg.has_position and not msg.position.has_point
    back = conversions.msg_to_person(msg)
    assert back.camera == 'cam_right' and abs(back.evidence_weight - 0.55) < 1e-6
    assert not back.position.has_point and abs(back.position.azimuth + 0.3) < 1e-6


def test_markers_show_incidents_and_delete_gone_ones():
    """A sphere and a label per positioned incident in its frame, coloured by level; markers of
    incidents no longer listed are deleted."""
    msg = conversions.incident_to_msg(_fused_incident())
    markers, shown = incident_markers(IncidentArray(incidents=[msg]), set())
    spheres = [m for m in markers.markers if m.ns == 'incidents']
    assert len(spheres) == 1 and spheres[0].type == Marker.SPHERE
    assert spheres[0].header.frame_id == 'map' and spheres[0].color.r == 1.0
    assert spheres[0].scale.x >= 0.4 and shown == {msg.id}
    labels = [m for m in markers.markers if m.ns == 'incident_labels']
    assert 'EMERGENCY' in labels[0].text
    cleared, shown = incident_markers(IncidentArray(), shown)
    assert {(m.ns, m.action) for m in cleared.markers} == {('incidents', Marker.DELETE),
                                                           ('incident_labels', Marker.DELETE)}
    assert shown == set()


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_bags_with_incidents_from_before_the_history_still_read(tmp_path, storage):
    """An 'incidents' topic recorded with Incident as it was before `history` (the current
    definition minus that field) decodes from the bag's own definition; a new bag carries
    the history."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import get_types_from_msg

    from emotion_ros.evaluation.bags import BagReader, BagWriter, project_typestore
    fusion = DistressFusion(FusionConfig())
    incident = _fused_incident(fusion)
    assert fusion.command(incident.id, 'acknowledge', 'on my way', 'alice', stamp=5.0)[0]
    msg = conversions.incident_to_msg(incident)
    data = serialize_message(IncidentArray(incidents=[msg]))
    msg_dir = ROOT / 'emotion_ros_msgs' / 'msg'
    current = (msg_dir / 'Incident.msg').read_text()
    assert 'IncidentHistoryEntry[] history' in current
    old = '\n'.join(line for line in current.splitlines()
                    if not line.startswith('IncidentHistoryEntry[]'))
    incident_type = 'emotion_ros_msgs/msg/Incident'
    array_type = 'emotion_ros_msgs/msg/IncidentArray'
    old_store = project_typestore(dict(get_types_from_msg(old, incident_type)))
    new_store = project_typestore()
    assert 'history' in [n for n, _ in new_store.fielddefs[incident_type][1]]
    new = new_store.deserialize_cdr(data, array_type)
    old_fields = [n for n, _ in old_store.fielddefs[incident_type][1]]
    assert 'history' not in old_fields
    old_msg = old_store.types[array_type](header=new.header, incidents=[
        old_store.types[incident_type](**{n: getattr(new.incidents[0], n) for n in old_fields})])
    with BagWriter(tmp_path / 'old', storage, old_store) as writer:
        writer.add_topic('/incidents', array_type)
        writer.write('/incidents', 10**9, old_msg)
    with BagWriter(tmp_path / 'new', storage, new_store) as writer:
        writer.add_topic('/incidents', array_type)
        writer.write_raw('/incidents', 10**9, data)
    for name, history in (('old', False), ('new', True)):
        with BagReader(tmp_path / name) as bag:
            [message] = list(bag.messages())
            [read] = bag.deserialize(message).incidents
        assert read.id == msg.id and list(read.tracks) == list(msg.tracks)
        assert read.note == 'on my way' and read.acknowledged
        assert bytes(read.person.crop.data) == b'\xff\xd8jpeg'
        assert hasattr(read, 'history') == history
        if history:
            assert [(e.operator_id, e.action, e.stamp.sec) for e in read.history] == [
                ('alice', 'acknowledge', 5)]
