"""Audio cues: voice activity, spoken calls for help, scream/cry score, vocal arousal."""

import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.features import FRAME_HOP, FRAME_LENGTH, FrameAnalyzer, resample
from emotion_ros.audio.pcm import read_wav
from emotion_ros.audio.synth import set_rms_dbfs, speak
from emotion_ros.config.schema import from_mapping
from emotion_ros.errors import ConfigError, InputError, ModelLoadError

RATE = 16000


def espeak(tmp_path, text, name='speech.wav'):
    """Synthesize ``text`` with Debian's espeak-ng; mono float32 at 16 kHz."""
    if shutil.which('espeak-ng') is None:
        pytest.skip('espeak-ng is not installed (apt-get install espeak-ng)')
    path = tmp_path / name
    subprocess.run(['espeak-ng', '-w', str(path), text], check=True, capture_output=True)
    samples, rate = read_wav(path)
    return resample(samples[:, 0], rate, RATE)


def silence(seconds):
    """Digital silence at 16 kHz."""
    return np.zeros(int(seconds * RATE), np.float32)


def harmonic_tone(f0, seconds, amplitude, harmonics=10, vibrato_hz=0.0, vibrato_depth=0.0,
                  decay=0.5):
    """A harmonic tone (partials k * f0 at amplitude k**-decay) with optional vibrato."""
    t = np.arange(int(seconds * RATE)) / RATE
    freq = f0 * (1 + vibrato_depth * np.sin(2 * np.pi * vibrato_hz * t))
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    x = sum(k ** -decay * np.sin(k * phase) for k in range(1, harmonics + 1)
            if k * f0 * (1 + vibrato_depth) < RATE / 2)
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def key(result):
    """A result as a tuple in which NaN compares equal to NaN."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v
                 for v in vars(result).values())


@pytest.fixture(scope='module')
def extractor():
    """One loaded extractor (Silero VAD + pocketsphinx) with the default config."""
    ex = AudioCueExtractor(AudioCueConfig())
    ex.load()
    yield ex
    ex.close()


def run(ex, audio, stamp=100.0, chunk=None, seed=0):
    """Push audio in one call, or in random chunks of up to ``chunk`` samples."""
    ex.reset()
    ex.pop_transcripts()
    if chunk is None:
        return ex.push(audio, RATE, stamp)
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < audio.size:
        n = int(rng.integers(1, chunk))
        out += ex.push(audio[i:i + n], RATE, stamp + i / RATE)
        i += n
    return out


def test_importing_the_audio_core_loads_no_ros_and_no_heavy_library():
    """`import emotion_ros.audio` in a fresh interpreter imports neither rclpy nor torch,
    pocketsphinx, scipy or sounddevice."""
    code = ('import sys, emotion_ros.audio, emotion_ros.audio.sources; '
            'print(sorted(m for m in ("rclpy", "torch", "pocketsphinx", "scipy", '
            '"sounddevice") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == '[]'


def test_config_validates_and_names_the_parameter():
    """from_mapping accepts the defaults and rejects bad values naming the parameter."""
    cfg = from_mapping(AudioCueConfig, {'audio.window_s': 2, 'audio.keywords': ['help']},
                       'audio')
    assert cfg.window_s == 2.0 and cfg.keywords == ('help',)
    bad = [({'hop_s': 2.0}, 'hop_s'), ({'vad_backend': 'webrtc'}, 'vad_backend'),
           ({'vad_threshold': 1.5}, 'vad_threshold'), ({'hop_s': -1.0}, 'hop_s'),
           ({'keyword_levels': [-10.0, -20.0]}, 'keyword_levels'),
           ({'pitch_min_hz': 600.0, 'pitch_max_hz': 500.0}, 'pitch_min_hz'),
           ({'windw_s': 1.0}, 'windw_s')]
    for values, name in bad:
        with pytest.raises(ConfigError) as info:
            from_mapping(AudioCueConfig, values)
        assert name in str(info.value), (values, str(info.value))


def test_unknown_keyword_word_fails_at_load_naming_it():
    """A keyword that is not in the pocketsphinx dictionary fails load() with its name."""
    ex = AudioCueExtractor(AudioCueConfig(help_detector='keyphrase', keywords=('help', 'xqzzyv'),
                                          vad_backend='energy'))
    with pytest.raises(ConfigError, match='xqzzyv'):
        ex.load()


def test_removed_audio_node_scream_threshold_is_refused_naming_the_fusion_one():
    """audio_node's unused scream_threshold is gone: an old YAML key is refused, pointing at
    distress_node's scream_threshold, which the fusion does read."""
    from emotion_ros.fusion.distress import FusionConfig
    from emotion_ros.config.nodes import AudioNodeConfig, DistressNodeConfig
    from emotion_ros.config.schema import flatten
    with pytest.raises(ConfigError, match="distress_node's scream_threshold"):
        from_mapping(AudioNodeConfig, {'scream_threshold': 0.5})
    assert 'scream_threshold' in flatten(DistressNodeConfig)
    # The fusion built from distress_node's parameters reads it: a scream cue counts as
    # evidence exactly when its score is at or above the configured threshold.
    from emotion_ros.fusion.distress import DistressFusion
    from emotion_ros.types import AudioCueResult
    for threshold in (0.3, 0.5, 0.7, 0.9):
        node_config = from_mapping(DistressNodeConfig, {'scream_threshold': threshold})
        assert node_config.fusion == FusionConfig(scream_threshold=threshold)
        for score in (0.25, 0.45, 0.55, 0.69, 0.75, 0.95):
            fusion = DistressFusion(node_config.fusion)
            alerts = fusion.update_audio(AudioCueResult(
                stamp=1.0, window_s=1.0, speech_probability=0.0, voice_active=False,
                help_detected=False, keywords=[], keyword_confidence=0.0, scream_score=score,
                loudness_dbfs=-20.0, pitch_hz=0.0, spectral_centroid_hz=1000.0,
                vocal_arousal=float('nan')), 'mic')
            heard = any('scream' in r for a in alerts for r in a.reasons)
            # An alert needs WATCH: scream_weight 0.8 * score >= watch_threshold 0.45.
            assert heard == (score >= threshold and 0.8 * score >= 0.45), (threshold, score)


def test_push_before_load_is_a_clear_error():
    """push() before load() raises ModelLoadError instead of failing deep inside a model."""
    ex = AudioCueExtractor(AudioCueConfig(vad_backend='energy', keyword_spotting=False))
    with pytest.raises(ModelLoadError, match='load'):
        ex.push(silence(0.1), RATE, 0.0)


@pytest.mark.parametrize('f0', [85.0, 140.0, 260.0, 520.0, 990.0])
def test_yin_pitch_of_harmonic_tones_and_no_pitch_in_noise(f0):
    """YIN finds the fundamental of harmonic tones within 1 % and calls white noise unvoiced."""
    analyzer = FrameAnalyzer()
    tone = harmonic_tone(f0, 0.5, 0.3)
    frames = np.lib.stride_tricks.sliding_window_view(tone, FRAME_LENGTH)[::FRAME_HOP]
    feats = analyzer.analyze(frames)
    assert (feats.pitch_hz > 0).all()
    assert abs(np.median(feats.pitch_hz) / f0 - 1) < 0.01
    noise = np.random.default_rng(int(f0)).normal(0, 0.1, 8000)
    frames = np.lib.stride_tricks.sliding_window_view(noise, FRAME_LENGTH)[::FRAME_HOP]
    feats = analyzer.analyze(frames)
    assert (feats.pitch_hz == 0).all() and feats.flatness.mean() > 0.4


def test_call_for_help_is_reported_once_when_its_utterance_closes(extractor):
    """'Help! Somebody help me!' after 2 s of silence: each utterance heard as a call for help
    is reported by exactly one window, the first ending after the utterance closed (VAD
    hangover), with its phrase; the silent windows before it report nothing."""
    speech = set_rms_dbfs(speak('Help! Somebody help me!', 'en', 140), -20.0)
    audio = np.concatenate([silence(2.0), speech, silence(3.0)])
    results = run(extractor, audio)
    transcripts = extractor.pop_transcripts()
    assert [round(r.stamp - 100.0, 3) for r in results[:3]] == [1.5, 2.0, 2.5]
    helps = [t for t in transcripts if t.help_detected]
    assert helps, transcripts
    assert abs(transcripts[0].start - 102.0) < 0.1
    assert all(2.0 <= t.start - 100.0 < t.end - 100.0 <= 2.0 + speech.size / RATE + 0.05
               for t in transcripts)
    helped = [r for r in results if r.help_detected]
    assert len(helped) == len(helps)
    hangover, hop = extractor.cfg.utterance_hangover_s, extractor.cfg.hop_s
    for t, r in zip(helps, helped):
        assert t.end + hangover <= r.stamp <= t.end + hangover + hop + 0.07, (t, r.stamp)
        assert r.keywords == [t.help_phrase]
    before = [r for r in results if r.stamp - 100.0 <= 2.0]
    assert before and not any(r.voice_active or r.help_detected for r in before)


def test_other_speech_noise_and_silence_are_not_a_call_for_help(extractor, tmp_path):
    """Ordinary speech is voice but no call for help; noise and silence are neither."""
    speech = espeak(tmp_path, 'The weather is nice today')
    results = run(extractor, np.concatenate([silence(1.0), speech, silence(1.0)]))
    assert any(r.voice_active for r in results)
    assert not any(r.help_detected for r in results)
    noise = np.random.default_rng(3).normal(0, 0.1, 8 * RATE).astype(np.float32)
    for audio in (noise, silence(5.0)):
        results = run(extractor, audio)
        assert results and not any(r.help_detected or r.voice_active for r in results)
        assert max(r.speech_probability for r in results) < 0.5


def test_results_do_not_depend_on_chunking(extractor, tmp_path):
    """Pushing a recording in one call or in random small chunks gives identical results."""
    speech = set_rms_dbfs(speak('Help! Somebody help me!', 'en', 140), -20.0)
    audio = np.concatenate([silence(0.7), speech, 0.05 * harmonic_tone(300, 1.0, 1.0),
                            silence(2.0)])
    whole = run(extractor, audio)
    assert len(whole) >= 6 and any(r.help_detected for r in whole)
    for chunk, seed in ((400, 1), (5000, 2)):
        assert [key(r) for r in run(extractor, audio, chunk=chunk, seed=seed)] == \
            [key(r) for r in whole]


def test_other_input_rates_are_resampled(extractor, tmp_path):
    """The same call for help pushed at 48 kHz in 100 ms chunks is spotted too."""
    audio = np.concatenate([silence(1.0), espeak(tmp_path, 'Help! Help me!'), silence(2.0)])
    audio48 = resample(audio, RATE, 48000)
    extractor.reset()
    results = []
    for i in range(0, audio48.size, 4800):
        results += extractor.push(audio48[i:i + 4800], 48000, 5.0 + i / 48000)
    assert any(r.help_detected for r in results)
    assert abs(results[0].stamp - 6.5) < 1e-9


def test_scream_tone_scores_high_quiet_speech_low_silence_zero(extractor, tmp_path):
    """A loud high harmonic tone with vibrato scores as a scream with high arousal; quiet
    speech does not; silence has no pitch and NaN arousal."""
    scream = harmonic_tone(650, 3.0, 0.7, harmonics=12, vibrato_hz=6, vibrato_depth=0.03,
                           decay=0.3)
    res = run(extractor, scream)
    assert all(r.scream_score > 0.7 for r in res), [r.scream_score for r in res]
    assert all(abs(r.pitch_hz / 650 - 1) < 0.05 for r in res)
    assert all(r.vocal_arousal > 7.0 and r.loudness_dbfs > -20 for r in res)
    assert all(r.spectral_centroid_hz > 1200 for r in res)

    speech = espeak(tmp_path, 'I am fine, thank you. The weather is nice today.')
    speech *= 10 ** (-35 / 20) / np.sqrt(np.mean(speech ** 2))  # about -35 dBFS
    res = run(extractor, np.concatenate([speech, silence(0.5)]))
    voiced = [r for r in res if r.pitch_hz > 0]
    assert voiced and all(r.scream_score < 0.1 for r in res)
    assert all(r.vocal_arousal < 5.0 for r in voiced)
    assert all(60 < r.pitch_hz < 300 for r in voiced)

    res = run(extractor, silence(3.0))
    for r in res:
        assert r.scream_score == 0.0 and r.pitch_hz == 0.0 and math.isnan(r.vocal_arousal)
        assert r.loudness_dbfs == -120.0 and not r.voice_active


def test_loud_noise_is_not_a_scream(extractor):
    """Loud white noise (no pitch) scores zero as a scream."""
    noise = np.random.default_rng(5).normal(0, 0.3, 3 * RATE).clip(-1, 1).astype(np.float32)
    res = run(extractor, noise)
    assert all(r.scream_score == 0.0 and r.loudness_dbfs > -15 for r in res)


def test_nan_chunk_raises_and_leaves_the_stream_unchanged(extractor):
    """A NaN chunk raises InputError('audio_nonfinite'); the next good chunks continue the
    stream exactly as if the bad chunk had never come."""
    tone = harmonic_tone(200, 3.0, 0.2)
    reference = run(extractor, tone, chunk=3000, seed=4)
    extractor.reset()
    got, i, rng = [], 0, np.random.default_rng(4)
    while i < tone.size:
        n = int(rng.integers(1, 3000))
        if i == 0 or len(got) == 2:
            bad = tone[i:i + 100].copy()
            bad[3] = np.nan
            with pytest.raises(InputError) as info:
                extractor.push(bad, RATE, 100.0 + i / RATE)
            assert info.value.kind == 'audio_nonfinite'
            with pytest.raises(InputError):
                extractor.push(tone[i:i + 10], RATE, math.inf)
        got += extractor.push(tone[i:i + n], RATE, 100.0 + i / RATE)
        i += n
    assert [key(r) for r in got] == [key(r) for r in reference]


def test_gaps_jumps_back_and_rate_changes_restart_the_stream(extractor):
    """A gap, a stamp jumping back and a new rate restart the stream; stamps follow the new
    origin and nothing crashes."""
    extractor.reset()
    restarts = extractor.stream_restarts
    tone = harmonic_tone(220, 2.0, 0.2)
    first = extractor.push(tone, RATE, 10.0)
    assert [round(r.stamp, 3) for r in first] == [11.5, 12.0]
    after_gap = extractor.push(tone, RATE, 20.0)  # 8 s gap
    assert [round(r.stamp, 3) for r in after_gap] == [21.5, 22.0]
    back = extractor.push(tone, RATE, 15.0)  # jumps back in time
    assert [round(r.stamp, 3) for r in back] == [16.5, 17.0]
    # At 8 kHz the resampler holds back 12 input samples, so the window ending
    # at 19.0 completes with the next chunk.
    rate_change = extractor.push(resample(tone, RATE, 8000), 8000, 17.0)
    assert [round(r.stamp, 3) for r in rate_change] == [18.5]
    assert extractor.stream_restarts - restarts == 3
    # Small jitter of the stamps (10 ms) is not a gap.
    jitter = extractor.push(resample(tone, RATE, 8000)[:1600], 8000, 19.01)
    assert extractor.stream_restarts - restarts == 3
    assert [round(r.stamp, 3) for r in jitter] == [19.0]
    for bad_rate in (0, -8000, 10 ** 7, 8000.5):
        with pytest.raises(InputError) as info:
            extractor.push(tone[:100], bad_rate, 19.3)
        assert info.value.kind == 'audio_rate'
    with pytest.raises(InputError) as info:
        extractor.push((tone[:100] * 32767).astype(np.int16), 8000, 19.3)
    assert info.value.kind == 'audio_shape' and 'int16' in str(info.value)


def test_memory_stays_bounded_over_a_long_stream():
    """A minute of audio in 20 ms chunks keeps the ring buffer and histories bounded."""
    ex = AudioCueExtractor(AudioCueConfig(vad_backend='energy', keyword_spotting=False))
    ex.load()
    tone = harmonic_tone(180, 1.0, 0.1)
    peak, count = 0.0, 0
    for second in range(60):
        for i in range(0, RATE, 320):
            count += len(ex.push(tone[i:i + 320], RATE, second + i / RATE))
            peak = max(peak, ex.buffered_seconds)
    assert count == 118  # one result per 0.5 s hop once the first 1.5 s window is full
    assert peak <= ex.cfg.window_s + 0.1
    assert len(ex._vad_probs) < 200 and len(ex._feats) <= 4


def test_energy_vad_backend_separates_speech_from_silence_and_noise(tmp_path):
    """The dependency-free VAD marks speech active and silence/steady noise inactive."""
    ex = AudioCueExtractor(AudioCueConfig(vad_backend='energy', keyword_spotting=False))
    ex.load()
    noise = np.random.default_rng(9).normal(0, 0.01, 3 * RATE).astype(np.float32)
    speech = espeak(tmp_path, 'The weather is nice today')
    res = run(ex, np.concatenate([noise, noise[:speech.size] + speech]))
    quiet = [r for r in res if r.stamp - 100.0 <= 3.0]
    loud = [r for r in res if 3.5 <= r.stamp - 100.0 <= 3.0 + speech.size / RATE]
    assert quiet and not any(r.voice_active for r in quiet[1:])
    assert loud and all(r.voice_active for r in loud)
    assert not any(r.help_detected for r in res)
