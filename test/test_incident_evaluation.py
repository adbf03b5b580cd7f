"""Evaluation of incidents: labels with positions, duplicates, localisation, make-bag geometry."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from emotion_ros.evaluation.bags import BagReader
from emotion_ros.evaluation.bagtools import make_bag, MakeBagOptions
from emotion_ros.errors import InputError
from emotion_ros.evaluation.labels import labels_from_dict, labels_to_dict
from emotion_ros.evaluation.records import AlertRecord
from emotion_ros.evaluation.runner import camera_model_from_msg, depth_from_msg, evaluate, \
    RunOptions
from emotion_ros.evaluation.scoring import Scorer
from emotion_ros.perception.localization import LocalizationConfig, locate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'config' / 'robot.yaml'


def labels(position=(0.5, 0.2, 4.0)):
    """Two people; A in distress 10-20 s, an audio-only episode 40-45 s."""
    return labels_from_dict({
        'position_frame': 'camera',
        'persons': [
            {'id': 'A', 'spans': [{'start': 0, 'end': 30, 'box': [100, 100, 200, 400],
                                   'position': list(position)}]},
            {'id': 'B', 'spans': [{'start': 0, 'end': 60, 'box': [400, 100, 500, 400],
                                   'position': [-1.0, 0.2, 6.0]}]}],
        'episodes': [{'start': 10, 'end': 20, 'person': 'A'}, {'start': 40, 'end': 45}]})


def alert(t, incident, box=None, level=2, position=None, track=1):
    """An alert record."""
    return AlertRecord(t=t, stamp=1000 + t, track_id=track if box else 0, level=level,
                       score=0.7, reasons=['test'], box=box, incident_id=incident,
                       position=position, position_frame='camera' if position else '')


def test_labels_positions_parse_round_trip_and_errors():
    """Span positions and the position frame are read, written back, and validated."""
    lab = labels()
    assert lab.position_of('A', 5.0) == (0.5, 0.2, 4.0) and lab.position_frame == 'camera'
    assert lab.visible_at(5.0)[0].position == (0.5, 0.2, 4.0)
    again = labels_from_dict(labels_to_dict(lab))
    assert again.position_of('B', 50.0) == (-1.0, 0.2, 6.0)
    for bad in ([1, 2], ['a', 1, 2], [1, 2, float('nan')]):
        with pytest.raises(InputError, match='position'):
            labels_from_dict({'persons': [{'id': 'A', 'spans': [
                {'start': 0, 'end': 1, 'box': [0, 0, 1, 1], 'position': bad}]}]})


@pytest.mark.parametrize('incidents_for_a', [1, 2, 3])
def test_duplicates_false_incidents_and_localisation(incidents_for_a):
    """Each extra incident of person A's episode is a duplicate; an incident outside any episode
    is false (per hour of the window); localisation errors are the alert-label distances."""
    scorer = Scorer(labels())
    box_a = (100, 100, 200, 400)
    for k in range(incidents_for_a):
        scorer.add_alert(alert(11.0 + k, 10 + k, box_a, position=(0.5, 0.2, 4.0 + 0.1 * k)))
        scorer.add_alert(alert(11.5 + k, 10 + k, box_a, level=3, position=(0.8, 0.2, 4.0)))
    scorer.add_alert(alert(30.0, 99, (400, 100, 500, 400), position=(-1.0, 0.2, 7.0)))
    scorer.add_alert(alert(41.0, 50))  # audio-only, explains the audio-only episode
    m = scorer.incident_metrics((0.0, 60.0))
    first = m['per_episode'][0]
    assert first['incidents'] == incidents_for_a and first['alerts'] == 2 * incidents_for_a
    assert first['duplicates'] == incidents_for_a - 1
    assert first['time_to_first_alert_s'] == pytest.approx(1.0)
    assert m['per_episode'][1]['incidents'] == 1
    assert m['episodes_with_duplicates'] == (1 if incidents_for_a > 1 else 0)
    assert m['false_incidents'] == 1
    assert m['false_incidents_per_hour'] == pytest.approx(60.0)
    assert m['incidents_per_person'] == {'A': incidents_for_a, 'B': 1}
    errors = m['localisation_error_m']
    assert errors['count'] == 2 * incidents_for_a + 1
    assert errors['max'] == pytest.approx(1.0)  # B's false incident, 1 m off in depth
    assert m['localisation_within_5m'] == 1.0


def test_alert_records_keep_incident_and_position():
    """AlertRecord JSON keeps incident id and position; old records read as incident 0."""
    record = alert(3.0, 7, (1, 2, 3, 4), position=(1.0, 2.0, 3.0))
    back = AlertRecord.from_json(record.to_json())
    assert back.incident_id == 7 and back.position == (1.0, 2.0, 3.0)
    old = record.to_json()
    for key in ('incident_id', 'position', 'position_frame'):
        old.pop(key, None)
    assert AlertRecord.from_json(old).incident_id == 0


def test_make_bag_writes_camera_info_and_depth_that_locate_the_labelled_person(tmp_path):
    """make-bag --camera-info --depth writes CameraInfo and a 16UC1 depth image per frame in
    which the labelled person stands at their labelled depth: located from the bag's own
    messages, the person is within 5 cm of the label."""
    import cv2
    from emotion_ros.sample_media import sample_images
    photo = tmp_path / 'bus.jpg'
    cv2.imwrite(str(photo), cv2.resize(cv2.imread(str(sample_images()['bus'])), (480, 640)))
    spec = {'position_frame': 'camera', 'persons': [
        {'id': 'A', 'spans': [{'start': 0, 'end': 2, 'box': [40, 150, 160, 560],
                               'position': [0.0, 0.0, 3.0]}]}], 'episodes': []}
    label_file = tmp_path / 'labels.yaml'
    label_file.write_text(yaml.safe_dump(spec))
    info = make_bag(tmp_path / 'bag', [f'{photo}@2'], [], str(label_file),
                    MakeBagOptions(fps=5, camera_info=True, depth=True, start_time=1000.0))
    assert {'/camera/camera_info', '/camera/depth/image_raw'} <= set(info.topics)
    assert info.topics['/camera/camera_info'].count == info.topics['/camera/image_raw'].count
    with BagReader(tmp_path / 'bag') as bag:
        model = depth = None
        for message in bag.messages(['/camera/camera_info', '/camera/depth/image_raw']):
            msg = bag.deserialize(message)
            if message.topic.endswith('camera_info'):
                model = camera_model_from_msg(msg)
            else:
                depth = depth_from_msg(msg)
    assert model.width == 480 and abs(model.fx - 240 / math.tan(math.radians(30))) < 1e-6
    assert depth.shape == (640, 480) and np.nanmax(depth) == pytest.approx(8.0)
    position = locate(model, (40, 150, 160, 560), (480, 640), LocalizationConfig(), depth)
    assert position.source == 'depth' and abs(position.xyz[2] - 3.0) < 0.05
    with pytest.raises(InputError, match='labels'):
        make_bag(tmp_path / 'bag2', [f'{photo}@1'], [], None, MakeBagOptions(depth=True))


def test_evaluate_scores_incidents_on_a_bag_with_depth(tmp_path):
    """A bag of a person in view who calls for help, with CameraInfo and depth, evaluated with
    the real light pipeline: the alert has a 3D position, one incident explains the episode,
    and the localisation error against the labelled position is small."""
    if shutil.which('espeak-ng') is None:
        pytest.fail('espeak-ng is needed (tools/setup_env.sh installs it)')
    import cv2
    from emotion_ros.sample_media import sample_images
    from rosgraph import espeak_wav
    from emotion_ros.perception.pipeline import PerceptionPipeline
    from emotion_ros.config.robot import load_robot_config
    rgb = cv2.resize(cv2.imread(str(sample_images()['zidane'])), (640, 360))[:, :, ::-1]
    photo = tmp_path / 'zidane.png'
    cv2.imwrite(str(photo), rgb[:, :, ::-1])
    pipeline = PerceptionPipeline(load_robot_config(str(CONFIG)).perception)
    pipeline.load()
    boxes = sorted((p.box for p in pipeline.process(np.ascontiguousarray(rgb), 0.0).persons),
                   key=lambda b: b[0])
    pipeline.close()
    assert boxes, 'the detector finds the people in zidane.jpg'
    wav = espeak_wav(tmp_path / 'help.wav', 'Help! Somebody help me!')
    persons = [{'id': f'P{i}', 'spans': [{'start': 0, 'end': 14, 'box': [float(v) for v in b],
                                          'position': [0.0, 0.0, 3.0 + i]}]}
               for i, b in enumerate(boxes)]
    spec = {'position_frame': 'camera', 'persons': persons,
            'episodes': [{'start': 6, 'end': 12, 'person': 'P0'}]}
    label_file = tmp_path / 'labels.yaml'
    label_file.write_text(yaml.safe_dump(spec))
    make_bag(tmp_path / 'bag', [f'{photo}@14'], [f'{wav}@6'], str(label_file),
             MakeBagOptions(fps=5, camera_info=True, depth=True, start_time=2000.0,
                            noise_dbfs=-60))
    metrics = evaluate(tmp_path / 'bag', label_file, CONFIG, tmp_path / 'out',
                       options=RunOptions(progress=False))
    incidents = metrics['incidents']
    assert incidents['incidents'] >= 1, metrics['distress']['alert_list']
    assert incidents['per_episode'][0]['incidents'] == 1
    assert incidents['localisation_error_m']['count'] >= 1
    # The position is the body centre (surface) seen in depth; the label is the box's plane.
    assert incidents['localisation_error_m']['max'] < 2.0
    assert (tmp_path / 'out' / 'alerts.jsonl').is_file()
