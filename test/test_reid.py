"""Re-identification: an incident stays with its person when people leave and come back."""

import numpy as np
import pytest

from emotion_ros.evaluation import reid_scenes as rs
from emotion_ros.fusion.distress import FusionConfig
from emotion_ros.perception.appearance import describe, DESCRIPTOR_SIZE, similarity


@pytest.fixture(scope='module')
def crops():
    """Person crops of the real sample photos."""
    return rs.load_people()


def _look(crop, gain=1.0, scale=1.0):
    return rs._look(crop, gain, scale)


@pytest.mark.parametrize('gain', [0.7, 1.0, 1.3])
@pytest.mark.parametrize('scale', [0.35, 1.0])
def test_same_person_stays_above_the_reject_threshold(crops, gain, scale):
    """Each person's clothing descriptor under exposure and resolution changes stays similar
    enough to themselves that re-identification never rules them out."""
    threshold = FusionConfig().reid_reject_similarity
    for name, crop in crops.items():
        sim = similarity(_look(crop), _look(crop, gain, scale))
        assert sim is not None and sim >= threshold, (name, gain, scale, sim)


def test_descriptor_shape_and_missing_cases(crops):
    """A descriptor has the documented size and unit parts; a box too small gives none."""
    crop = crops['astronaut']
    look = describe(crop, (0, 0, crop.shape[1], crop.shape[0]))
    assert len(look) == DESCRIPTOR_SIZE
    assert similarity(look, look) == pytest.approx(1.0)
    assert describe(crop, (10, 10, 12, 14)) == ()
    assert describe(crop, (50, 50, 40, 80)) == ()
    assert similarity(look, ()) is None


def test_some_different_people_are_told_apart(crops):
    """Clothing colours rule out at least the clearly different pairs (bus men vs others)."""
    threshold = FusionConfig().reid_reject_similarity
    names = sorted(crops)
    below = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if similarity(_look(crops[a]), _look(crops[b])) < threshold]
    assert len(below) >= 2, below


@pytest.mark.parametrize('depth', [False, True])
def test_no_wrong_reattachment_in_any_test_scene(crops, depth):
    """Over every test-split scene of 2-4 people (each frightened once, every leave and return
    order), no one else's track ever joins the frightened person's incident."""
    results = [rs.run_scene(s, crops) for s in rs.scenes('test', depth, max_people=4)]
    assert len(results) > 100
    wrong = [r.scene for r in results if r.wrong]
    assert wrong == []


@pytest.mark.parametrize('depth', [False, True])
def test_a_lone_leaver_is_one_incident(crops, depth):
    """When only the frightened person leaves and returns, they keep their one incident."""
    results = [rs.run_scene(s, crops) for s in rs.scenes('test', depth, max_people=5)
               if len(s.leavers) == 1]
    assert len(results) >= 10
    assert [r.scene for r in results if r.duplicates or r.wrong] == []


@pytest.mark.parametrize('depth', [False, True])
@pytest.mark.parametrize('frightened', ['zidane_left', 'zidane_right'])
def test_zidane_leave_and_return(crops, depth, frightened):
    """zidane.jpg: the two men stand 0.33 image widths apart; the frightened one leaves and
    comes back while the calm one stays: one incident, his only, none for the calm man."""
    scene = rs.Scene(people=('zidane_left', 'zidane_right'), frightened=frightened,
                     leavers=(frightened,), spacing=0.33, gain=1.0, scale=1.0, depth=depth)
    result = rs.run_scene(scene, crops)
    assert (result.wrong, result.duplicates, result.incidents) == (0, 0, 1)


def test_the_old_rule_would_fail_the_zidane_scene(crops):
    """Without re-identification (region match alone, as before) the scene goes wrong:
    the scene itself can detect the failure the tests above rule out."""
    from emotion_ros.fusion import distress

    class RegionOnly(distress.DistressFusion):
        def _rival(self, *args):
            return False

    scene = rs.Scene(people=('zidane_left', 'zidane_right'), frightened='zidane_right',
                     leavers=('zidane_left', 'zidane_right'), spacing=0.33, gain=1.0,
                     scale=1.0)
    real = distress.DistressFusion
    try:
        rs.DistressFusion = RegionOnly
        loose = rs.run_scene(scene, crops, FusionConfig(reid_reject_similarity=0.0))
    finally:
        rs.DistressFusion = real
    strict = rs.run_scene(scene, crops)
    assert loose.wrong > 0
    assert strict.wrong == 0


def test_unsure_return_opens_a_linked_incident(crops):
    """Twins (the same clothes) both leave; the frightened one comes back first, then the
    calm one: re-identification cannot tell them apart, so the return opens a new incident
    linked to the earlier one (both list each other) and the twin joins neither."""
    from emotion_ros.fusion.distress import DistressFusion
    kept = {}

    class Keep(DistressFusion):
        def __init__(self, config):
            super().__init__(config)
            kept['fusion'] = self

    twins = dict(crops, zidane_left=crops['zidane_right'])
    scene = rs.Scene(people=('zidane_left', 'zidane_right'), frightened='zidane_right',
                     leavers=('zidane_right', 'zidane_left'), spacing=0.25, gain=1.0,
                     scale=1.0)
    real = rs.DistressFusion
    try:
        rs.DistressFusion = Keep
        result = rs.run_scene(scene, twins)
    finally:
        rs.DistressFusion = real
    assert result.wrong == 0
    incidents = kept['fusion'].incidents()
    assert len(incidents) == 2
    first, second = sorted(incidents, key=lambda i: i.id)
    assert first.related_ids == {second.id} and second.related_ids == {first.id}
    assert kept['fusion'].counters['reid_unsure'] >= 1


def test_appearance_and_links_survive_the_messages():
    """PersonEmotion carries the descriptor and Incident the linked ids, both ways."""
    from std_msgs.msg import Header

    from emotion_ros.fusion.incidents import Incident
    from emotion_ros.llm.contract import NUM_CATEGORIES
    from emotion_ros.ros.conversions import incident_to_msg, msg_to_person, person_to_msg
    from emotion_ros.types import EmotionOutput, PersonEstimate
    look = tuple(float(v) for v in np.linspace(0, 1, DESCRIPTOR_SIZE))
    person = PersonEstimate(track_id=3, box=(1.0, 2.0, 30.0, 80.0), detection_confidence=0.9,
                            emotion=EmotionOutput(scores=np.zeros(NUM_CATEGORIES, np.float32),
                                                  vad=(5.0, 5.0, 5.0), face_visible=True),
                            model_id='m', appearance=look)
    back = msg_to_person(person_to_msg(person, Header()))
    assert back.appearance == pytest.approx(look)
    incident = Incident(id=4, created_t=0.0, stamp=1.0, frame_id='f', first_seen=1.0,
                        last_seen=1.0, last_seen_t=0.0, related_ids={2, 9})
    assert list(incident_to_msg(incident).related_incident_ids) == [2, 9]
