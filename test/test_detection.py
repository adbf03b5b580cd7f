"""Person detectors: YOLO code path, face-anchored and HOG detectors on real photos."""

import logging
import subprocess
import sys

import numpy as np
import pytest

from emotion_ros.config.schema import from_mapping
from emotion_ros.perception.detectors.auto import AutoDetector
from emotion_ros.perception.detectors.base import (body_box_from_face, DEFAULT_YOLO_WEIGHTS,
                                                   DetectorConfig, iou_matrix, nms)
from emotion_ros.perception.detectors.face import FaceAnchoredDetector
from emotion_ros.perception.detectors.faces import FaceFinder
from emotion_ros.perception.detectors.factory import create_detector
from emotion_ros.perception.detectors.hog import HogDetector
from emotion_ros.perception.detectors.yolo import YoloDetector
from emotion_ros.errors import ConfigError, InputError, ModelLoadError
from emotion_ros.sample_media import load_sample

# Hand-measured boxes on ultralytics' bus.jpg (810 x 1080) of the two men whose
# faces are visible, and face centres of the two men in zidane.jpg (1280 x 720).
BUS_MEN = [(55, 395, 210, 900), (222, 400, 350, 865)]
ZIDANE_FACE_CENTRES = [(595, 290), (980, 150)]


@pytest.fixture(scope='module')
def face_detector():
    """Load a face-anchored detector with default settings."""
    det = FaceAnchoredDetector(DetectorConfig(type='face'))
    det.load()
    yield det
    det.close()


@pytest.fixture(scope='module')
def photos():
    """Read the sample photos as RGB arrays."""
    return {name: load_sample(name) for name in ('bus', 'zidane', 'astronaut')}


def _inside(box, width, height):
    x0, y0, x1, y1 = box
    return 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_config_validates_through_from_mapping():
    """Detector parameters are checked by type, range, choices and cross-field rules."""
    cfg = from_mapping(DetectorConfig, {'detector.type': 'face', 'detector.face_tiles': 3},
                       prefix='detector')
    assert cfg.type == 'face' and cfg.face_tiles == 3 and cfg.max_side == 640
    with pytest.raises(ConfigError, match='detector.type'):
        from_mapping(DetectorConfig, {'detector.type': 'yolov5'}, prefix='detector')
    with pytest.raises(ConfigError, match='face_tiles'):
        from_mapping(DetectorConfig, {'detector.face_tiles': 0}, prefix='detector')
    with pytest.raises(ConfigError, match='yolo_weights'):
        from_mapping(DetectorConfig, {'detector.type': 'yolo', 'detector.yolo_weights': ' '},
                     prefix='detector')
    with pytest.raises(ConfigError, match='unknown'):
        create_detector(DetectorConfig(type='ssd'))  # constructed directly, not validated


def test_iou_and_nms():
    """Check IoU against a hand computation; NMS keeps the best of overlapping boxes only."""
    iou = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]])
    assert nms(boxes, np.array([0.5, 0.9, 0.4]), 0.5) == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.4]), 0.95) == [1, 0, 2]


def test_body_box_geometry():
    """The body box follows the documented face multiples and is clipped to the image."""
    box = body_box_from_face((100, 100, 120, 120), 1000, 1000, width_faces=3.0,
                             height_faces=8.5)
    assert box == pytest.approx((80.0, 93.0, 140.0, 270.0))
    clipped = body_box_from_face((0, 900, 40, 940), 1000, 1000)
    assert clipped[0] == 0.0 and clipped[3] == 1000.0


def test_face_detector_finds_the_men_with_visible_faces_on_bus_jpg(face_detector, photos):
    """On bus.jpg both men whose faces show are found, with body boxes matching them."""
    dets = face_detector.detect(photos['bus'])
    assert 2 <= len(dets) <= 4
    iou = iou_matrix(np.array(BUS_MEN), np.array([d.box for d in dets]))
    assert iou.max(axis=1).min() > 0.5, iou
    assert all(_inside(d.box, 810, 1080) and 0.6 <= d.score <= 1.0 for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_face_detector_finds_both_men_on_zidane_jpg(face_detector, photos):
    """On zidane.jpg the shouting man (profile) and the man behind are both found."""
    dets = face_detector.detect(photos['zidane'])
    assert len(dets) == 2
    for cx, cy in ZIDANE_FACE_CENTRES:
        assert any(d.box[0] < cx < d.box[2] and d.box[1] < cy < d.box[3] for d in dets)


def test_tiles_find_small_faces_the_whole_image_misses(photos):
    """On bus.jpg the whole-image pass alone misses a small face that 2x2 tiles find."""
    counts = {}
    for tiles in (1, 2):
        det = FaceAnchoredDetector(DetectorConfig(type='face', face_tiles=tiles))
        det.load()
        counts[tiles] = len(det.detect(photos['bus']))
        det.close()
    assert counts[1] < counts[2]


def test_face_finder_box_on_the_astronaut(photos):
    """Check that FaceFinder puts the astronaut's face where it is (hand-measured box)."""
    finder = FaceFinder(confidence=0.5)
    finder.load()
    faces = finder.find(photos['astronaut'])
    finder.close()
    assert len(faces) == 1
    assert iou_matrix(np.array([faces[0][0]]), np.array([[175, 70, 275, 175]]))[0, 0] > 0.6


def test_no_people_and_bad_input(face_detector):
    """Blank images give no detections; wrong arrays raise InputError; unloaded use fails."""
    assert face_detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert face_detector.detect(np.zeros((10, 10, 3), np.uint8)) == []
    with pytest.raises(InputError):
        face_detector.detect(np.zeros((480, 640), np.uint8))
    with pytest.raises(InputError):
        face_detector.detect(np.zeros((480, 640, 3), np.float32))
    with pytest.raises(RuntimeError, match='before load'):
        FaceAnchoredDetector(DetectorConfig()).detect(np.zeros((8, 8, 3), np.uint8))


def test_hog_detector_runs_on_real_photo(photos):
    """The HOG detector finds at least one person on bus.jpg and none on a blank image."""
    det = create_detector(DetectorConfig(type='hog'))
    assert isinstance(det, HogDetector)
    det.load()
    dets = det.detect(photos['bus'])
    assert dets and all(_inside(d.box, 810, 1080) and d.score >= 0.35 for d in dets)
    assert iou_matrix(np.array(BUS_MEN), np.array([d.box for d in dets])).max() > 0.4
    assert det.detect(np.full((480, 640, 3), 90, np.uint8)) == []
    det.close()
    assert not det.loaded


@pytest.fixture(scope='module')
def yolo():
    """Load an untrained YOLOv8n (built from its yaml) behind the real YoloDetector."""
    det = YoloDetector(DetectorConfig(type='yolo', yolo_weights='yolov8n.yaml', device='cpu',
                                      confidence=0.5, max_persons=5, max_side=320))
    det.load()
    yield det
    det.close()


def _force_class(det, cls):
    """Make the untrained head predict class ``cls`` everywhere (bias of the class conv)."""
    # The module ultralytics' predictor actually runs (a fused copy after warm-up).
    head = det.model.predictor.model.model.model[-1]
    for branch in head.cv3:
        bias = branch[-1].bias.data
        bias[:] = -20.0
        bias[cls] = 10.0


def test_yolo_code_path_keeps_persons_only(yolo, photos):
    """Real ultralytics predict: class 5 everywhere gives no persons, class 0 gives persons."""
    assert yolo.name == 'yolo:yolov8n.yaml' and yolo.device == 'cpu'
    _force_class(yolo, 5)
    assert yolo.detect(photos['bus']) == []
    _force_class(yolo, 0)
    dets = yolo.detect(photos['bus'])
    assert len(dets) == 5  # max_persons
    assert all(_inside(d.box, 810, 1080) and d.score > 0.99 for d in dets)
    # Detection ran at 320 px; boxes come back in the 810 x 1080 input's pixels.
    import cv2

    small = cv2.resize(photos['bus'], (240, 320), interpolation=cv2.INTER_AREA)
    small_dets = yolo.detect(small)
    np.testing.assert_allclose([d.box for d in dets],
                               [np.array(d.box) * 810 / 240 for d in small_dets], atol=0.5)


def test_yolo_bad_weights_raise_model_load_error(tmp_path, monkeypatch):
    """Missing, corrupt and offline-unavailable weights raise ModelLoadError naming them."""
    monkeypatch.setenv('YOLO_OFFLINE', '1')
    with pytest.raises(ModelLoadError, match='no_such_model.pt'):
        YoloDetector(DetectorConfig(yolo_weights='no_such_model.pt')).load()
    missing = tmp_path / 'sub' / 'w.pt'
    with pytest.raises(ModelLoadError, match=str(missing)):
        YoloDetector(DetectorConfig(yolo_weights=str(missing))).load()
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ModelLoadError, match='corrupt.pt'):
        YoloDetector(DetectorConfig(yolo_weights=str(corrupt), device='cpu')).load()


def test_cuda_request_without_gpu():
    """Device cuda without a GPU is a ModelLoadError that says so."""
    import torch

    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with pytest.raises(ModelLoadError, match='cuda'):
        YoloDetector(DetectorConfig(yolo_weights='yolov8n.yaml', device='cuda')).load()


def _no_default_weights(monkeypatch, tmp_path):
    """Make the default YOLO weights unfindable offline (empty cwd and ultralytics cache)."""
    monkeypatch.setenv('YOLO_OFFLINE', '1')
    monkeypatch.setenv('YOLO_CONFIG_DIR', str(tmp_path / 'ultralytics'))
    monkeypatch.chdir(tmp_path)


def test_auto_falls_back_to_face_and_says_why(monkeypatch, caplog, photos, tmp_path):
    """Type auto with the default (missing) YOLO weights runs the face detector and logs the
    reason and what it cannot see."""
    _no_default_weights(monkeypatch, tmp_path)
    det = create_detector(DetectorConfig(type='auto'))
    assert isinstance(det, AutoDetector) and det.name == 'auto'
    assert det.explicit_yolo_request() == []
    with caplog.at_level(logging.WARNING, logger='emotion_ros.perception.detectors.auto'):
        det.load()
    assert det.name.startswith('face:') and DEFAULT_YOLO_WEIGHTS in det.fallback_reason
    assert 'YOLO_OFFLINE' in det.fallback_reason
    messages = [r.getMessage() for r in caplog.records]
    assert any(DEFAULT_YOLO_WEIGHTS in m and 'face is hidden' in m for m in messages), messages
    assert len(det.detect(photos['zidane'])) == 2
    det.close()
    assert not det.loaded


@pytest.mark.parametrize('overrides, named', [
    ({'yolo_weights': 'missing_yolo.pt'}, "detector.yolo_weights is set to 'missing_yolo.pt'"),
    ({'yolo_weights': '/robot/models/yolo11s.pt'}, '/robot/models/yolo11s.pt'),
    ({'device': 'cuda'}, "detector.device is 'cuda'"),
    ({'device': 'cuda', 'yolo_weights': 'people.pt'}, 'people.pt'),
])
def test_auto_does_not_fall_back_when_yolo_was_asked_for(monkeypatch, tmp_path, overrides,
                                                         named):
    """An explicit weights path or device cuda makes a YOLO that does not load fail load()
    with a message naming the setting and the weights, instead of silently running the
    face detector."""
    _no_default_weights(monkeypatch, tmp_path)
    det = create_detector(DetectorConfig(type='auto', **overrides))
    with pytest.raises(ModelLoadError) as info:
        det.load()
    message = str(info.value)
    assert named in message and 'no fallback' in message
    assert repr(overrides.get('yolo_weights', DEFAULT_YOLO_WEIGHTS)) in message
    assert not det.loaded and det.fallback_reason == ''


def test_auto_prefers_yolo_when_it_loads():
    """Type auto picks YOLO when its weights load."""
    det = create_detector(DetectorConfig(type='auto', yolo_weights='yolov8n.yaml',
                                         device='cpu'))
    det.load()
    assert det.name == 'yolo:yolov8n.yaml' and det.fallback_reason == ''
    det.close()


def test_detection_import_is_light():
    """Importing the vision modules loads no rclpy, torch, ultralytics or mediapipe."""
    code = ('import sys\n'
            'import emotion_ros.perception.detectors.factory, emotion_ros.perception.tracking\n'
            'import emotion_ros.backends.light\n'
            "heavy = ('rclpy', 'torch', 'ultralytics', 'mediapipe', 'ai_edge_litert', 'facex')\n"
            'bad = [m for m in heavy if m in sys.modules]\n'
            'sys.exit(str(bad) if bad else 0)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_whole_frame_detector_gives_the_whole_image():
    """detector.type frame: one box covering each image exactly, at any size; bad input named."""
    from emotion_ros.perception.detectors.frame import WholeFrameDetector
    det = create_detector(DetectorConfig(type='frame'))
    assert isinstance(det, WholeFrameDetector)
    with pytest.raises(RuntimeError, match='before load'):
        det.detect(np.zeros((8, 8, 3), np.uint8))
    det.load()
    for height, width in ((64, 64), (480, 640), (1080, 1920), (7, 3000)):
        dets = det.detect(np.zeros((height, width, 3), np.uint8))
        assert [(d.box, d.score) for d in dets] == [((0.0, 0.0, width, height), 1.0)]
    with pytest.raises(InputError):
        det.detect(np.zeros((480, 640), np.uint8))
    det.close()
    assert not det.loaded
