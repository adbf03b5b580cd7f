"""Tests of the distress fusion: evidence, smoothing, hysteresis, cooldown, audio attribution."""

import math

import numpy as np
import pytest

from emotion_ros.config import from_mapping
from emotion_ros.contract import CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.errors import ConfigError
from emotion_ros.fusion import DistressFusion, FusionConfig
from emotion_ros.types import Alert, AudioCueResult, EmotionOutput, FrameResult, PersonEstimate


def person(track_id, fear=0.0, happiness=0.0, valence=6.0, face=True):
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[CATEGORY_INDEX['Fear']] = fear
    scores[CATEGORY_INDEX['Happiness']] = happiness
    emotion = EmotionOutput(scores=scores, vad=(valence, 5.0, 5.0), face_visible=face)
    return PersonEstimate(track_id=track_id, box=(0, 0, 10, 20), detection_confidence=0.9,
                          emotion=emotion, model_id='test')


def frame(stamp, persons):
    return FrameResult(stamp=stamp, frame_id='cam', width=64, height=48, persons=persons,
                       timings_ms={})


def cues(stamp, help_detected=False, scream=0.0):
    return AudioCueResult(stamp=stamp, window_s=1.0, speech_probability=0.9 if help_detected
                          else 0.0, voice_active=help_detected, help_detected=help_detected,
                          keywords=['help'] if help_detected else [],
                          keyword_confidence=0.9 if help_detected else 0.0,
                          scream_score=scream, loudness_dbfs=-20.0, pitch_hz=0.0,
                          spectral_centroid_hz=1000.0, vocal_arousal=math.nan)


def run(fusion, frames):
    alerts = []
    for f in frames:
        alerts += fusion.update_frame(f)
    return alerts


def test_sustained_fear_raises_one_alert_then_cooldown():
    """A frightened person seen at 5 Hz for 8 s gives alerts that escalate but never storm."""
    fusion = DistressFusion(FusionConfig())
    alerts = run(fusion, [frame(t * 0.2, [person(1, fear=0.95, valence=2.0)])
                          for t in range(40)])
    assert alerts, 'sustained fear must alert'
    assert alerts[0].track_id == 1
    assert 0.2 <= alerts[0].stamp < 2.0  # smoothed: not on the first frame, but within 2 s
    assert any('fear' in r for r in alerts[0].reasons)
    levels = [a.level for a in alerts]
    assert levels == sorted(levels), 'within one episode alerts only escalate'
    assert len(alerts) <= 3


def test_single_frame_glitch_does_not_alert():
    """One frame of fear among calm frames is smoothed away."""
    fusion = DistressFusion(FusionConfig())
    frames = [frame(t * 0.2, [person(1, fear=0.95 if t == 5 else 0.0, happiness=0.8)])
              for t in range(20)]
    assert run(fusion, frames) == []


def test_happy_person_never_alerts():
    """A calm, happy person produces no alert."""
    fusion = DistressFusion(FusionConfig())
    assert run(fusion, [frame(t * 0.2, [person(1, happiness=0.9, valence=8.0)])
                        for t in range(50)]) == []


def test_hysteresis_rearms_after_score_falls():
    """Below clear_threshold and after the cooldown, a new episode alerts again."""
    fusion = DistressFusion(FusionConfig(cooldown_s=2.0))
    first = run(fusion, [frame(t * 0.2, [person(1, fear=0.95)]) for t in range(15)])
    calm = run(fusion, [frame(3 + t * 0.2, [person(1)]) for t in range(25)])
    second = run(fusion, [frame(8 + t * 0.2, [person(1, fear=0.95)]) for t in range(15)])
    assert first and not calm and second


def test_call_for_help_alerts_immediately_audio_only():
    """A heard call for help with nobody visible raises an audio-only alert on that window."""
    fusion = DistressFusion(FusionConfig())
    assert fusion.update_audio(cues(1.0)) == []
    alerts = fusion.update_audio(cues(1.5, help_detected=True))
    assert len(alerts) == 1
    assert alerts[0].track_id == Alert.AUDIO_ONLY
    assert alerts[0].level >= Alert.LEVEL_DISTRESS
    assert 'spoken call for help' in alerts[0].reasons[0]
    assert 'nobody visible' in alerts[0].reasons
    assert alerts[0].stamp == 1.5


def test_call_for_help_attributed_to_visible_person():
    """With a person in view, the call for help alerts on that person's track."""
    fusion = DistressFusion(FusionConfig())
    run(fusion, [frame(t * 0.2, [person(7, fear=0.5, valence=4.0)]) for t in range(5)])
    alerts = fusion.update_audio(cues(1.0, help_detected=True))
    assert [a.track_id for a in alerts] == [7]
    assert alerts[0].person is not None and alerts[0].audio is not None


def test_tracks_are_forgotten():
    """Tracks not seen for track_timeout_s are dropped (memory stays flat)."""
    fusion = DistressFusion(FusionConfig(track_timeout_s=1.0))
    run(fusion, [frame(0.0, [person(i) for i in range(1, 6)])])
    run(fusion, [frame(5.0, [person(9)])])
    assert set(fusion.scores()) == {0, 9}


@pytest.mark.parametrize('values, name', [
    ({'category_weights': [1.0]}, 'category_weights'),
    ({'distress_categories': ['Fear', 'Panic', 'Pain', 'Sadness', 'Fatigue', 'Anger']},
     'distress_categories'),
    ({'watch_threshold': 0.2}, 'thresholds'),
    ({'smoothing_tau_s': 0.0}, 'smoothing_tau_s'),
    ({'cooldown_s': 'soon'}, 'cooldown_s'),
    ({'cooldwn_s': 3.0}, 'cooldwn_s'),
])
def test_invalid_config_names_the_parameter(values, name):
    """Wrong fusion parameters are rejected with a message naming the parameter."""
    with pytest.raises(ConfigError, match=name):
        from_mapping(FusionConfig, values)


def test_call_for_help_alerts_only_the_attributed_person():
    """With two people in view, a call for help raises an alert for one of them, not both."""
    fusion = DistressFusion(FusionConfig())
    calm = [frame(t * 0.2, [person(1, fear=0.4, valence=4.0), person(2, happiness=0.9)])
            for t in range(5)]
    run(fusion, calm)
    alerts = fusion.update_audio(cues(1.0, help_detected=True))
    alerts += run(fusion, [frame(1.0 + t * 0.2, [person(1, fear=0.4, valence=4.0),
                                                 person(2, happiness=0.9)])
                           for t in range(1, 10)])
    assert {a.track_id for a in alerts} == {1}
