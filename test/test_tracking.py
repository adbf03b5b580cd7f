"""Person tracking: stable ids, Hungarian matching, velocity, dropping and resets."""

import numpy as np
import pytest

from emotion_ros.config.schema import from_mapping
from emotion_ros.perception.detectors.base import iou_matrix
from emotion_ros.errors import ConfigError, InputError
from emotion_ros.perception.tracking import PersonTracker, Track, TrackerConfig
from emotion_ros.types import Detection


def _det(x0, y0, w=50, h=120, score=0.9):
    return Detection(box=(float(x0), float(y0), float(x0 + w), float(y0 + h)), score=score)


def test_ids_start_at_one_and_follow_walking_people():
    """Two people walking in opposite directions keep ids 1 and 2; output follows input order."""
    tracker = PersonTracker(TrackerConfig())
    seen = []
    for frame in range(30):
        t = frame / 15.0
        a, b = _det(100 + 4 * frame, 200), _det(500 - 4 * frame, 210)
        order = [a, b] if frame % 2 == 0 else [b, a]
        tracks = tracker.update(order, t)
        assert [tr.box for tr in tracks] == [d.box for d in order]
        seen.append({tr.box[0]: tr.track_id for tr in tracks})
        ids = {tr.track_id for tr in tracks}
        assert ids == {1, 2}
    assert seen[0][100.0] == 1 and seen[0][500.0] == 2
    assert seen[-1][100.0 + 4 * 29] == 1 and seen[-1][500.0 - 4 * 29] == 2


def test_hungarian_beats_greedy_matching():
    """A detection that overlaps both tracks goes where the total overlap is best."""
    track_a, track_b = (0, 0, 100, 100), (60, 0, 160, 100)
    d1, d2 = (25, 0, 125, 100), (-30, 0, 70, 100)
    iou = iou_matrix(np.array([d1, d2]), np.array([track_a, track_b]))
    # Greedy would give d1 to A (the best pair overall) and leave d2 without a track.
    assert iou[0, 0] > iou[1, 0] > 0.3 and iou[0, 0] > iou[0, 1] > 0.3 and iou[1, 1] < 0.3
    tracker = PersonTracker(TrackerConfig(use_velocity=False))
    first = tracker.update([Detection(track_a, 0.9), Detection(track_b, 0.9)], 0.0)
    ids = {tr.box: tr.track_id for tr in first}
    second = tracker.update([Detection(d1, 0.9), Detection(d2, 0.9)], 0.1)
    assert [tr.track_id for tr in second] == [ids[track_b], ids[track_a]]
    assert tracker.num_tracks == 2


def test_velocity_prediction_keeps_fast_movers():
    """A person speeding up to 70% of the box width per frame keeps the id only with velocity."""
    xs = [10, 20] + [20 + 35 * k for k in range(1, 11)]
    results = {}
    for use_velocity in (True, False):
        tracker = PersonTracker(TrackerConfig(use_velocity=use_velocity))
        results[use_velocity] = [tracker.update([_det(x, 100)], 0.1 * k)[0].track_id
                                 for k, x in enumerate(xs)]
    assert results[True] == [1] * len(xs)
    assert len(set(results[False])) == len(xs) - 1  # a new person every fast step


def test_tracks_dropped_after_max_missed_and_ids_never_reused():
    """Short gaps keep the id, long gaps give a new one; ids only grow."""
    tracker = PersonTracker(TrackerConfig(max_missed_s=1.0))
    assert tracker.update([_det(100, 100)], 0.0)[0].track_id == 1
    assert tracker.update([], 0.5) == []
    assert tracker.update([_det(102, 100)], 0.9)[0].track_id == 1  # gap 0.9 s
    assert tracker.update([_det(104, 100)], 2.5)[0].track_id == 2  # gap 1.6 s
    tracker.reset()
    assert tracker.num_tracks == 0
    assert tracker.update([_det(104, 100)], 2.6)[0].track_id == 3


def test_time_going_backwards_resets():
    """A stamp earlier than the last one (bag loop) starts over with fresh ids."""
    tracker = PersonTracker(TrackerConfig())
    tracker.update([_det(100, 100)], 10.0)
    tracker.update([_det(100, 100)], 10.1)
    tracks = tracker.update([_det(100, 100)], 0.0)
    assert tracks[0].track_id == 2 and tracks[0].hits == 1


def test_min_hits_delays_reporting():
    """With min_hits 3 a person is reported from the third frame on, with hit counts."""
    tracker = PersonTracker(TrackerConfig(min_hits=3))
    reported = [tracker.update([_det(100, 100)], 0.1 * k) for k in range(5)]
    assert [len(r) for r in reported] == [0, 0, 1, 1, 1]
    assert [r[0].hits for r in reported[2:]] == [3, 4, 5]
    assert reported[2][0].last_seen == pytest.approx(0.2)


def test_returned_tracks_are_copies():
    """Changing a returned Track does not change the tracker's state."""
    tracker = PersonTracker(TrackerConfig(use_velocity=False))
    track = tracker.update([_det(100, 100)], 0.0)[0]
    assert isinstance(track, Track)
    track.box = (900.0, 900.0, 950.0, 1000.0)
    assert tracker.update([_det(101, 100)], 0.1)[0].track_id == 1


def test_invalid_input_and_config():
    """Invalid boxes/stamps raise InputError; bad config values raise ConfigError."""
    tracker = PersonTracker(TrackerConfig())
    with pytest.raises(InputError):
        tracker.update([Detection((0.0, float('nan'), 10.0, 10.0), 0.9)], 0.0)
    with pytest.raises(InputError):
        tracker.update([Detection((10.0, 0.0, 0.0, 10.0), 0.9)], 0.0)
    with pytest.raises(InputError):
        tracker.update([], float('nan'))
    assert tracker.num_tracks == 0
    with pytest.raises(ConfigError, match='iou_threshold'):
        from_mapping(TrackerConfig, {'tracker.iou_threshold': 1.5}, prefix='tracker')
    with pytest.raises(ConfigError, match='min_hits'):
        from_mapping(TrackerConfig, {'tracker.min_hits': 0}, prefix='tracker')
