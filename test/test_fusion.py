"""Tests of the distress fusion and its incidents: evidence, levels, association, time."""

import math

import numpy as np
import pytest

from emotion_ros.fusion import incidents as inc
from emotion_ros.config.schema import from_mapping
from emotion_ros.llm.contract import CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.errors import ConfigError
from emotion_ros.fusion.distress import DistressFusion, FusionConfig
from emotion_ros.types import (Alert, AudioCueResult, EmotionOutput, FrameResult,
                               LEVEL_DISTRESS, LEVEL_EMERGENCY, LEVEL_WATCH, PersonEstimate,
                               Position, Transcript)

LIGHT_WEIGHT = 0.55  # what the light backend declares (test_light_backend checks the value)


def person(track_id, fear=0.0, happiness=0.0, valence=6.0, face=True, box=(100, 50, 160, 250),
           camera='', weight=1.0, xyz=None, frame='map', sadness=0.0):
    """One person estimate."""
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[CATEGORY_INDEX['Fear']] = fear
    scores[CATEGORY_INDEX['Happiness']] = happiness
    scores[CATEGORY_INDEX['Sadness']] = sadness
    emotion = EmotionOutput(scores=scores, vad=(valence, 5.0, 5.0), face_visible=face)
    position = None
    if xyz is not None:
        position = Position(frame_id=frame, xyz=tuple(xyz), covariance=(0.01, 0, 0, 0, 0.01, 0,
                                                                        0, 0, 0.01),
                            azimuth=0.0, elevation=0.0, camera_frame=camera + '_optical',
                            source='depth')
    return PersonEstimate(track_id=track_id, box=box, detection_confidence=0.9,
                          emotion=emotion, model_id='test', camera=camera,
                          evidence_weight=weight, position=position)


def frame(stamp, persons, camera='', frame_id='cam_optical'):
    """One frame result."""
    return FrameResult(stamp=stamp, frame_id=frame_id, width=640, height=480, persons=persons,
                       timings_ms={}, camera=camera)


def cues(stamp, help_detected=False, scream=0.0):
    """One window of audio cues."""
    return AudioCueResult(stamp=stamp, window_s=1.0, speech_probability=0.9 if help_detected
                          else 0.0, voice_active=help_detected, help_detected=help_detected,
                          keywords=['help'] if help_detected else [],
                          keyword_confidence=0.9 if help_detected else 0.0,
                          scream_score=scream, loudness_dbfs=-20.0, pitch_hz=0.0,
                          spectral_centroid_hz=1000.0, vocal_arousal=math.nan)


def run(fusion, frames):
    """Feed frames, collect alerts."""
    alerts = []
    for f in frames:
        alerts += fusion.update_frame(f)
    return alerts


def open_incidents(fusion):
    """Open incidents (level > 0)."""
    return fusion.incidents(include_closed=False)


@pytest.mark.parametrize('rate_hz', [2.0, 5.0, 10.0, 15.0])
@pytest.mark.parametrize('fear', [0.85, 0.95])
def test_sustained_fear_is_one_incident_that_only_escalates(rate_hz, fear):
    """A frightened person seen for 8 s is one incident; alerts only on creation and rises."""
    fusion = DistressFusion(FusionConfig())
    n = int(8 * rate_hz)
    alerts = run(fusion, [frame(10 + i / rate_hz, [person(1, fear=fear, valence=2.0)])
                          for i in range(n)])
    assert alerts and len({a.incident_id for a in alerts}) == 1
    assert 10.2 <= alerts[0].stamp < 12.0  # smoothed: not on the first frame, but within 2 s
    assert any('fear' in r for r in alerts[0].reasons)
    levels = [a.level for a in alerts]
    assert levels == sorted(set(levels)), 'one alert per level, rising'
    assert levels[-1] == LEVEL_EMERGENCY
    # Above WATCH only after min_evidence_s of evidence.
    assert alerts[0].level == LEVEL_WATCH
    assert alerts[1].stamp - alerts[0].stamp >= FusionConfig().min_evidence_s - 1e-6
    assert len(open_incidents(fusion)) == 1


def test_single_frame_glitch_does_not_alert():
    """One frame of fear among calm frames is smoothed away."""
    fusion = DistressFusion(FusionConfig())
    frames = [frame(t * 0.2, [person(1, fear=0.95 if t == 5 else 0.0, happiness=0.8)])
              for t in range(20)]
    assert run(fusion, frames) == [] and open_incidents(fusion) == []


def test_happy_person_never_alerts():
    """A calm, happy person produces no alert and no incident."""
    fusion = DistressFusion(FusionConfig())
    assert run(fusion, [frame(t * 0.2, [person(1, happiness=0.9, valence=8.0)])
                        for t in range(50)]) == []
    assert open_incidents(fusion) == []


#: (watch, distress, emergency) thresholds: the defaults, and lower ones that the light
#: backend's weighted evidence (up to 0.55) would reach if the ceiling were not a rule.
THRESHOLDS = [(0.45, 0.6, 0.8), (0.35, 0.5, 0.55), (0.4, 0.4, 0.45), (0.31, 0.32, 0.33)]


@pytest.mark.parametrize('thresholds', THRESHOLDS)
@pytest.mark.parametrize('fear, sadness, valence', [
    (0.0, 1.0, 5.0), (1.0, 0.0, 5.0), (1.0, 1.0, 1.0), (0.6, 0.9, 3.0), (0.0, 0.0, 1.0)])
def test_light_backend_alone_never_goes_above_watch(fear, sadness, valence, thresholds):
    """Visual evidence weighted by the light backend's declared weight stays at WATCH at most,
    however strong and long (60 s), with several people and tracks, whatever the thresholds
    (the rule is enforced, not a consequence of 0.55 < distress_threshold)."""
    watch, distress, emergency = thresholds
    fusion = DistressFusion(FusionConfig(watch_threshold=watch, distress_threshold=distress,
                                         emergency_threshold=emergency))
    alerts = run(fusion, [frame(t * 0.2, [
        person(1, fear=fear, sadness=sadness, valence=valence, weight=LIGHT_WEIGHT),
        person(2, fear=fear, sadness=sadness, valence=valence, weight=LIGHT_WEIGHT,
               box=(400, 50, 460, 250))]) for t in range(300)])
    assert all(a.level <= LEVEL_WATCH for a in alerts)
    assert all(i.level <= LEVEL_WATCH for i in fusion.incidents())


@pytest.mark.parametrize('thresholds', THRESHOLDS[1:])
@pytest.mark.parametrize('weight, weak_below, above_watch', [
    (LIGHT_WEIGHT, 0.6, False), (1.0, 0.6, True), (LIGHT_WEIGHT, 0.5, True),
    (0.8, 0.9, False)])
def test_weak_evidence_weight_decides_the_ceiling(thresholds, weight, weak_below, above_watch):
    """The same strong face (fear 1.0, valence 1) for 20 s under thresholds it exceeds: an
    estimate whose declared weight is below weak_evidence_weight stays at WATCH, one at or
    above it goes higher."""
    watch, distress, emergency = thresholds
    fusion = DistressFusion(FusionConfig(watch_threshold=watch, distress_threshold=distress,
                                         emergency_threshold=emergency,
                                         weak_evidence_weight=weak_below))
    alerts = run(fusion, [frame(t * 0.2, [person(1, fear=1.0, valence=1.0, weight=weight)])
                          for t in range(100)])
    top = max(a.level for a in alerts)
    assert (top > LEVEL_WATCH) == above_watch, (top, alerts[-1].score)


@pytest.mark.parametrize('thresholds', THRESHOLDS[1:])
def test_light_backend_corroborated_by_a_scream_may_go_above_watch(thresholds):
    """The ceiling is on visual evidence alone: a light-backend face corroborated by a scream
    goes above WATCH (audio and the face agree)."""
    watch, distress, emergency = thresholds
    fusion = DistressFusion(FusionConfig(watch_threshold=watch, distress_threshold=distress,
                                         emergency_threshold=emergency))
    alerts = []
    for t in range(40):
        alerts += fusion.update_frame(frame(t * 0.2, [person(1, fear=1.0, valence=2.0,
                                                             weight=LIGHT_WEIGHT)]))
        alerts += fusion.update_audio(cues(t * 0.2 + 0.1, scream=0.9), 'mic')
    assert max(a.level for a in alerts) > LEVEL_WATCH


@pytest.mark.parametrize('fear, visibly, level', [
    (0.35, 0.3, LEVEL_EMERGENCY), (0.35, 0.5, LEVEL_DISTRESS), (0.8, 0.5, LEVEL_EMERGENCY),
    (0.8, 0.9, LEVEL_DISTRESS), (0.0, 0.0, LEVEL_DISTRESS)])
def test_visibly_distressed_decides_help_escalation(fear, visibly, level):
    """A call for help from a person whose visual evidence is above visibly_distressed is
    EMERGENCY, else DISTRESS: the parameter, not a literal, draws the line."""
    fusion = DistressFusion(FusionConfig(visibly_distressed=visibly))
    alerts = run(fusion, [frame(t * 0.2, [person(3, fear=fear, valence=5.5)])
                          for t in range(15)])
    alerts += fusion.update_audio(cues(3.0, help_detected=True), 'mic')
    assert alerts and alerts[-1].level == level, [(a.level, a.score) for a in alerts]


def test_reasons_carry_codes_and_text():
    """Every reason the fusion gives is a Reason: a known code, and text for people that is
    the string itself (messages, logs and JSON carry it unchanged); a call for help lists the
    help reasons first, chosen by code."""
    import copy
    import json
    import pickle

    from emotion_ros.fusion.distress import (REASON_CODES, REASON_HEARD, REASON_HELP,
                                             REASON_NOBODY_VISIBLE, Reason)
    fusion = DistressFusion(FusionConfig())
    alerts = run(fusion, [frame(t * 0.2, [person(1, fear=0.5, valence=5.5)])
                          for t in range(15)])
    alerts += fusion.update_transcript(Transcript(
        stamp=2.0, end=3.0, frame_id='mic', text='please help me', help_detected=True,
        help_phrase='help me'))
    alerts += fusion.update_audio(cues(10.0, scream=0.95), 'mic2')
    reasons = [r for a in alerts for r in a.reasons]
    assert reasons and all(isinstance(r, Reason) and r.code in REASON_CODES for r in reasons)
    help_alert = next(a for a in alerts if any(r.code == REASON_HELP for r in a.reasons))
    codes = [r.code for r in help_alert.reasons]
    assert codes[0] == REASON_HELP and REASON_HEARD in codes and len(set(codes)) > 2, codes
    assert codes == sorted(codes, key=lambda c: c not in (REASON_HELP, REASON_HEARD)), codes
    assert any(r.code == REASON_NOBODY_VISIBLE for r in alerts[-1].reasons)
    for r in reasons:
        assert json.loads(json.dumps(r)) == str(r)
        assert copy.deepcopy(r).code == pickle.loads(pickle.dumps(r)).code == r.code
    with pytest.raises(ValueError, match='unknown reason code'):
        Reason('made.up', 'text')


@pytest.mark.parametrize('fear', [0.6, 0.8, 1.0])
def test_light_backend_fear_with_call_for_help_is_emergency(fear):
    """A fearful face from the light backend plus a call for help reaches EMERGENCY."""
    fusion = DistressFusion(FusionConfig())
    alerts = run(fusion, [frame(t * 0.2, [person(3, fear=fear, valence=3.0,
                                                 weight=LIGHT_WEIGHT)]) for t in range(10)])
    alerts += fusion.update_audio(cues(2.0, help_detected=True), 'mic')
    assert alerts[-1].level == LEVEL_EMERGENCY
    assert len({a.incident_id for a in alerts}) == 1


def test_call_for_help_alerts_immediately_audio_only():
    """A call for help with nobody visible raises an audio-only incident on that window,
    stamped and framed by the audio message."""
    fusion = DistressFusion(FusionConfig())
    assert fusion.update_audio(cues(1.0), 'mic') == []
    alerts = fusion.update_audio(cues(1.5, help_detected=True), 'mic')
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.track_id == Alert.AUDIO_ONLY and alert.level == LEVEL_DISTRESS
    assert 'spoken call for help' in alert.reasons[0] and 'nobody visible' in alert.reasons
    assert alert.stamp == 1.5 and alert.frame_id == 'mic'


def test_call_for_help_attributed_to_visible_person():
    """With a person in view, the call for help alerts on that person, with both evidences."""
    fusion = DistressFusion(FusionConfig())
    run(fusion, [frame(t * 0.2, [person(7, fear=0.5, valence=4.0)]) for t in range(5)])
    alerts = fusion.update_audio(cues(1.0, help_detected=True), 'mic')
    assert [a.track_id for a in alerts] == [7]
    alert = alerts[0]
    assert alert.person is not None and alert.audio is not None
    assert alert.frame_id == 'mic' and alert.person_frame_id == 'cam_optical'
    assert alert.person_stamp == pytest.approx(0.8)


def test_call_for_help_alerts_only_the_attributed_person():
    """With two people in view, a call for help raises one incident, not two."""
    fusion = DistressFusion(FusionConfig())
    people = [person(1, fear=0.4, valence=4.0), person(2, happiness=0.9, box=(400, 50, 460, 250))]
    run(fusion, [frame(t * 0.2, people) for t in range(5)])
    alerts = fusion.update_audio(cues(1.0, help_detected=True), 'mic')
    alerts += run(fusion, [frame(1.0 + t * 0.2, people) for t in range(1, 10)])
    assert {a.track_id for a in alerts} == {1}


@pytest.mark.parametrize('gap_s', [1.0, 3.0, 5.0, 8.0])
@pytest.mark.parametrize('shift_px', [0, 40, 120])
def test_out_of_view_and_back_is_one_incident(gap_s, shift_px):
    """A distressed person out of view for gap_s and back (new track id, box shifted) joins the
    same incident and raises no new alert at a level already reached."""
    fusion = DistressFusion(FusionConfig())
    before = run(fusion, [frame(t * 0.2, [person(1, fear=0.95, valence=2.0)]) for t in range(25)])
    start = 5.0 + gap_s
    box = (100 + shift_px, 50, 160 + shift_px, 250)
    after = run(fusion, [frame(start + t * 0.2, [person(5, fear=0.95, valence=2.0, box=box)])
                         for t in range(25)])
    assert len({a.incident_id for a in before + after}) == 1
    assert after == []
    [incident] = open_incidents(fusion)
    assert incident.track_names == ['cam_optical/1', 'cam_optical/5']


def test_other_person_elsewhere_in_image_is_a_new_incident():
    """A distressed person appearing far from an incident's region gets their own incident."""
    fusion = DistressFusion(FusionConfig())
    run(fusion, [frame(t * 0.2, [person(1, fear=0.95)]) for t in range(10)])
    both = [person(1, fear=0.95), person(2, fear=0.95, box=(500, 50, 560, 250))]
    alerts = run(fusion, [frame(2 + t * 0.2, both) for t in range(10)])
    assert len(open_incidents(fusion)) == 2
    assert {a.track_id for a in alerts if a.level == LEVEL_WATCH} == {2}


@pytest.mark.parametrize('gap_s', [2.0, 4.0, 6.0])
def test_call_for_help_leave_and_come_back_is_one_incident_that_escalates(gap_s):
    """He calls for help (in view), leaves while the call is held, comes back frightened: one
    incident, no audio-only duplicate, escalating to EMERGENCY."""
    fusion = DistressFusion(FusionConfig())
    alerts = run(fusion, [frame(t * 0.2, [person(2, valence=4.5)]) for t in range(10)])
    for k in range(6):  # the call is heard over several windows, he leaves at t=2.2
        alerts += fusion.update_audio(cues(2.0 + 0.5 * k, help_detected=k < 3), 'mic')
        if k == 0:
            alerts += run(fusion, [frame(2.2, [person(2, valence=4.5)])])
    back = 2.2 + gap_s
    alerts += run(fusion, [frame(back + t * 0.2, [person(9, fear=0.95, valence=2.0)])
                           for t in range(20)])
    assert len({a.incident_id for a in alerts}) == 1
    assert [a.level for a in alerts] == [LEVEL_DISTRESS, LEVEL_EMERGENCY]
    assert all(a.track_id != Alert.AUDIO_ONLY for a in alerts)
    [incident] = open_incidents(fusion)
    # ESCALATED is the state of the update that raised the level; later evidence: UPDATED.
    assert incident.state == inc.UPDATED and incident.help_heard and incident.level == 3


def test_person_appearing_after_audio_only_call_joins_it():
    """Someone who appears shortly after an unseen call for help is linked to that incident."""
    fusion = DistressFusion(FusionConfig())
    alerts = fusion.update_audio(cues(1.0, help_detected=True), 'mic')
    alerts += run(fusion, [frame(3.0 + t * 0.2, [person(4, fear=0.9, valence=2.0)])
                           for t in range(15)])
    assert len({a.incident_id for a in alerts}) == 1
    [incident] = open_incidents(fusion)
    assert not incident.audio_only and incident.track_names == ['cam_optical/4']


@pytest.mark.parametrize('offset_m, merged', [(0.0, True), (0.3, True), (0.8, True),
                                              (2.0, False), (4.0, False)])
def test_two_cameras_same_position_is_one_incident(offset_m, merged):
    """Two cameras' tracks (same track id!) at positions closer than association_distance_m in
    the fixed frame are one incident; farther apart, two."""
    fusion = DistressFusion(FusionConfig())
    alerts = []
    for t in range(20):
        stamp = t * 0.2
        alerts += fusion.update_frame(frame(stamp, [person(1, fear=0.95, camera='cam_left',
                                                           xyz=(3.0, 1.0, 0.0))],
                                            camera='cam_left', frame_id='left_optical'))
        alerts += fusion.update_frame(frame(stamp + 0.05, [
            person(1, fear=0.95, camera='cam_right', xyz=(3.0 + offset_m, 1.0, 0.0))],
            camera='cam_right', frame_id='right_optical'))
    ids = {a.incident_id for a in alerts}
    assert len(ids) == (1 if merged else 2)
    if merged:
        [incident] = open_incidents(fusion)
        assert incident.cameras == {'cam_left', 'cam_right'}
        assert incident.track_names == ['cam_left/1', 'cam_right/1']
        assert incident.position.frame_id == 'map'


def test_acknowledged_incident_escalates_at_once():
    """An acknowledged WATCH incident escalating raises its alert on the frame the level rises,
    whatever the cooldown."""
    fusion = DistressFusion(FusionConfig(cooldown_s=60.0))
    alerts = run(fusion, [frame(t * 0.2, [person(1, fear=0.5, valence=4.5)]) for t in range(10)])
    [incident] = open_incidents(fusion)
    ok, _, _ = fusion.command(incident.id, 'acknowledge', 'seen')
    assert ok and fusion.get(incident.id).state == inc.ACKNOWLEDGED
    escalations = fusion.update_audio(cues(2.1, help_detected=True), 'mic')
    assert [a.level for a in escalations] == [LEVEL_EMERGENCY]
    assert escalations[0].stamp == 2.1 and len(alerts) == 1
    assert fusion.get(incident.id).state == inc.ESCALATED
    assert fusion.get(incident.id).acknowledged


@pytest.mark.parametrize('hold_s', [20.0, 60.0])
def test_rejected_person_does_not_realert(hold_s):
    """After a reject, the same person (even re-acquired, even calling for help) raises no
    alert for reject_hold_s; afterwards they may."""
    fusion = DistressFusion(FusionConfig(reject_hold_s=hold_s))
    alerts = run(fusion, [frame(t * 0.2, [person(1, fear=0.5, valence=4.5)]) for t in range(10)])
    assert [a.level for a in alerts] == [LEVEL_WATCH]
    incident = alerts[0].incident_id
    ok, message, result = fusion.command(incident, 'reject', 'a poster, not a person')
    assert ok and result.state == inc.REJECTED and 'rejected' in message
    later = run(fusion, [frame(2 + t * 0.2, [person(1, fear=0.95, valence=1.0)])
                         for t in range(20)])
    later += run(fusion, [frame(8 + t * 0.2, [person(3, fear=0.95, valence=1.0)])
                          for t in range(5 * int(hold_s) - 50)])
    assert later == [] and fusion.counters['suppressed_rejected'] >= 1
    after = run(fusion, [frame(8 + hold_s + t * 0.2, [person(3, fear=0.95, valence=1.0)])
                         for t in range(30)])
    assert after and after[0].incident_id != incident


def test_operator_commands_and_errors():
    """confirm/resolve change state; unknown ids and actions are refused with a reason."""
    fusion = DistressFusion(FusionConfig())
    run(fusion, [frame(t * 0.2, [person(1, fear=0.9)]) for t in range(10)])
    [incident] = open_incidents(fusion)
    assert fusion.command(incident.id, 'confirm')[2].confirmed
    ok, message, _ = fusion.command(99, 'acknowledge')
    assert not ok and '99' in message
    ok, message, _ = fusion.command(incident.id, 'explode')
    assert not ok and 'explode' in message
    ok, _, result = fusion.command(incident.id, 'resolve')
    assert ok and result.state == inc.RESOLVED and not result.open
    assert open_incidents(fusion) == [] and fusion.incidents()[0].id == incident.id
    assert not fusion.command(incident.id, 'acknowledge')[0]


def test_stale_then_expired():
    """Without evidence an incident goes STALE after stale_after_s and closes after expire_s."""
    fusion = DistressFusion(FusionConfig(stale_after_s=5.0, expire_s=20.0))
    run(fusion, [frame(t * 0.2, [person(1, fear=0.9)]) for t in range(10)])
    [incident] = open_incidents(fusion)
    run(fusion, [frame(2 + t * 0.5, []) for t in range(1, 16)])  # up to 9.5 s
    assert fusion.get(incident.id).state == inc.STALE
    run(fusion, [frame(10 + t * 0.5, []) for t in range(30)])  # up to 24.5 s
    assert fusion.get(incident.id).state == inc.RESOLVED
    assert 'no evidence' in fusion.get(incident.id).resolution


def test_calm_person_clears_incident():
    """A person seen calm for clear_after_s has their incident resolved (cleared)."""
    fusion = DistressFusion(FusionConfig(clear_after_s=5.0))
    run(fusion, [frame(t * 0.2, [person(1, fear=0.9)]) for t in range(10)])
    run(fusion, [frame(2 + t * 0.2, [person(1, happiness=0.9, valence=8.0)]) for t in range(60)])
    [incident] = fusion.incidents()
    assert incident.state == inc.RESOLVED and 'calm' in incident.resolution


@pytest.mark.parametrize('fade_s', [1.0, 2.0, 4.0])
def test_no_face_evidence_fades(fade_s):
    """Visual evidence of a person whose face is no longer visible fades with visual_fade_s
    (below the clear threshold within 3 fade times) instead of being kept forever."""
    fusion = DistressFusion(FusionConfig(visual_fade_s=fade_s))
    run(fusion, [frame(t * 0.2, [person(1, fear=0.9)]) for t in range(15)])
    [incident] = open_incidents(fusion)
    assert incident.visual > 0.6
    steps = int(3 * fade_s / 0.2)
    run(fusion, [frame(3 + t * 0.2, [person(1, fear=0.9, face=False)]) for t in range(steps)])
    assert fusion.get(incident.id).visual < FusionConfig().clear_threshold


@pytest.mark.parametrize('step_s', [1.0, 10.0, 100.0, 5000.0])
def test_clock_step_back_is_counted_and_new_calls_alert(step_s):
    """After the clock steps back, a new call for help still alerts at once; the step is
    counted and reported; earlier stamps do not freeze the fusion."""
    fusion = DistressFusion(FusionConfig(help_join_s=0.0, reacquire_s=0.0))
    base = 10000.0
    assert fusion.update_audio(cues(base, help_detected=True), 'mic')
    for k in range(1, 20):
        fusion.update_audio(cues(base + 0.5 * k), 'mic')
    stepped = base + 9.5 - step_s
    fusion.update_audio(cues(stepped), 'mic')
    assert fusion.clock.clock_steps == 1
    events = fusion.clock.drain_events()
    assert events and events[0][0] == 'clock_step'
    later = []
    for k in range(1, 10):
        later += fusion.update_audio(cues(stepped + 0.5 * k, help_detected=k == 5), 'mic')
    assert len(later) == 1 and later[0].stamp == pytest.approx(stepped + 2.5)
    assert later[0].level == LEVEL_DISTRESS


@pytest.mark.parametrize('with_clock', [True, False])
@pytest.mark.parametrize('ahead_s', [60.0, 1e3, 1e6])
def test_future_stamp_is_rejected(with_clock, ahead_s):
    """A cue stamped far in the future is counted and ignored: a calm person stays calm."""
    fusion = DistressFusion(FusionConfig())
    alerts = []
    for t in range(150):
        stamp = 100 + t * 0.2
        now = stamp + 0.05 if with_clock else None
        alerts += fusion.update_frame(frame(stamp, [person(1, happiness=0.8, valence=7.0)]), now)
        if t == 20:
            alerts += fusion.update_audio(cues(stamp + ahead_s, help_detected=True), 'mic', now)
        elif t % 3 == 0:
            alerts += fusion.update_audio(cues(stamp), 'mic', now)
    assert alerts == [] and open_incidents(fusion) == []
    assert fusion.clock.future_rejected == 1


def test_consistent_forward_jump_is_accepted_without_clock():
    """Without a clock, a source whose stamps jump forward and stay there is followed."""
    fusion = DistressFusion(FusionConfig())
    fusion.update_audio(cues(1.0), 'mic')
    assert fusion.update_audio(cues(500.0, help_detected=True), 'mic') == []
    assert fusion.update_audio(cues(500.5, help_detected=True), 'mic')
    assert fusion.clock.future_rejected == 1


def test_transcript_with_help_flag_opens_incident_with_text():
    """A transcript that heard a call for help raises an incident that carries its text."""
    fusion = DistressFusion(FusionConfig())
    transcript = Transcript(stamp=4.0, end=5.0, frame_id='mic', text='help me please',
                            help_detected=True, help_phrase='help me')
    alerts = fusion.update_transcript(transcript)
    assert len(alerts) == 1 and alerts[0].frame_id == 'mic'
    assert alerts[0].transcript.text == 'help me please'
    assert any('help me please' in r for r in alerts[0].reasons)
    assert open_incidents(fusion)[0].transcript.text == 'help me please'


@pytest.mark.parametrize('scream, threshold, evidence', [
    (0.9, 0.5, True), (0.45, 0.5, False), (0.45, 0.4, True), (0.3, 0.5, False)])
def test_scream_threshold_decides_scream_evidence(scream, threshold, evidence):
    """The scream cue counts only at or above scream_threshold (corroborating a face)."""
    fusion = DistressFusion(FusionConfig(scream_threshold=threshold))
    alerts = []
    for t in range(40):
        alerts += fusion.update_frame(frame(t * 0.2, [person(1, fear=0.8, valence=4.0,
                                                             weight=LIGHT_WEIGHT)]))
        alerts += fusion.update_audio(cues(t * 0.2 + 0.1, scream=scream), 'mic')
    top = max((a.level for a in alerts), default=0)
    assert (top >= LEVEL_DISTRESS) == evidence
    assert any('scream' in r for a in alerts for r in a.reasons) == evidence


def test_cooldown_reannounces_unacknowledged():
    """With cooldown_s set, an unacknowledged DISTRESS incident is re-announced; acknowledged,
    it is not."""
    fusion = DistressFusion(FusionConfig(cooldown_s=5.0))
    alerts = run(fusion, [frame(t * 0.2, [person(1, fear=0.7)]) for t in range(60)])
    distress = [a for a in alerts if a.level == LEVEL_DISTRESS]
    assert len(distress) >= 2 and len({a.incident_id for a in alerts}) == 1
    fusion.command(alerts[0].incident_id, 'acknowledge')
    assert run(fusion, [frame(12 + t * 0.2, [person(1, fear=0.7)]) for t in range(60)]) == []


def test_open_incidents_are_bounded():
    """More distressed people than max_open_incidents: the oldest calmest are closed."""
    fusion = DistressFusion(FusionConfig(max_open_incidents=3))
    people = [person(i + 1, fear=0.9, box=(i * 120, 50, i * 120 + 60, 250)) for i in range(5)]
    run(fusion, [frame(t * 0.2, people) for t in range(10)])
    assert len(open_incidents(fusion)) <= 3


def test_tracks_are_forgotten():
    """Tracks not seen for track_timeout_s are dropped (memory stays flat)."""
    fusion = DistressFusion(FusionConfig(track_timeout_s=1.0))
    run(fusion, [frame(0.0, [person(i, box=(i * 60, 0, i * 60 + 50, 90)) for i in range(1, 6)])])
    run(fusion, [frame(5.0, [person(9)])])
    assert fusion.tracks_followed == 1


@pytest.mark.parametrize('values, name', [
    ({'category_weights': [1.0]}, 'category_weights'),
    ({'distress_categories': ['Fear', 'Panic', 'Pain', 'Sadness', 'Fatigue', 'Anger']},
     'distress_categories'),
    ({'watch_threshold': 0.2}, 'thresholds'),
    ({'smoothing_tau_s': 0.0}, 'smoothing_tau_s'),
    ({'cooldown_s': 'soon'}, 'cooldown_s'),
    ({'cooldwn_s': 3.0}, 'cooldwn_s'),
    ({'stale_after_s': 50.0, 'expire_s': 20.0}, 'expire_s'),
])
def test_invalid_config_names_the_parameter(values, name):
    """Wrong fusion parameters are rejected with a message naming the parameter."""
    with pytest.raises(ConfigError, match=name):
        from_mapping(FusionConfig, values)


def test_two_separate_calls_in_empty_scene_after_people_left():
    """A call while people are in view, then (after the call ended and the people left more than
    help_join_s before) a call in an empty scene: two incidents, two alerts; a third call soon
    after the second joins the second (same unseen voice)."""
    fusion = DistressFusion(FusionConfig())
    alerts = run(fusion, [frame(t * 0.2, [person(1, valence=5.0)]) for t in range(30)])
    for k in range(5):
        alerts += fusion.update_audio(cues(5.0 + 0.5 * k, help_detected=k < 3), 'mic')
    alerts += run(fusion, [frame(6.0 + t * 0.2, []) for t in range(30)])
    for k in range(12):
        alerts += fusion.update_audio(cues(10.0 + 0.5 * k, help_detected=k in (0, 1, 10)),
                                      'mic')
    assert len(alerts) == 2 and len({a.incident_id for a in alerts}) == 2
    assert alerts[1].track_id == Alert.AUDIO_ONLY and alerts[1].stamp == 10.0
    assert len(open_incidents(fusion)) == 2


@pytest.mark.parametrize('late_s', [0.0, 0.5, 1.0, 2.0, 2.9])
@pytest.mark.parametrize('gap_s', [3.3, 4.0, 6.0])
def test_a_late_stamped_help_window_does_not_swallow_the_next_call(late_s, gap_s):
    """A call's help flag may reach the fusion in a cue window stamped up to seconds after
    the words (a decode that finished later, the live node's background decoding). The next
    call, whose words start more than help_hold_s after the first call's words ended, is a
    new call all the same: with nobody in view by then it opens its own audio-only incident
    and alerts, whatever the delay of the first call's flag. Calls closer than help_hold_s
    stay one call."""
    cfg = FusionConfig()
    for gap, separate in ((gap_s, True), (1.0, False)):
        fusion = DistressFusion(cfg)
        alerts = run(fusion, [frame(t * 0.2, [person(1, valence=5.0)]) for t in range(30)])
        words_end = 5.5
        alerts += fusion.update_transcript(Transcript(
            stamp=5.0, end=words_end, frame_id='mic', text='Help!', help_detected=True,
            help_phrase='help'))
        alerts += fusion.update_audio(cues(words_end + late_s, help_detected=True), 'mic')
        alerts += run(fusion, [frame(6.0 + t * 0.2, []) for t in range(30)])
        start2 = words_end + gap
        alerts += fusion.update_transcript(Transcript(
            stamp=start2, end=start2 + 0.4, frame_id='mic', text='Help!',
            help_detected=True, help_phrase='help'))
        incidents = {a.incident_id for a in alerts}
        if separate and start2 - 6.0 > cfg.help_join_s:  # the people left at 6 s
            assert len(incidents) == 2, (gap, late_s, alerts)
            assert alerts[-1].track_id == Alert.AUDIO_ONLY
        elif not separate:
            assert len(incidents) == 1, (gap, late_s, alerts)


@pytest.mark.parametrize('order', ['before', 'after'])
@pytest.mark.parametrize('period_s', [0.2, 0.5, 1.0])
def test_a_second_person_next_to_an_incident_is_not_merged(order, period_s):
    """A new person appearing next to a distressed one who is still in view (whatever the
    frame rate and the order of persons in the frame) does not join their incident."""
    fusion = DistressFusion(FusionConfig())
    run(fusion, [frame(t * period_s, [person(4, fear=0.9)]) for t in range(int(4 / period_s))])
    [incident] = open_incidents(fusion)
    near = person(2, valence=5.0, box=(150, 50, 210, 250))
    for k in range(10):
        people = [near, person(4, fear=0.9)] if order == 'before' else [person(4, fear=0.9), near]
        fusion.update_frame(frame(4 + k * period_s, people))
    assert fusion.get(incident.id).track_names == ['cam_optical/4']


def voice(fear, valence=5.0, weight=1.0):
    """An audio-only estimate (nobody visible): track 0, no box, no face."""
    return person(0, fear=fear, valence=valence, face=False, box=(0, 0, 0, 0), weight=weight)


@pytest.mark.parametrize('fear', [0.0, 0.2, 0.4, 0.55, 0.6, 0.8, 0.95, 1.0])
@pytest.mark.parametrize('rate_hz', [2.0, 5.0])
def test_audio_only_estimate_opens_an_audio_only_incident_at_its_evidence(fear, rate_hz):
    """A frightened voice with nobody in view: evidence = fear x voice_weight; at
    watch_threshold or more it opens one audio-only incident ('nobody visible', the voice
    named) that rises to the level of its evidence after min_evidence_s; below, nothing."""
    cfg = FusionConfig()
    fusion = DistressFusion(cfg)
    alerts = []
    for i in range(int(4 * rate_hz)):
        alerts += fusion.update_voice(voice(fear), 50.0 + i / rate_hz, 'cam_optical')
    evidence = cfg.voice_weight * fear
    if evidence < cfg.watch_threshold:
        assert alerts == [] and open_incidents(fusion) == []
        return
    [incident] = open_incidents(fusion)
    assert incident.audio_only and {a.incident_id for a in alerts} == {incident.id}
    expected = (LEVEL_EMERGENCY if evidence >= cfg.emergency_threshold else LEVEL_DISTRESS
                if evidence >= cfg.distress_threshold else LEVEL_WATCH)
    assert incident.level == expected
    assert any('voice heard' in r and 'fear' in r for r in alerts[-1].reasons)
    assert 'nobody visible' in alerts[-1].reasons
    assert alerts[-1].track_id == 0 and alerts[-1].person is None
    if expected > LEVEL_WATCH:  # above WATCH only after min_evidence_s of the voice
        assert alerts[-1].stamp - alerts[0].stamp >= cfg.min_evidence_s - 1e-6


def test_audio_only_estimate_goes_to_a_visible_person_and_expires():
    """With a person in view (another camera) the voice's evidence joins their incident
    instead of opening an audio-only one; it stops counting voice_hold_s after the last
    estimate."""
    cfg = FusionConfig()
    fusion = DistressFusion(cfg)
    alerts = []
    for i in range(20):
        t = 10.0 + 0.2 * i
        alerts += fusion.update_frame(frame(t, [person(1, fear=0.5)], camera='left'))
        alerts += fusion.update_voice(voice(0.95), t, 'right_optical')
    [incident] = open_incidents(fusion)
    assert not incident.audio_only and incident.person.track_id == 1
    assert incident.level >= LEVEL_DISTRESS  # the calmer face alone would stay lower
    assert any('voice heard' in r for r in incident.reasons)
    scores = fusion.scores()
    # Without new estimates the voice term ends after voice_hold_s.
    fusion.update_frame(frame(14.0 + cfg.voice_hold_s + 0.5, [person(1, fear=0.5)],
                              camera='left'))
    assert fusion.scores()[incident.id] < scores[incident.id]


def test_weak_voice_model_weight_limits_the_audio_only_estimate():
    """The backend's declared evidence weight scales the voice like a face: a model declaring
    0.55 cannot open an incident above WATCH from a voice alone."""
    fusion = DistressFusion(FusionConfig())
    for i in range(20):
        fusion.update_voice(voice(1.0, weight=LIGHT_WEIGHT), 70.0 + 0.2 * i, 'cam')
    assert all(i.level <= LEVEL_WATCH for i in open_incidents(fusion))
