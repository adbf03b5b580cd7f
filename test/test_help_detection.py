"""Call-for-help detection per utterance: segmentation, history independence, watchdog.

Speech is synthesized here (cached under build/speech_cache) by espeak-ng and by CMU
flite. pocketsphinx's en-us model, trained on human speech, hears flite's voices (built
from recordings of real speakers) but barely recognises espeak-ng's formant speech, so
the long-stream properties are checked with flite voices and stay strict xfails for
espeak-ng (docs/audio.md has the measurements).
"""

import threading
import time

import numpy as np
import pytest

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.detectors import DetectorRunner, StallingDetector
from emotion_ros.audio.keywords import KeyphraseDetector
from emotion_ros.audio.segmenter import AUDIO_GRID, UtteranceSegmenter
from emotion_ros.audio.features import FRAME_HOP, FRAME_LENGTH, FrameAnalyzer
from emotion_ros.audio.synth import (build_stream, FLITE_CENTS_PER_PITCH, RATE, set_rms_dbfs,
                                     speak)

CALL = 'Help! Somebody help me!'
CALM = ['The weather is nice today and the sky is blue.',
        'I think the robot needs a new battery.',
        'Turn left at the next corner and walk to the door.']
NEAR_MISSES = ['The health of my helmet, it held well.',
               'Hello there, I will hold the yellow shelf.']


def config(**kw) -> AudioCueConfig:
    """The default audio configuration (Silero VAD, keyphrase detector), with overrides."""
    return AudioCueConfig(**kw)


def run(cfg, audio, chunk=1600, t0=100.0):
    """Push ``audio`` in chunks through a fresh extractor; all transcripts and cues."""
    ex = AudioCueExtractor(cfg)
    ex.load()
    cues, transcripts = [], []
    try:
        for i in range(0, audio.size, chunk):
            cues.extend(ex.push(audio[i:i + chunk], RATE, t0 + i / RATE))
            transcripts.extend(ex.pop_transcripts())
        transcripts.extend(ex.flush())
    finally:
        ex.close()
    return transcripts, cues


def test_segmenter_cuts_utterances_with_preroll_and_hangover():
    """Voiced frames become utterances with pre-roll; short silences do not split them."""
    seg = UtteranceSegmenter(threshold=0.5, preroll_s=0.1, postroll_s=0.1, hangover_s=0.3,
                             min_speech_s=0.05, max_utterance_s=5.0)
    probs = np.zeros(200)
    probs[20:40] = 1.0      # 0.64 s of speech
    probs[44:50] = 1.0      # after a 0.13 s pause: same utterance
    probs[120:130] = 1.0    # a second utterance
    audio = np.arange(200 * 512, dtype=np.float32).reshape(200, 512)
    out = []
    for k in range(0, 200, 7):  # frames fed in uneven groups
        out += seg.feed(k * 512, audio[k:k + 7], probs[k:k + 7])
    out += seg.flush(200 * 512)
    assert [(u.start, u.end) for u in out] == [(20 * 512, 50 * 512), (120 * 512, 130 * 512)]
    first = out[0]
    # Audio from the pre-roll, on the 200 ms grid, to the post-roll, on the grid.
    assert first.audio_start == (20 * 512 - 1600) // AUDIO_GRID * AUDIO_GRID
    assert first.audio[0] == first.audio_start
    assert first.audio_start + first.audio.size == -(-(50 * 512 + 1600) // AUDIO_GRID) * \
        AUDIO_GRID
    assert first.closed_at >= first.end + int(0.3 * RATE)


def test_segmenter_cuts_long_speech_at_max_utterance():
    """Continuous voice is cut at max_utterance_s so memory and latency stay bounded."""
    seg = UtteranceSegmenter(max_utterance_s=2.0, preroll_s=0.0)
    probs = np.ones(400)
    frames = np.zeros((400, 512), np.float32)
    out = seg.feed(0, frames, probs)
    assert len(out) == 6 and all(u.truncated for u in out)
    assert all(u.end - u.start <= 2 * RATE + 512 for u in out)


def test_detector_answer_depends_only_on_the_utterance():
    """The same utterance gives the same answer whatever was decoded before it."""
    det = KeyphraseDetector(AudioCueConfig().keywords, AudioCueConfig().keyword_levels,
                            AudioCueConfig().keyword_threshold, AudioCueConfig().near_miss_words)
    det.load()
    pad = np.zeros(4800, np.float32)
    call = np.concatenate([pad, set_rms_dbfs(speak(CALL, 'en-gb'), -23), pad])
    reference = det.decode(call)
    for text in CALM + NEAR_MISSES + [CALL]:
        other = np.concatenate([pad, set_rms_dbfs(speak(text, 'en+f3'), -15), pad])
        det.decode(other)
        assert det.decode(call) == reference
    det.close()


#: Voices the long-stream properties must hold for: a Scottish male and a US female
#: voice built from recordings (flite), which the detector hears.
HEARD_VOICES = ['flite:awb', 'flite:slt']
#: espeak-ng voices: the detector's keyphrase scores of their calls sit at its threshold.
ESPEAK_XFAIL = 'measured: pocketsphinx en-us barely recognises espeak-ng speech (docs/audio.md)'


def _espeak_xfail(voice, reason):
    return pytest.param(voice, marks=pytest.mark.xfail(strict=True, reason=f'{ESPEAK_XFAIL}; '
                                                       f'{reason}'))


def _median_pitch(x):
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[::FRAME_HOP]
    pitch = FrameAnalyzer().analyze(frames).pitch_hz
    return float(np.median(pitch[pitch > 0]))


@pytest.mark.parametrize('voice', ['flite:awb', 'flite:rms', 'flite:slt', 'flite:kal16'])
def test_flite_voices_follow_speed_and_pitch(voice, tmp_path):
    """flite speech is 16 kHz mono, faster when asked (duration ~ 1/speed) and higher for a
    higher pitch (FLITE_CENTS_PER_PITCH cents per step), like espeak-ng's parameters."""
    text = 'Can anyone hear me? Over here!'
    slow, fast = (speak(text, voice, wpm, 50, cache_dir=str(tmp_path)) for wpm in (150, 185))
    assert slow.dtype == np.float32 and slow.ndim == 1
    assert 150 / 185 * 0.85 < fast.size / slow.size < 150 / 185 * 1.15
    low, high = (speak(text, voice, 150, p, cache_dir=str(tmp_path)) for p in (40, 65))
    semitones = 12 * np.log2(_median_pitch(high) / _median_pitch(low))
    expected = 25 * FLITE_CENTS_PER_PITCH / 100
    assert abs(semitones - expected) < 0.6, (semitones, expected)


def _stream(voice, offsets_rng, n_calls=24):
    """A continuous stream: the same call n_calls times, calm speech and silence between."""
    call = set_rms_dbfs(speak(CALL, voice), -23.0)
    items, gaps = [], []
    for k in range(n_calls):
        items.append((call, 'call', CALL))
        gaps.append(float(offsets_rng.uniform(0.7, 2.5)))
        calm = set_rms_dbfs(speak(CALM[k % len(CALM)], 'en-us'), -23.0)
        items.append((calm, 'calm', CALM[k % len(CALM)]))
        gaps.append(float(offsets_rng.uniform(0.7, 2.5)))
    audio, places = build_stream(items, gaps)
    noise = np.random.default_rng(1).normal(0, 10 ** (-55 / 20), audio.size)
    return (audio + noise).astype(np.float32), places


_STREAM_RUNS = {}


def _stream_run(voice):
    """``_stream(voice, seed 7)`` pushed whole through a fresh extractor: (audio, places,
    transcripts, cues). Computed once per voice: the two long-stream tests check different
    properties of the same run (under xdist they share a group, see test/conftest.py)."""
    if voice not in _STREAM_RUNS:
        audio, places = _stream(voice, np.random.default_rng(7))
        _STREAM_RUNS[voice] = (audio, places, *run(config(), audio))
    return _STREAM_RUNS[voice]


def _answers(transcripts, p, t0):
    """Help decisions of the utterances that start within placement ``p`` (stream seconds)."""
    return [(round(t.start - t0 - p.start, 3), t.help_detected, t.help_phrase)
            for t in transcripts if p.start - 0.35 <= t.start - t0 <= p.end]


@pytest.mark.parametrize('voice', HEARD_VOICES + [
    _espeak_xfail(v, "utterance bounds move by a 32 ms VAD frame with Silero's recurrent "
                  'state and these calls score so close to the threshold that some decisions '
                  'flip') for v in ('en-gb', 'en+f3')])
def test_the_answer_to_a_call_does_not_depend_on_where_it_falls(voice):
    """One continuous stream of several minutes, the same call at 24 random offsets with calm
    speech and silence between, no reset: at every offset the call gets the answer
    (utterances, help flag, phrase) it gets when only a short excerpt around it is fed to a
    fresh extractor, so nothing earlier in the stream changes what is heard."""
    audio, places, transcripts, cues = _stream_run(voice)
    assert audio.size / RATE > 120
    calls = [p for p in places if p.kind == 'call']
    assert len(calls) == 24
    for p in calls:
        # Excerpt from 1 s before the call, on the stream's 32 ms VAD grid.
        a = int((p.start - 1.0) * RATE) // 512 * 512
        b = int((p.end + 1.5) * RATE)
        alone, _ = run(config(), audio[a:b], t0=100.0 + a / RATE)
        in_stream, excerpt = _answers(transcripts, p, 100.0), _answers(alone, p, 100.0)
        assert in_stream, p
        # Same utterances and decisions; starts may differ by a VAD frame or two (Silero's
        # recurrent state has seen different audio before the excerpt).
        assert [a[1:] for a in in_stream] == [a[1:] for a in excerpt], p
        assert all(abs(a[0] - b[0]) <= 0.1 for a, b in zip(in_stream, excerpt)), p
    # The AudioCues help flag agrees with the transcripts: one window per help utterance.
    assert sum(c.help_detected for c in cues) == sum(t.help_detected for t in transcripts)


@pytest.mark.parametrize('voice', HEARD_VOICES + [
    _espeak_xfail('en-gb', 'some of its calls are missed in -55 dBFS noise')])
def test_every_call_in_a_long_stream_is_detected_at_its_place(voice):
    """Every one of 24 placements of the same call in a long stream is detected, stamped
    within 0.35 s of the call's start."""
    audio, places, transcripts, _ = _stream_run(voice)
    for p in [p for p in places if p.kind == 'call']:
        heard = [t for t in transcripts if t.help_detected
                 and p.start - 0.35 <= t.start - 100.0 <= p.end]
        assert heard and abs(min(t.start - 100.0 for t in heard) - p.start) < 0.35, p


@pytest.mark.parametrize('voices', [
    pytest.param(('flite:awb', 'flite:rms', 'flite:slt', 'flite:kal16'), marks=pytest.mark.xfail(
        strict=True, reason='measured: one of these near misses is heard as "over here"; the '
        'benchmark flags near misses of flite voices too (docs/audio.md)')),
    _espeak_xfail(('en-us', 'en-gb', 'en+m3'), 'the near-miss check does not reject every '
                  'near miss of these voices')])
def test_near_miss_sentences_are_not_a_call_for_help(voices):
    """Sentences that sound like help ("the health of my helmet, it held well") placed at
    many offsets in a stream with several voices are not taken for a call for help."""
    rng = np.random.default_rng(3)
    items = [(set_rms_dbfs(speak(text, voice), -23.0), 'near', f'{text} [{voice}]')
             for text in NEAR_MISSES for voice in voices for _ in range(3)]
    order = rng.permutation(len(items))
    audio, places = build_stream([items[i] for i in order], rng.uniform(0.7, 2.5, len(items)))
    transcripts, _ = run(config(), audio)
    assert len(transcripts) >= len(items)
    flagged = [(t.text, round(t.start - 100, 1)) for t in transcripts if t.help_detected]
    assert not flagged


def test_transcripts_do_not_depend_on_chunking():
    """Pushing a stream in one piece or in uneven chunks gives identical transcripts."""
    audio, _ = _stream('en-gb', np.random.default_rng(5), n_calls=3)
    whole, _ = run(config(), audio, chunk=audio.size)
    rng = np.random.default_rng(0)
    ex = AudioCueExtractor(config())
    ex.load()
    pieces, i = [], 0
    while i < audio.size:
        n = int(rng.integers(100, 5000))
        ex.push(audio[i:i + n], RATE, 100.0 + i / RATE)
        pieces.extend(ex.pop_transcripts())
        i += n
    pieces.extend(ex.flush())
    ex.close()
    strip = [(t.start, t.end, t.text, t.help_detected, t.help_score) for t in whole]
    assert strip == [(t.start, t.end, t.text, t.help_detected, t.help_score) for t in pieces]
    assert len(strip) >= 6


def test_watchdog_restarts_a_stalled_detector_and_counts_it():
    """A decode that never returns is abandoned after timeout_s; a fresh detector answers."""
    def factory(generation):
        det = KeyphraseDetector(['help'])
        return StallingDetector(det, after=1) if generation == 0 else det

    runner = DetectorRunner(factory, timeout_s=1.0)
    runner.load()
    pad = np.zeros(4800, np.float32)
    call = np.concatenate([pad, set_rms_dbfs(speak('Help!', 'en-gb'), -23), pad])
    first = runner.decode(call)
    assert first is not None and runner.restarts == 0
    seen_busy = []
    watcher = threading.Thread(target=lambda: (time.sleep(0.5),
                                               seen_busy.append(runner.busy_s())))
    watcher.start()
    assert runner.decode(call) is None          # stalled: the watchdog gave up
    watcher.join()
    assert runner.restarts == 1 and seen_busy and seen_busy[0] > 0.3
    assert runner.decode(call) == first         # the restarted detector answers again
    runner.close()


def test_whisper_phrase_matching_per_language():
    """Help phrases match whole words per language, substrings for Japanese."""
    from emotion_ros.audio.whisper import find_phrase, parse_whisper_phrases
    phrases = parse_whisper_phrases(AudioCueConfig().whisper_help_phrases,
                                    ['en', 'es', 'de', 'fr', 'ja'])
    assert find_phrase('Help! Somebody, help me!', 'en', phrases['en']) == 'somebody help'
    assert find_phrase('The health of my helmet', 'en', phrases['en']) == ''
    assert find_phrase('¡Ayuda, por favor!', 'es', phrases['es']) == 'ayuda'
    assert find_phrase('Hilfe! Ich stecke fest.', 'de', phrases['de']) == 'ich stecke fest'
    assert find_phrase('Au secours !', 'fr', phrases['fr']) == 'au secours'
    assert find_phrase('だれか助けてください', 'ja', phrases['ja']) == '助けてください'
    assert find_phrase('助けて！', 'ja', phrases['ja']) == '助けて'
    with pytest.raises(Exception, match='whisper_help_phrases'):
        parse_whisper_phrases(['help'], ['en'])
    with pytest.raises(Exception, match='no phrase for language'):
        parse_whisper_phrases(['en:help'], ['en', 'sv'])
