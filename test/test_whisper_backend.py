"""The whisper call-for-help backend with a tiny Whisper built from a config (offline).

The model is random (its text is gibberish): these tests check the plumbing, loading
from a folder, language choice, transcripts through a real audio_node with the right
stamps. Accuracy needs real weights (docs/audio.md says how to get them).
"""

import os

import numpy as np
import pytest

from conftest import wait_until
from rosgraph import publish_audio
from emotion_ros.audio.synth import build_stream, set_rms_dbfs, speak
from emotion_ros.errors import ConfigError, ModelLoadError

SPECIAL = ['<|endoftext|>', '<|startoftranscript|>', '<|en|>', '<|es|>', '<|de|>',
           '<|transcribe|>', '<|translate|>', '<|notimestamps|>']


def tiny_whisper(folder) -> str:
    """Save a tiny random Whisper model and a processor (BPE tokenizer trained here)."""
    from tokenizers import decoders, models, pre_tokenizers, Tokenizer, trainers
    from transformers import (WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor,
                              WhisperTokenizerFast)
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(['help me somebody help', 'can anyone hear me',
                             'ayuda por favor', 'the weather is nice today'] * 10, trainer)
    tok.save(os.path.join(folder, 'tokenizer.json'))
    fast = WhisperTokenizerFast(tokenizer_file=os.path.join(folder, 'tokenizer.json'),
                                unk_token='<|endoftext|>', bos_token='<|endoftext|>',
                                eos_token='<|endoftext|>', pad_token='<|endoftext|>')
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(),
                     tokenizer=fast).save_pretrained(folder)
    eot = fast.convert_tokens_to_ids('<|endoftext|>')
    cfg = WhisperConfig(vocab_size=len(fast), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=64, decoder_ffn_dim=64, max_target_positions=64,
                        decoder_start_token_id=fast.convert_tokens_to_ids(
                            '<|startoftranscript|>'),
                        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot)
    WhisperForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    """A tiny Whisper saved to a temporary folder."""
    return tiny_whisper(tmp_path_factory.mktemp('tiny_whisper'))


def test_tiny_whisper_loads_from_a_folder_and_decodes(model_dir):
    """WhisperDetector loads processor + model from a folder, picks a configured language
    and returns a transcript; bad languages and models fail naming what is wrong."""
    from emotion_ros.audio.whisper import WhisperDetector
    det = WhisperDetector(model_dir, 'auto', ['en', 'es'], ['en:help', 'es:ayuda'])
    det.load()
    audio = set_rms_dbfs(speak('Somebody help me', 'en-gb'), -20.0)
    out = det.decode(audio)
    assert out.language in ('en', 'es') and 0.0 <= out.confidence <= 1.0
    assert isinstance(out.text, str) and det.decode(audio) == out   # greedy: deterministic
    det.close()
    with pytest.raises(ConfigError, match="'sv'"):
        WhisperDetector(model_dir, 'cpu', ['en', 'sv'], ['en:help', 'sv:hjälp']).load()
    with pytest.raises(ModelLoadError, match='no_such_model'):
        WhisperDetector(str(model_dir) + '/no_such_model', 'cpu', ['en'], ['en:help']).load()


def test_whisper_backend_through_a_real_audio_node(model_dir, start_node, ros_node):
    """audio_node with help_detector whisper (tiny model) publishes one Transcript per
    utterance, stamped at the utterance's start, naming the detector and the model."""
    from emotion_ros_msgs.msg import AudioFrame, Transcript

    from emotion_ros.ros import conversions
    node = start_node('audio_node', '--ros-args', '-p', 'vad_backend:=energy',
                      '-p', 'help_detector:=whisper', '-p', 'whisper_engine:=transformers',
                      '-p', f'whisper_model:={model_dir}',
                      '-p', 'whisper_device:=cpu', '-p', 'whisper_languages:=[en]',
                      '-p', 'detector_timeout_s:=120.0')
    drv = ros_node('whisper_driver')
    transcripts = []
    drv.create_subscription(Transcript, 'transcripts', transcripts.append, 20)
    pub = drv.create_publisher(AudioFrame, 'audio', 200)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 90, ros_node.spin), \
        node.output()[-3000:]
    clip = set_rms_dbfs(speak('Somebody help me', 'en-gb'), -20.0)
    calm = set_rms_dbfs(speak('The weather is nice today', 'en+f3'), -20.0)
    audio, places = build_stream([(clip, 'call', 'a'), (calm, 'calm', 'b')], [1.2, 1.5])
    t0 = 500.0
    publish_audio(ros_node.spin, pub, audio, t0, 'mic_whisper')
    assert wait_until(lambda: len(transcripts) >= 2, 120, ros_node.spin), \
        node.output()[-3000:]
    starts = [conversions.stamp_to_sec(t.header.stamp) - t0 for t in transcripts]
    assert len(transcripts) == 2
    assert all(abs(s - p.start) < 0.2 for s, p in zip(starts, places)), (starts, places)
    for t, p in zip(transcripts, places):
        end = conversions.stamp_to_sec(t.end) - t0
        assert p.start < end <= p.end + 0.1
        assert t.detector == 'whisper' and t.model_id == model_dir and t.language == 'en'
        assert t.header.frame_id == 'mic_whisper'
    assert np.isfinite([t.confidence for t in transcripts]).all()
