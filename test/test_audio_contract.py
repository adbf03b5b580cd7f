"""The audio part of the model contract: training and the robot give the audio encoder the same
samples (one reader, one band-limited resampler), and bundles trained with another audio
preprocessing are refused naming the change."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from emotion_ros.audio.pcm import read_wav, SAMPLE_RATE, write_wav  # noqa: E402
from emotion_ros.audio.preprocess import AUDIO_PREPROCESSING, to_model_rate  # noqa: E402
from emotion_ros.errors import BundleMismatchError  # noqa: E402
from emotion_ros.llm import bundle, spec  # noqa: E402
from emotion_ros.llm.multimodal import collate_av, EncodedAV, ModalityLayout  # noqa: E402
from emotion_ros.perception.av_context import PersonAVContext  # noqa: E402

BOX = (10.0, 10.0, 90.0, 190.0)
HIGH_HZ = 11000.0  # above 8 kHz: at 16 kHz it would alias to 5 kHz


def _clip(path, rate, channels, seed, seconds=5.0):
    """A WAV clip: a 440 Hz voice-like tone, a loud 11 kHz tone (when the rate carries it),
    noise; channels differ a little."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)
    if rate > 2 * HIGH_HZ:
        mono += 0.3 * np.sin(2 * np.pi * HIGH_HZ * t)
    samples = np.stack([mono * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    write_wav(path, samples, rate)


def _encoder_audio(items):
    """The audio tensor the backend and the training loop build for these inputs."""
    encoded = [EncodedAV([1, 2, 3], [-100, -100, -100], 2) for _ in items]
    layout = ModalityLayout(image_tokens=4)
    batch = collate_av(items, encoded, 0, None, layout)
    return batch['audio'], batch['audio_lengths']


def _training_inputs(path):
    """What training's data loader decodes for a record with this audio file."""
    from training.av.data import AVRecord, load_inputs
    record = AVRecord(clip_id='c', split='train', dataset='test', audio_path=str(path))
    return load_inputs(record, 'box', 8, use_transcript=False)


def _robot_inputs(path, seed):
    """What the robot's perception path gives the backend when a microphone at the file's rate
    sends the same audio as AudioFrame messages of random sizes (as perception_node does)."""
    from std_msgs.msg import Header

    from emotion_ros.ros import conversions
    samples, rate = read_wav(path)
    ctx = PersonAVContext()
    rng = np.random.default_rng(seed)
    start, i = 100.0, 0
    while i < samples.shape[0]:
        n = int(rng.integers(1, rate // 5))
        chunk = samples[i:i + n]
        header = Header()
        header.stamp = conversions.sec_to_stamp(start + i / rate)
        msg = conversions.samples_to_audio_frame(chunk, rate, 'S16LE', header)
        # perception_node._on_audio, line for line:
        got = conversions.audio_frame_to_samples(msg)
        end = conversions.stamp_to_sec(msg.header.stamp) + got.shape[0] / msg.sample_rate
        ctx.feed_audio(got, end, int(msg.sample_rate))
        i += n
    stamp = start + samples.shape[0] / rate
    person = ctx.inputs_for([(1, BOX)], stamp)[0]
    alone = ctx.audio_only(stamp)
    return person, alone


@pytest.mark.parametrize('rate', [48000, 44100, 32000, 22050, 16000, 8000])
@pytest.mark.parametrize('channels', [1, 2])
def test_training_and_robot_give_the_encoder_identical_audio(tmp_path, rate, channels):
    """For clips at microphone rates (48 kHz with energy above 8 kHz, 44.1 kHz, ... 8 kHz),
    mono or stereo, cut into random message sizes (3 chunkings each), the audio tensor the
    audio-visual backend builds on the robot equals, sample for sample, the one training
    builds from the file; and the 48/44.1/32 kHz clips' 11 kHz tone is filtered out, not
    folded down to 5 kHz."""
    path = tmp_path / 'clip.wav'
    _clip(path, rate, channels, seed=rate + channels)
    trained = _training_inputs(path)
    want, want_len = _encoder_audio([trained])
    assert want_len.item() == int(4.0 * SAMPLE_RATE)
    for seed in range(3):
        person, alone = _robot_inputs(path, seed)
        for inputs in (person, alone):
            got, got_len = _encoder_audio([inputs])
            assert torch.equal(got_len, want_len)
            assert torch.equal(got, want), (rate, channels, seed)
    if rate > 2 * HIGH_HZ:
        spectrum = np.abs(np.fft.rfft(trained.audio[-SAMPLE_RATE:] * np.hanning(SAMPLE_RATE)))
        freqs = np.fft.rfftfreq(SAMPLE_RATE, 1.0 / SAMPLE_RATE)
        voice = spectrum[np.abs(freqs - 440) < 5].max()
        folded = spectrum[np.abs(freqs - (SAMPLE_RATE - HIGH_HZ)) < 5].max()
        assert 20 * np.log10(folded / voice) < -45  # the noise floor is about -57 dB here


def test_the_old_linear_resampling_would_have_differed():
    """The property above is not vacuous: linear interpolation (the robot's old path) of a
    48 kHz clip with an 11 kHz tone gives the encoder different audio, with the alias."""
    rate = 48000
    t = np.arange(rate * 2) / rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * HIGH_HZ * t))
    x = x.astype(np.float32)
    n = int(round(x.size * SAMPLE_RATE / rate))
    linear = np.interp(np.linspace(0, x.size - 1, n), np.arange(x.size), x)
    ours = to_model_rate(x, rate)
    freqs = np.fft.rfftfreq(SAMPLE_RATE, 1.0 / SAMPLE_RATE)
    at_alias = np.abs(freqs - 5000) < 5

    def alias_db(y):
        spectrum = np.abs(np.fft.rfft(y[SAMPLE_RATE // 2:SAMPLE_RATE // 2 + SAMPLE_RATE]
                                      * np.hanning(SAMPLE_RATE)))
        return 20 * np.log10(spectrum[at_alias].max() / spectrum[np.abs(freqs - 440) < 5].max())
    assert alias_db(linear) > -10 and alias_db(ours) < -60


def _av_bundle(tmp_path):
    from test_bundle import _info, _writer
    path = str(tmp_path / 'av')
    layout = ModalityLayout(image_tokens=4).to_dict()
    bundle.save_bundle(path, _info(model_kind='audio_visual', modalities=layout), _writer())
    return path


def _rewrite_contract(path, edit):
    manifest_path = os.path.join(path, 'manifest.json')
    with open(manifest_path) as f:
        manifest = json.load(f)
    edit(manifest['contract'])
    manifest['contract_hash'] = spec.contract_hash(manifest['contract'])
    with open(manifest_path, 'w') as f:
        json.dump(manifest, f)


def test_audio_models_record_the_preprocessing_and_llava_models_do_not(tmp_path):
    """An audio-visual bundle's contract holds the audio preprocessing (rate, resampler) and
    verifies; a LLaVA bundle's contract has no audio part (its hash is unchanged by it)."""
    from test_bundle import _info, _writer
    manifest = bundle.verify_bundle(_av_bundle(tmp_path))
    assert manifest['contract']['audio_preprocessing'] == json.loads(
        json.dumps(AUDIO_PREPROCESSING))
    assert manifest['contract']['audio_preprocessing']['sample_rate'] == SAMPLE_RATE
    llava = bundle.save_bundle(str(tmp_path / 'llava'), _info(), _writer())
    assert 'audio_preprocessing' not in llava['contract']


@pytest.mark.parametrize('old', ['unrecorded', 'resample_poly', 'rate'])
def test_bundle_with_another_audio_preprocessing_is_refused_naming_it(tmp_path, old):
    """A bundle made before the preprocessing was in the contract, or with another resampler
    or rate, is refused; the message names the audio preprocessing, what the bundle was
    trained with and what this code gives the encoder."""
    path = _av_bundle(tmp_path)

    def edit(contract):
        if old == 'unrecorded':
            del contract['audio_preprocessing']
        elif old == 'resample_poly':
            contract['audio_preprocessing']['resampler'] = {'method': 'scipy resample_poly'}
        else:
            contract['audio_preprocessing']['sample_rate'] = 22050
    _rewrite_contract(path, edit)
    with pytest.raises(BundleMismatchError) as err:
        bundle.verify_bundle(path, check_files=False)
    message = str(err.value)
    assert 'audio_preprocessing' in message and 'audio preprocessing changed' in message
    assert AUDIO_PREPROCESSING['resampler']['method'] in message
    expected = {'unrecorded': 'linear interpolation without anti-aliasing',
                'resample_poly': 'scipy resample_poly', 'rate': '22050 Hz'}[old]
    assert expected in message
