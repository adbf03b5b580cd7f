"""One pipeline for live and offline: stamp-ordered fusion inputs and the parallel audio stage."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from emotion_ros.config.robot import load_robot_config
from emotion_ros.fusion.distress import DistressFusion
from emotion_ros.fusion.ordering import OrderedFusion, StampBuffer
from emotion_ros.types import (AudioCueResult, EmotionOutput, FrameResult, PersonEstimate,
                               Transcript)

CONFIG = Path(__file__).resolve().parents[1] / 'config' / 'robot.yaml'
ROBOT = load_robot_config(str(CONFIG))


def test_stamp_buffer_releases_in_stamp_order_whatever_the_push_order():
    """Items pushed within the hold time of each other leave in stamp order, each after
    waiting the hold time; with no hold they leave at once in push order; nothing stays
    held once the hold time after the last arrival is over."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        hold = float(rng.uniform(0.05, 0.5))
        n = int(rng.integers(1, 12))
        stamps = rng.uniform(0, 10, n)
        arrivals = np.sort(rng.uniform(0, hold * 0.99, n))  # all within one hold time
        buffer = StampBuffer(hold)
        out = []
        order = rng.permutation(n)
        for k, i in enumerate(order):
            out += buffer.release(arrivals[k])
            buffer.push(stamps[i], arrivals[k], i)
            out += buffer.release(arrivals[k])
        assert out == []  # nobody waited the hold time yet
        out += buffer.release(arrivals[-1] + hold + 1e-9)
        assert len(buffer) == 0
        assert [stamps[i] for i in out] == sorted(stamps)
        immediate = StampBuffer(0.0)
        got = []
        for k, i in enumerate(order):
            immediate.push(stamps[i], arrivals[k], i)
            got += immediate.release(arrivals[k])
        assert got == list(order)


def _person(track: int, scores: np.ndarray) -> PersonEstimate:
    return PersonEstimate(track, (100.0 * track, 50.0, 100.0 * track + 80, 250.0), 0.9,
                          EmotionOutput(scores=scores, vad=(3.0, 6.0, 4.0)), 'scripted')


def _scenario(seed: int):
    """Two people in view at 5 Hz, then one audio chunk: a transcript and its cue windows,
    arriving together (as audio_node publishes them from one chunk)."""
    rng = np.random.default_rng(seed)
    scores = {k: rng.uniform(0, 0.8, 26).astype(np.float32) for k in (1, 2)}
    t0 = 100.0
    frames = [(FrameResult(t0 + 0.2 * i, 'cam', 640, 480,
                           [_person(k, s) for k, s in scores.items()], {}), t0 + 0.2 * i)
              for i in range(10)]
    end = t0 + 1.0 + float(rng.uniform(0, 0.5))
    arrival = max(end + 0.6, frames[-1][1])
    call = bool(rng.integers(2))
    transcript = Transcript(end - 1.0, end, 'mic', 'help me' if call else 'hello there', call,
                            'help me' if call else '', 0.9)
    cues = [AudioCueResult(arrival - 0.3 + 0.1 * k, 0.5, 0.9, True, bool(rng.integers(2)),
                           ['help'], 0.8, float(rng.uniform(0, 1)), -20.0, 200.0, 1000.0, 6.0)
            for k in range(3)]
    return frames, transcript, cues, arrival


def _fuse(frames, chunk, arrival, hold_s):
    """Deliver the frames, then the chunk's inputs one message at a time (as distress_node's
    callbacks do), then a late frame; return the alerts and the incidents."""
    fusion = DistressFusion(dataclasses.replace(ROBOT.fusion, input_hold_s=hold_s))
    ordered = OrderedFusion(fusion)
    alerts = []
    for frame, t in frames:
        alerts += ordered.receive([OrderedFusion.frame(frame)], t)
    for item in chunk:
        alerts += ordered.receive([item], arrival)
    alerts += ordered.receive([OrderedFusion.frame(FrameResult(200.0, 'cam', 640, 480, [],
                                                               {}))], 200.0)
    alerts += ordered.finish()
    return ([(a.incident_id, a.level, round(a.stamp, 6), tuple(a.reasons)) for a in alerts],
            [(i.id, i.level, i.state, i.help_heard, i.transcript.text if i.transcript else '',
              round(i.score, 9)) for i in fusion.incidents()])


def test_transcript_and_cues_reversed_give_the_same_fusion_output():
    """A transcript and its cue windows delivered in reverse order (cues last-first, then
    the transcript) give the same alerts and incidents as in order; without the hold time
    (each fused on arrival) the order does change the output, so the ordering is what
    makes them equal."""
    robot_hold = ROBOT.fusion.input_hold_s
    assert robot_hold > 0
    differs_unordered = 0
    for seed in range(150):
        frames, transcript, cues, arrival = _scenario(seed)
        in_order = ([OrderedFusion.transcript(transcript)]
                    + [OrderedFusion.cues(c, 'mic') for c in cues])
        reverse = in_order[::-1]
        assert _fuse(frames, in_order, arrival, robot_hold) == \
            _fuse(frames, reverse, arrival, robot_hold), seed
        differs_unordered += _fuse(frames, in_order, arrival, 0.0) != \
            _fuse(frames, reverse, arrival, 0.0)
    assert differs_unordered > 100


def _labelled_bag(tmp_path: Path):
    """A labelled 12 s bag: a person in view from 1 s, two spoken calls for help."""
    sys.path.insert(0, str(Path(__file__).parent))
    from rosgraph import espeak_wav
    from test_evaluation import _scenario_frames, FPS, START

    from emotion_ros.evaluation.cli import main
    box = _scenario_frames(tmp_path)
    wav = espeak_wav(tmp_path / 'help.wav', 'Help! Help me!')
    calls = (2.5, 8.0)
    labels = tmp_path / 'scenario.yaml'
    labels.write_text(yaml.safe_dump({
        'persons': [{'id': 'walker', 'categories': ['Fear'], 'vad': [3, 7, 4],
                     'spans': [{'start': 0.95, 'end': 12.0, 'box': box}]}],
        'episodes': [{'start': c, 'end': c + 3.0, 'person': 'walker'} for c in calls]}))
    bag = tmp_path / 'scenario'
    assert main(['make-bag', str(bag), '--camera', f"{tmp_path / 'empty.png'}@1",
                 '--camera', f"{tmp_path / 'person.png'}@11"]
                + [arg for c in calls for arg in ('--wav', f'{wav}@{c}')]
                + ['--labels', str(labels), '--storage', 'mcap', '--compressed',
                   '--fps', str(FPS), '--start-time', str(START), '--no-progress']) == 0
    return bag, labels


def _records(out: Path, name: str, drop=()):
    rows = [json.loads(line) for line in (out / name).read_text().splitlines() if line]
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def test_parallel_audio_stage_gives_the_serial_results(tmp_path):
    """With the audio stage in a worker process next to perception, a labelled bag gives
    exactly the serial run's alerts, frames, cue windows, transcripts and metrics."""
    from emotion_ros.evaluation.runner import evaluate, RunOptions
    bag, labels = _labelled_bag(tmp_path)
    runs = {}
    for parallel in (False, True):
        out = tmp_path / ('parallel' if parallel else 'serial')
        runs[parallel] = (out, evaluate(bag, labels, CONFIG, out,
                                        options=RunOptions(progress=False, parallel=parallel)))
    (serial_out, serial), (parallel_out, parallel) = runs[False], runs[True]
    assert serial['performance']['stages'] == 'serial'
    assert parallel['performance']['stages'] == 'parallel'
    assert serial['distress']['detected'] >= 1  # the calls were heard: alerts to compare
    for key in ('emotion', 'detection', 'distress', 'incidents', 'window_s'):
        assert parallel[key] == serial[key], key
    assert _records(parallel_out, 'alerts.jsonl') == _records(serial_out, 'alerts.jsonl')
    assert _records(parallel_out, 'alerts.jsonl')
    timing = ('timings_ms', 'decode_ms', 'total_ms', 'decode_s')
    for name in ('frames.jsonl', 'transcripts.jsonl'):
        assert _records(parallel_out, name, timing) == _records(serial_out, name, timing), name
    cues = _records(serial_out, 'audio_cues.jsonl')
    assert cues and _records(parallel_out, 'audio_cues.jsonl') == cues


def test_offline_pipeline_fuses_everything_by_the_end():
    """Holding inputs only delays them: one camera's frames in order give the same alerts
    with and without the hold time, every input fused by finish()."""
    from emotion_ros.pipeline import OfflinePipeline
    rng = np.random.default_rng(5)
    for _ in range(20):
        scores = rng.uniform(0.3, 1.0, 26).astype(np.float32)
        got = {}
        for hold in (0.0, 0.1):
            robot = dataclasses.replace(ROBOT, fusion=dataclasses.replace(
                ROBOT.fusion, input_hold_s=hold))
            pipeline = OfflinePipeline(robot)  # nothing loaded: the fusion stage alone
            alerts = []
            for i in range(40):
                frame = FrameResult(10.0 + 0.2 * i, 'cam', 640, 480, [_person(1, scores)], {})
                alerts += pipeline.ordered.receive([OrderedFusion.frame(frame)], frame.stamp)
                assert len(pipeline.ordered.buffer) == (1 if hold else 0)
            alerts += pipeline.finish()[1]
            assert len(pipeline.ordered.buffer) == 0
            got[hold] = [(a.incident_id, a.level, a.stamp) for a in alerts]
        assert got[0.0] == got[0.1]
    assert got[0.0]  # the last case raised alerts


def test_one_audio_decoder_for_node_messages_and_bag_messages():
    """The decoder audio_node uses gives the same samples, rate and stamp for an rclpy
    message as for the same message read from a bag, for AudioFrame and audio_common
    AudioData[Stamped]; headerless or zero-stamped audio takes the arrival time; a
    message that is not audio is refused with kind audio_type."""
    pytest.importorskip('rclpy')
    from builtin_interfaces.msg import Time
    from emotion_ros_msgs.msg import AudioFrame
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header

    from emotion_ros.audio.messages import AudioDecoder, RawAudioFormat
    from emotion_ros.audio.pcm import encode_pcm
    from emotion_ros.errors import InputError
    from emotion_ros.evaluation import bags
    store = bags.project_typestore()
    rng = np.random.default_rng(3)
    decoder = AudioDecoder(RawAudioFormat(16000, 2, 'S16LE'))
    for _ in range(20):
        samples = rng.uniform(-0.9, 0.9, (int(rng.integers(80, 1600)), 2)).astype(np.float32)
        t = float(rng.uniform(1e9, 2e9))
        sec, nsec = int(t), int(round((t - int(t)) * 1e9)) % 1_000_000_000
        node_frame = AudioFrame(header=Header(stamp=Time(sec=sec, nanosec=nsec)),
                                sample_rate=16000, channels=2, sample_format='S16LE',
                                data=encode_pcm(samples, 'S16LE'))
        bag_frame = bags.audio_frame_message(store, samples, 16000, sec + nsec * 1e-9)
        a, b = decoder.decode(node_frame, arrival=0.0), decoder.decode(bag_frame, arrival=0.0)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1] == 16000
        assert a[2] == pytest.approx(b[2], abs=1e-6) and a[2] == sec + nsec * 1e-9
        np.testing.assert_allclose(a[0], samples.mean(axis=1), atol=2e-4)
        node_frame.header.stamp = Time()
        assert decoder.decode(node_frame, arrival=7.5)[2] == 7.5
    audio_common = pytest.importorskip('audio_common_msgs.msg')
    pcm = encode_pcm(samples, 'S16LE')
    raw = audio_common.AudioData(data=pcm)
    stamped = audio_common.AudioDataStamped(header=Header(stamp=Time(sec=5)), audio=raw)
    got_raw, got_stamped = decoder.decode(raw, arrival=3.0), decoder.decode(stamped)
    np.testing.assert_array_equal(got_raw[0], a[0])
    np.testing.assert_array_equal(got_stamped[0], a[0])
    assert got_raw[1:] == (16000, 3.0) and got_stamped[1:] == (16000, 5.0)
    with pytest.raises(InputError) as err:
        decoder.decode(Point(), 'geometry_msgs/msg/Point')
    assert err.value.kind == 'audio_type' and 'geometry_msgs/msg/Point' in str(err.value)
