"""The light CPU backend: real facex + mediapipe models on real photos, and the mapping."""

import re

import numpy as np
import pytest

from emotion_ros.backends import create_backend
from emotion_ros.backends.light import (CATEGORY_WEIGHTS, FACEX_CLASSES, LightBackend,
                                        LightOptions, map_expression, mapping_matrices,
                                        vad_1_9_to_1_10, VAD_NORMS_1_9)
from emotion_ros.config.schema import from_mapping
from emotion_ros.llm.contract import CATEGORIES, CATEGORY_INDEX, DISTRESS_CATEGORIES
from emotion_ros.errors import ConfigError, InputError, ModelLoadError
from emotion_ros.sample_media import load_sample

# Hand-drawn person boxes on the sample photos.
ASTRONAUT = (80, 20, 380, 512)
ZIDANE = (380, 180, 800, 720)  # shouting, in profile
ANCELOTTI = (760, 40, 1220, 720)
BUS_EDGE = (725, 405, 810, 877)  # man cut by the right border, face not in the photo

OWN_CATEGORY = {'anger': 'Anger', 'disgust': 'Aversion', 'fear': 'Fear', 'happy': 'Happiness',
                'neutral': 'Engagement', 'sadness': 'Sadness', 'surprised': 'Surprise'}


@pytest.fixture(scope='module')
def backend():
    """Load a light backend with default options."""
    lb = LightBackend(LightOptions())
    lb.load()
    yield lb
    lb.close()


@pytest.fixture(scope='module')
def photos():
    """Read the sample photos as RGB arrays."""
    return {name: load_sample(name) for name in ('bus', 'zidane', 'astronaut')}


def _valid(out):
    assert out.scores.shape == (26,) and out.scores.dtype == np.float32
    assert np.all((out.scores >= 0) & (out.scores <= 1))
    assert all(1.0 <= v <= 10.0 for v in out.vad)


def test_mapping_tables_cover_the_contract():
    """The tables have all 26 categories and 7 classes, weights in [0, 1]."""
    assert set(CATEGORY_WEIGHTS) == set(CATEGORIES) and set(VAD_NORMS_1_9) == set(FACEX_CLASSES)
    cat, vad = mapping_matrices()
    assert cat.shape == (26, 7) and vad.shape == (7, 3)
    assert np.all((cat >= 0) & (cat <= 1)) and np.all((vad >= 1) & (vad <= 10))
    assert vad_1_9_to_1_10(1.0) == 1.0 and vad_1_9_to_1_10(9.0) == 10.0
    assert vad_1_9_to_1_10(5.0) == pytest.approx(5.5)


def test_each_expression_maps_onto_its_own_category_and_norms():
    """A certain expression ranks its own EMOTIC category first; VAD is its norm."""
    for k, name in enumerate(FACEX_CLASSES):
        onehot = np.eye(7)[k]
        scores, vad = map_expression(onehot)
        assert CATEGORIES[int(np.argmax(scores))] == OWN_CATEGORY[name], name
        assert vad == pytest.approx(tuple(vad_1_9_to_1_10(v) for v in VAD_NORMS_1_9[name]))
    happy, _ = map_expression(np.eye(7)[FACEX_CLASSES.index('happy')])
    assert all(happy[CATEGORY_INDEX[c]] == 0 for c in DISTRESS_CATEGORIES)


def test_mapping_of_random_probabilities_stays_in_range():
    """Any probability vector maps to scores in [0, 1] and VAD in [1, 10]."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores, vad = map_expression(rng.dirichlet(np.full(7, 0.3)))
        assert np.all((scores >= 0) & (scores <= 1)) and all(1 <= v <= 10 for v in vad)
    with pytest.raises(InputError):
        map_expression(np.full(7, np.nan))
    with pytest.raises(InputError):
        map_expression(np.ones(6))


def test_options_validate_and_backend_is_registered():
    """Check that options validate and 'light' builds a LightBackend without loading it."""
    opts = from_mapping(LightOptions, {'light.color': 'rgb', 'light.threads': 1}, 'light')
    assert opts.color == 'rgb'
    with pytest.raises(ConfigError, match='color'):
        from_mapping(LightOptions, {'light.color': 'blue'}, 'light')
    with pytest.raises(ConfigError, match='temperature'):
        from_mapping(LightOptions, {'light.temperature': 0.0}, 'light')
    lb = create_backend('light', opts)
    assert isinstance(lb, LightBackend) and not lb.loaded
    assert re.fullmatch(r'light:facex-1\.1\.0\+mediapipe-0\.10\.21', lb.model_id)


def test_smiling_astronaut_is_happy(backend, photos):
    """On astronaut.png the face is found, Happiness tops, valence is high, no distress."""
    out = backend.estimate(photos['astronaut'], [ASTRONAUT])[0]
    _valid(out)
    assert out.face_visible
    assert CATEGORIES[int(np.argmax(out.scores))] == 'Happiness'
    assert out.vad[0] > 7.5
    assert max(out.scores[CATEGORY_INDEX[c]] for c in DISTRESS_CATEGORIES) < 0.2
    probs = backend.expression_probabilities(photos['astronaut'], [ASTRONAUT])[0]
    assert max(probs, key=probs.get) == 'happy'


def test_zidane_faces_found_and_batching_keeps_order(backend, photos):
    """On zidane.jpg both faces are classified; a batch equals the boxes one by one."""
    both = backend.estimate(photos['zidane'], [ZIDANE, ANCELOTTI])
    assert all(o.face_visible for o in both)
    for out in both:
        _valid(out)
    singles = [backend.estimate(photos['zidane'], [box])[0] for box in (ZIDANE, ANCELOTTI)]
    for batch_out, single in zip(both, singles):
        np.testing.assert_allclose(batch_out.scores, single.scores, atol=1e-4)
    assert not np.allclose(both[0].scores, both[1].scores, atol=1e-3)
    assert backend.last_timings_ms['faces'] == 1.0


def test_persons_without_a_visible_face_are_unknown(backend, photos):
    """A man whose face is outside the photo, between two with faces, gets unknown."""
    bus = photos['bus']
    outs = backend.estimate(bus, [(55, 395, 210, 900), BUS_EDGE, (222, 400, 350, 865)])
    assert [o.face_visible for o in outs] == [True, False, True]
    assert np.all(outs[1].scores == 0) and all(np.isnan(v) for v in outs[1].vad)


def test_synthetic_edge_cases(backend, photos):
    """Black/grey images, tiny boxes and boxes outside the image give unknown; no boxes, []."""
    black = np.zeros((480, 640, 3), np.uint8)
    grey = np.full((480, 640, 3), 128, np.uint8)
    for image in (black, grey):
        outs = backend.estimate(image, [(100, 50, 300, 450), (0, 0, 640, 480)])
        assert [o.face_visible for o in outs] == [False, False]
    astro = photos['astronaut']
    outs = backend.estimate(astro, [(200, 100, 210, 110), (600, 600, 700, 700),
                                    (-300, -300, -10, -10), ASTRONAUT])
    assert [o.face_visible for o in outs] == [False, False, False, True]
    assert backend.estimate(astro, []) == []


def test_bad_input_raises_input_error(backend, photos):
    """Wrong image arrays and NaN boxes raise InputError naming the problem."""
    with pytest.raises(InputError):
        backend.estimate(np.zeros((480, 640), np.uint8), [ASTRONAUT])
    with pytest.raises(InputError):
        backend.estimate(photos['astronaut'].astype(np.float32), [ASTRONAUT])
    with pytest.raises(InputError) as err:
        backend.estimate(photos['astronaut'], [(0, 0, float('nan'), 100)])
    assert err.value.kind == 'box'
    with pytest.raises(InputError):
        backend.classify_faces(np.zeros((1, 100, 100, 3), np.float32))


def test_mirror_averaging_is_mirror_symmetric(backend, photos):
    """With flip averaging a face and its mirror image get the same probabilities."""
    face = backend.find_face(photos['zidane'], ZIDANE)[0]
    x = backend._face_input(photos['zidane'], face)
    p = backend.classify_faces(np.stack([x, x[:, ::-1]]))
    np.testing.assert_allclose(p[0], p[1], atol=1e-5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_temperature_softens_without_changing_the_ranking(photos):
    """Temperature 3 lowers the top probability and keeps the order of the classes."""
    probs = {}
    for t in (1.0, 3.0):
        lb = LightBackend(LightOptions(temperature=t))
        lb.load()
        probs[t] = lb.expression_probabilities(photos['zidane'], [ZIDANE])[0]
        lb.close()
    ranking = [sorted(p, key=p.get, reverse=True) for p in probs.values()]
    assert ranking[0] == ranking[1]
    assert max(probs[3.0].values()) < max(probs[1.0].values())


def test_model_file_problems_raise_model_load_error(tmp_path):
    """Missing, corrupt and wrong .tflite files raise ModelLoadError naming the file."""
    missing = tmp_path / 'none.tflite'
    with pytest.raises(ModelLoadError, match='none.tflite'):
        LightBackend(LightOptions(model_path=str(missing))).load()
    corrupt = tmp_path / 'corrupt.tflite'
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError, match='corrupt.tflite'):
        LightBackend(LightOptions(model_path=str(corrupt))).load()
    import importlib.util
    from pathlib import Path

    mp_dir = Path(list(importlib.util.find_spec('mediapipe').submodule_search_locations)[0])
    other = mp_dir / 'modules' / 'face_detection' / 'face_detection_short_range.tflite'
    with pytest.raises(ModelLoadError, match='does not look like the facex model'):
        LightBackend(LightOptions(model_path=str(other))).load()


def test_close_then_use_fails_clearly(photos):
    """After close() the backend refuses work with a clear error; close twice is fine."""
    lb = LightBackend()
    lb.load()
    assert lb.loaded
    lb.close()
    lb.close()
    assert not lb.loaded
    with pytest.raises(RuntimeError, match='before load'):
        lb.estimate(photos['astronaut'], [ASTRONAUT])
