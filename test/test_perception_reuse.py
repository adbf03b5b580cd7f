"""Detect on change and emotion reuse (emotion_ros.perception.reuse) over many real-photo scenes.

Scenes are real photos: people cut from ultralytics' bus.jpg / zidane.jpg pasted
onto scikit-image's photos (coffee, rocket, chelsea, motorcycle, brick, grass), with
Gaussian sensor noise and JPEG compression as a camera adds them.
"""

import dataclasses
import itertools

import cv2
import numpy as np
import pytest

from emotion_ros.config.schema import from_mapping
from emotion_ros.errors import ConfigError
from emotion_ros.perception.reuse import (crop_thumbnail, EmotionCache, ReuseConfig,
                                          SceneChangeGate, same_box)
from emotion_ros.sample_media import sample_images
from emotion_ros.types import Detection

BACKGROUNDS = ('coffee.png', 'rocket.jpg', 'chelsea.png', 'motorcycle_left.png', 'brick.png',
               'grass.png')


def _skimage_photo(name):
    import skimage

    from pathlib import Path
    path = Path(skimage.__file__).parent / 'data' / name
    img = cv2.imread(str(path))
    if img is None:
        pytest.skip(f'scikit-image photo {name} missing')
    return np.ascontiguousarray(cv2.resize(img, (640, 480))[:, :, ::-1])


@pytest.fixture(scope='module')
def media():
    paths = sample_images(('bus', 'zidane'))
    bus = np.ascontiguousarray(cv2.resize(cv2.imread(str(paths['bus'])), (480, 640))[:, :, ::-1])
    zidane = np.ascontiguousarray(cv2.imread(str(paths['zidane']))[:, :, ::-1])
    # Around the faces the face finder reports in these photos.
    people = [bus[215:555, 10:140],  # the man in the coat (face 68-97, 249-278)
              bus[225:560, 120:220],  # the man behind him (face 156-184, 253-281)
              zidane[40:720, 740:1180],  # Zidane (face 917-1074, 119-277)
              zidane[260:720, 430:740]]  # Ancelotti (face 518-648, 294-424)
    return {'people': people, 'backgrounds': [_skimage_photo(b) for b in BACKGROUNDS]}


def _place(background, person, x, y, height):
    frame = background.copy()
    scale = height / person.shape[0]
    patch = cv2.resize(person, (max(1, int(person.shape[1] * scale)), int(height)),
                       interpolation=cv2.INTER_AREA)
    h, w = patch.shape[:2]
    h, w = min(h, frame.shape[0] - y), min(w, frame.shape[1] - x)
    frame[y:y + h, x:x + w] = patch[:h, :w]
    return frame, (float(x), float(y), float(x + w), float(y + h))


def _camera(frame, rng, sigma, jpeg=85):
    noisy = np.clip(frame + rng.normal(0.0, sigma, frame.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode('.jpg', noisy[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


def _scenes(media, rng, count):
    """(background, person, x, y, height) drawn at random: many different scenes."""
    out = []
    for _ in range(count):
        bg = media['backgrounds'][rng.integers(len(media['backgrounds']))]
        person = media['people'][rng.integers(len(media['people']))]
        height = int(rng.integers(90, 400))
        width = int(person.shape[1] * height / person.shape[0])
        x = int(rng.integers(0, 640 - width - 20))
        y = int(rng.integers(0, 480 - height))
        out.append((bg, person, x, y, height))
    return out


def _gate(**kw):
    return SceneChangeGate(ReuseConfig(**kw))


def _settled(cfg, frame):
    """A gate that detected ``frame`` twice (same persons): it would skip the same frame."""
    gate = SceneChangeGate(cfg)
    for t in (0.0, 0.2):
        run, thumb = gate.check(frame, t)
        assert run  # the first frame, then until two detections agree
        gate.detected(thumb, t, [Detection((1.0, 2.0, 30.0, 40.0), 0.9)])
    assert gate.stable and not gate.check(frame, 0.3)[0]
    return gate


def test_detector_runs_when_a_person_appears_moves_or_leaves(media):
    """Over 60 scenes: a person appearing, leaving, or moving 6+ pixels (or growing 5 %)
    in a noisy camera always makes the detector run on that very frame."""
    rng = np.random.default_rng(1)
    cfg = ReuseConfig()
    for bg, person, x, y, height in _scenes(media, rng, 60):
        with_person, _ = _place(bg, person, x, y, height)
        step = int(rng.integers(6, 20))
        moved, _ = _place(bg, person, x + step, y, height)
        closer, _ = _place(bg, person, x, y, int(height * 1.05))
        for before, after in ((bg, with_person), (with_person, bg), (with_person, moved),
                              (with_person, closer)):
            gate = _settled(cfg, _camera(before, rng, 3.0))
            run, _ = gate.check(_camera(after, rng, 3.0), 0.4)
            assert run, f'change {gate.last_change:.1f} <= {cfg.scene_change_threshold}'


def test_detector_skips_unchanged_frames_until_the_max_interval(media):
    """Identical frames and frames differing only by sensor noise (sigma 1-6 grey levels,
    JPEG 70-95) skip the detector once two detections agreed; it still runs every
    max_detect_interval_s."""
    rng = np.random.default_rng(2)
    cfg = ReuseConfig(max_detect_interval_s=2.0)
    for (bg, person, x, y, height), sigma, quality in zip(
            _scenes(media, rng, 24), itertools.cycle((1.0, 3.0, 6.0)),
            itertools.cycle((70, 85, 95))):
        scene, _ = _place(bg, person, x, y, height)
        gate = SceneChangeGate(cfg)
        runs = []
        for k in range(26):  # 5 s at 5 processed frames per second
            frame = scene if k % 2 else _camera(scene, rng, sigma, quality)
            run, thumb = gate.check(frame, k * 0.2)
            if run:
                gate.detected(thumb, k * 0.2, [Detection((1.0, 2.0, 3.0, 4.0), 0.9)])
                runs.append(k)
            else:
                assert gate.reused() == [Detection((1.0, 2.0, 3.0, 4.0), 0.9)]
                assert gate.last_change <= cfg.scene_change_threshold
        assert runs == [0, 1, 11, 21], (runs, sigma, quality)  # 2 s after frame 1
    # Off: every frame is detected.
    gate = _gate(detect_on_change=False)
    for k in range(5):
        run, thumb = gate.check(media['backgrounds'][0], k * 0.2)
        assert run
        gate.detected(thumb, k * 0.2, [])


def test_gate_starts_over_when_time_goes_back_or_the_size_changes(media):
    """A looping bag (stamp going back) or a new image size makes the detector run."""
    bg = media['backgrounds'][0]
    gate = _settled(ReuseConfig(), bg)
    assert gate.check(bg, -1.0)[0]
    gate = _settled(ReuseConfig(), bg)
    # Same picture at another size: the old boxes would be in the wrong pixels.
    assert gate.check(np.ascontiguousarray(cv2.resize(bg, (320, 240))), 0.4)[0]


def test_detector_runs_until_two_detections_agree():
    """After a change the detector runs until two detections in a row find the same persons
    (a face missed in one noisy frame is looked for again on the next)."""
    frame = np.zeros((48, 64, 3), np.uint8)
    a, b = Detection((0.0, 0.0, 10.0, 20.0), 0.9), Detection((30.0, 0.0, 40.0, 20.0), 0.8)
    moved = Detection((2.0, 0.0, 12.0, 20.0), 0.9)
    for found, expected_runs in (([[a], [a]], 2), ([[a], [b], [b]], 3), ([[a], [a, b], [a, b]], 3),
                                 ([[a, b], [b, a]], 2), ([[a], [moved]], 2),
                                 ([[], [a], [], [], [a]], 4)):
        gate = _gate()
        runs = 0
        for k in range(8):
            run, thumb = gate.check(frame, 0.1 * k)
            if run:
                gate.detected(thumb, 0.1 * k, found[min(runs, len(found) - 1)])
                runs += 1
        assert runs == expected_runs, (found, runs)


def test_emotion_cache_reuses_only_the_unchanged_person(media):
    """Over 40 scenes: the same person under sensor noise is reused; a moved box, another
    face in the box, a later time than max_emotion_age_s, or another track is scored again."""
    rng = np.random.default_rng(3)
    cfg = ReuseConfig(max_emotion_age_s=2.0)
    others = media['people']
    for bg, person, x, y, height in _scenes(media, rng, 40):
        scene, box = _place(bg, person, x, y, max(height, 150))
        cache = EmotionCache(cfg)
        first = _camera(scene, rng, 2.0)
        cache.store(7, box, crop_thumbnail(first, box), 0.0, 'out', {})
        again = _camera(scene, rng, 2.0)
        assert cache.lookup(7, box, crop_thumbnail(again, box), 0.4) is not None
        assert cache.lookup(7, box, crop_thumbnail(again, box), 2.0) is None  # too old
        assert cache.lookup(8, box, crop_thumbnail(again, box), 0.4) is None  # other track
        moved = (box[0] + 0.1 * (box[2] - box[0]), box[1], box[2] + 0.1 * (box[2] - box[0]),
                 box[3])
        assert cache.lookup(7, moved, crop_thumbnail(again, moved), 0.4) is None
        # Someone else's head where the face was (same box): scored again.
        other = [p for p in others if p is not person][int(rng.integers(len(others) - 1))]
        head_h = int(0.25 * (box[3] - box[1]))
        changed = scene.copy()
        x0, y0 = int(box[0]), int(box[1])
        w = int(box[2] - box[0])
        changed[y0:y0 + head_h, x0:x0 + w] = cv2.resize(
            other[:other.shape[0] // 4], (w, head_h), interpolation=cv2.INTER_AREA)
        assert cache.lookup(7, box, crop_thumbnail(_camera(changed, rng, 2.0), box),
                            0.4) is None
        cache.keep_only([8])
        assert cache.lookup(7, box, crop_thumbnail(again, box), 0.4) is None
    off = EmotionCache(ReuseConfig(reuse_emotion=False))
    off.store(1, (0.0, 0.0, 10.0, 10.0), np.zeros((16, 16), np.float32), 0.0, 'x', {})
    assert off.lookup(1, (0.0, 0.0, 10.0, 10.0), np.zeros((16, 16), np.float32), 0.1) is None


def test_same_box_tolerance():
    """Boxes match when every side moved at most 5 % of the box width/height."""
    a = (100.0, 100.0, 200.0, 300.0)
    assert same_box(a, a)
    assert same_box(a, (105.0, 90.0, 195.0, 310.0))
    assert not same_box(a, (106.0, 100.0, 200.0, 300.0))
    assert not same_box(a, (100.0, 100.0, 200.0, 311.0))


def test_reuse_options_validate():
    """The reuse.* parameters are read from the flat mapping and checked."""
    from emotion_ros.perception.pipeline import PerceptionConfig

    cfg = from_mapping(PerceptionConfig, {'reuse.scene_change_threshold': 3,
                                          'reuse.max_emotion_age_s': 1.5})
    assert cfg.reuse.scene_change_threshold == 3.0 and cfg.reuse.max_emotion_age_s == 1.5
    assert dataclasses.asdict(cfg.reuse)['detect_on_change'] is True
    with pytest.raises(ConfigError, match='reuse.scene_change_threshold'):
        from_mapping(PerceptionConfig, {'reuse.scene_change_threshold': -1.0})


# ------------------------------------------------- the real pipeline and the bag evaluation

def _robot(**reuse):
    from pathlib import Path

    from emotion_ros.config.robot import load_robot_config
    robot = load_robot_config(str(Path(__file__).resolve().parents[1] / 'config' / 'robot.yaml'))
    if not reuse:
        return robot
    perception = dataclasses.replace(
        robot.perception, reuse=dataclasses.replace(robot.perception.reuse, **reuse))
    return dataclasses.replace(robot, perception=perception)


EVERY_FRAME = {'detect_on_change': False, 'reuse_emotion': False}


def _mission_frames(media, rng, noise):
    """(t, frame) at 5 Hz: empty, a person appears, moves, a second one joins, both leave."""
    bg = media['backgrounds'][0]
    man, zidane = media['people'][0], media['people'][2]
    one, _ = _place(bg, man, 250, 100, 340)
    moved, _ = _place(bg, man, 300, 110, 340)
    two, _ = _place(moved, zidane, 20, 60, 400)
    plan = [bg] * 5 + [one] * 15 + [moved] * 8 + [two] * 14 + [bg] * 4
    return [(k * 0.2, _camera(f, rng, 3.0) if noise else f) for k, f in enumerate(plan)]


def test_pipeline_with_reuse_gives_the_every_frame_results(media):
    """On a scripted mission of unchanging scenes the default pipeline (detect on change,
    emotion reuse) gives exactly the every-frame pipeline's persons, ids, boxes, emotions,
    thumbnails and appearance while running the detector and the emotion model far less;
    with sensor noise it sees the same number of persons in at least 90 % of the frames."""
    from emotion_ros.perception.pipeline import PerceptionPipeline

    fast = PerceptionPipeline(_robot().perception)
    slow = PerceptionPipeline(_robot(**EVERY_FRAME).perception)
    fast.load()
    slow.load()
    try:
        for noise in (False, True):
            frames = _mission_frames(media, np.random.default_rng(4), noise)
            runs0, scored0 = fast.gate.runs, fast.emotions.scored
            persons = mismatches = 0
            for t, frame in frames:
                a = fast.process(frame, 100.0 * noise + t)
                b = slow.process(frame, 100.0 * noise + t)
                persons += len(b.persons)
                mismatches += len(a.persons) != len(b.persons)
                if not noise:
                    assert [p.track_id for p in a.persons] == [p.track_id for p in b.persons]
                    for pa, pb in zip(a.persons, b.persons):
                        assert pa.box == pb.box
                        np.testing.assert_array_equal(pa.emotion.scores, pb.emotion.scores)
                        assert pa.emotion.vad == pb.emotion.vad
                        assert pa.crop_jpeg == pb.crop_jpeg and pa.appearance == pb.appearance
            assert persons >= 50  # the scenes have people the detector finds
            assert mismatches <= 0.1 * len(frames), (noise, mismatches)
            runs = fast.gate.runs - runs0
            scored = fast.emotions.scored - scored0
            # 46 frames, 4 changes, forced every 2 s: far fewer than 46 detections and than
            # the ~60 persons the every-frame pipeline scores.
            assert runs <= 20 and scored <= 30, (noise, runs, scored)
            assert len(frames) == 46
    finally:
        fast.close()
        slow.close()


def _write_mission_bag(tmp_path, media):
    """A 10 s, 15 FPS labelled bag of noisy camera frames and a call for help at 3 s."""
    import sys
    from pathlib import Path

    import yaml

    sys.path.insert(0, str(Path(__file__).parent))
    from rosgraph import espeak_wav

    from emotion_ros.evaluation.bagtools import make_bag, MakeBagOptions
    rng = np.random.default_rng(5)
    bg = media['backgrounds'][1]
    man, zidane = media['people'][0], media['people'][2]
    one, _ = _place(bg, man, 250, 100, 340)
    moved, _ = _place(bg, man, 300, 110, 340)
    two, box3 = _place(moved, zidane, 20, 60, 400)
    # Hand-labelled: the man in the coat spans x 30-145, y 235-535 of bus.jpg (crop at 10, 215).
    box1, box2 = [270, 120, 380, 420], [320, 130, 430, 430]
    folder = tmp_path / 'frames'
    folder.mkdir()
    fps, seconds = 15, 10.0
    for k in range(int(fps * seconds)):
        t = k / fps
        scene = bg if t < 1.5 else one if t < 5.5 else two
        frame = np.clip(scene + rng.normal(0.0, 3.0, scene.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f'{k:05d}.png'), frame[:, :, ::-1])
    labels = tmp_path / 'labels.yaml'
    labels.write_text(yaml.safe_dump({
        'persons': [
            {'id': 'man', 'categories': ['Fear'], 'vad': [3, 7, 4],
             'spans': [{'start': 1.5, 'end': 5.5, 'box': box1},
                       {'start': 5.5, 'end': 10.0, 'box': box2}]},
            {'id': 'zidane', 'categories': ['Engagement'], 'vad': [6, 5, 6],
             'spans': [{'start': 5.5, 'end': 10.0, 'box': list(box3)}]}],
        'episodes': [{'start': 3.0, 'end': 6.0, 'person': 'man', 'note': 'calls for help'}]}))
    wav = espeak_wav(tmp_path / 'help.wav', 'Help! Help me!')
    bag = tmp_path / 'mission'
    make_bag(bag, [f'{folder}@{seconds}'], [f'{wav}@3.0'], labels,
             MakeBagOptions(storage='mcap', fps=fps, compressed=True, noise_dbfs=-55.0,
                            start_time=1_700_000_000.0, min_duration_s=seconds))
    return bag, labels


def test_evaluation_with_reuse_gives_the_every_frame_alerts_and_metrics(tmp_path, media):
    """`emotion-ros evaluate` with the shipped reuse defaults gives the same alerts (time,
    level, track, person), the same episode recall and detection recall within 1 point as with
    every-frame detection and emotion, on a labelled bag of noisy camera frames in which a
    person appears, calls for help, moves and is joined by another."""
    from pathlib import Path

    import yaml

    from emotion_ros.evaluation.runner import evaluate, RunOptions
    bag, labels = _write_mission_bag(tmp_path, media)
    config = Path(__file__).resolve().parents[1] / 'config' / 'robot.yaml'
    params = yaml.safe_load(config.read_text())
    section = params['/**/perception_node']['ros__parameters']
    assert section['reuse']['detect_on_change'] and section['reuse']['reuse_emotion']
    section['reuse'].update(EVERY_FRAME)
    every = tmp_path / 'every_frame.yaml'
    every.write_text(yaml.safe_dump(params))
    results = {}
    for name, cfg in (('default', config), ('every_frame', every)):
        results[name] = evaluate(str(bag), str(labels), str(cfg), str(tmp_path / name),
                                 options=RunOptions(progress=False))

    def alerts(metrics):
        return [(round(a['t'], 3), a['level'], a['track_id'], a['person'])
                for a in metrics['distress']['alert_list']]

    fast, slow = results['default'], results['every_frame']
    assert alerts(slow), 'the mission must raise alerts'
    assert alerts(fast) == alerts(slow)
    assert fast['distress']['recall'] == slow['distress']['recall'] == 1.0
    assert slow['detection']['recall'] > 0.5
    assert abs(fast['detection']['recall'] - slow['detection']['recall']) <= 0.01
    assert fast['performance']['frames_processed'] == slow['performance']['frames_processed']
