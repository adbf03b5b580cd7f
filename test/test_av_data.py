"""Audio-visual dataset readers: small files written in each layout (RAVDESS, CREMA-D, DFEW,
MER2023, MERR, our JSONL) give the right counts per split and label through `python -m
training stats --json`, and clips decode into frames and 16 kHz audio (OpenCV, WAV, ffmpeg)."""

import json
import os
import shutil
import subprocess
import wave

import numpy as np
import pytest

cv2 = pytest.importorskip('cv2')

RATE = 16000


def _tone(freq, seconds=0.5, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_wav(path, audio, rate=RATE, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pcm = (np.clip(audio, -1, 1) * 32767).astype('<i2')
    if channels == 2:
        pcm = np.repeat(pcm[:, None], 2, axis=1)
    with wave.open(path, 'wb') as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def _write_video(path, frames=6, colour=(0, 0, 255), size=(48, 40), audio=None):
    """An MJPG .avi (OpenCV); with audio, muxed into .mp4/.flv by ffmpeg."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    silent = path if audio is None else path + '.avi'
    writer = cv2.VideoWriter(silent, cv2.VideoWriter_fourcc(*'MJPG'), 10, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:] = colour
        frame[:, :i * 4 + 4] = 255  # a bar that grows: frames differ
        writer.write(frame)
    writer.release()
    if audio is not None:
        wav = path + '.wav'
        _write_wav(wav, audio)
        codec = 'flv' if path.endswith('.flv') else 'mpeg4'
        subprocess.run(['ffmpeg', '-nostdin', '-v', 'error', '-y', '-i', silent, '-i', wav,
                        '-c:v', codec, '-c:a', 'aac', '-shortest', path], check=True)
        os.remove(silent)
        os.remove(wav)


needs_ffmpeg = pytest.mark.skipif(shutil.which('ffmpeg') is None,
                                  reason='ffmpeg is installed by tools/setup_env.sh')


def _stats(root, *extra):
    from training.__main__ import main
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(['stats', str(root), '--json', *extra])
    return code, json.loads(buf.getvalue())


def _dominant_hz(audio):
    spectrum = np.abs(np.fft.rfft(audio))
    return np.argmax(spectrum) * RATE / len(audio)


@needs_ffmpeg
def test_ravdess_file_names_split_by_actor(tmp_path):
    """RAVDESS names give emotion (8 classes), actor split 1-20/21-22/23-24, AV or audio-only."""
    root = tmp_path / 'ravdess'
    expected = {'train': {}, 'val': {}, 'test': {}}
    classes = ('neutral', 'calm', 'happy', 'sad', 'angry', 'fear', 'disgust', 'surprise')
    for actor in (1, 7, 21, 23, 24):
        split = 'train' if actor <= 20 else ('val' if actor <= 22 else 'test')
        for emotion in (1, 3, 5, 8):
            name = f'01-01-{emotion:02d}-01-01-01-{actor:02d}'
            if actor == 7 and emotion == 8:  # this one only as audio (modality 03)
                _write_wav(str(root / f'Actor_{actor:02d}' / f'03{name[2:]}.wav'), _tone(300))
            else:
                _write_video(str(root / f'Actor_{actor:02d}' / f'{name}.mp4'),
                             audio=_tone(200 + 50 * emotion))
            cls = classes[emotion - 1]
            expected[split][cls] = expected[split].get(cls, 0) + 1
    code, stats = _stats(root)
    assert code == 0 and stats['format'] == 'ravdess'
    for split, counts in expected.items():
        assert stats['splits'][split]['labels'] == dict(sorted(counts.items()))
        assert stats['splits'][split]['clips'] == sum(counts.values())
    assert stats['splits']['train']['modalities']['audio'] == 8
    assert stats['splits']['train']['modalities']['video'] == 7  # one audio-only clip
    from training.av.data import load_av_records, load_inputs
    records = load_av_records(str(root), 'test')
    inputs = load_inputs(records[0], 'crop', 4)
    assert len(inputs.frames) == 4 and inputs.image.dtype == np.uint8
    assert abs(len(inputs.audio) - RATE * 0.5) < RATE * 0.1  # 16 kHz, about the clip length
    assert abs(_dominant_hz(inputs.audio) - (200 + 50 * 1)) < 10  # the tone muxed in


@needs_ffmpeg
def test_cremad_names_and_flv_audio(tmp_path):
    """CREMA-D names give 6 classes; actor last digit 0 = test, 9 = val; FLV audio decodes."""
    root = tmp_path / 'crema'
    codes = {'ANG': 'angry', 'DIS': 'disgust', 'FEA': 'fear', 'HAP': 'happy', 'NEU': 'neutral',
             'SAD': 'sad'}
    expected = {'train': {}, 'val': {}, 'test': {}}
    for actor in (1001, 1009, 1010, 1019, 1020):
        split = 'test' if actor % 10 == 0 else ('val' if actor % 10 == 9 else 'train')
        for code in ('ANG', 'HAP', 'SAD'):
            stem = f'{actor}_IEO_{code}_HI'
            _write_wav(str(root / 'AudioWAV' / f'{stem}.wav'), _tone(440), channels=2)
            expected[split][codes[code]] = expected[split].get(codes[code], 0) + 1
        _write_video(str(root / 'VideoFlash' / f'{actor}_IEO_ANG_HI.flv'), audio=_tone(440))
    code, stats = _stats(root)
    assert code == 0 and stats['format'] == 'cremad'
    for split, counts in expected.items():
        assert stats['splits'][split]['labels'] == dict(sorted(counts.items()))
    assert stats['splits']['train']['modalities'] == {'audio': 3, 'image': 1, 'video': 1}
    from training.core.media import read_audio
    audio = read_audio(str(root / 'AudioWAV' / '1001_IEO_ANG_HI.wav'))  # stereo -> mono
    assert abs(_dominant_hz(audio) - 440) < 5


def test_dfew_fold_csvs_and_frame_folders(tmp_path):
    """DFEW fold CSVs (labels 1..7) give train/val/test per fold; frame folders decode."""
    root = tmp_path / 'dfew'
    classes = ('happy', 'sad', 'neutral', 'angry', 'surprise', 'disgust', 'fear')
    for fold in (1, 2):
        for part, n in (('train', 30), ('test', 7)):
            folder = root / 'EmoLabel_DataSplit' / f'{part}(single-labeled)'
            folder.mkdir(parents=True, exist_ok=True)
            rows = [f'{fold * 1000 + (0 if part == "train" else 500) + i},{i % 7 + 1}'
                    for i in range(n)]
            (folder / f'set_{fold}.csv').write_text('video_name,label\n' + '\n'.join(rows))
    frames = root / 'Clip' / 'clip_224x224' / '01000'
    frames.mkdir(parents=True)
    for i in range(12):
        cv2.imwrite(str(frames / f'{i:02d}.jpg'), np.full((24, 24, 3), 20 * i, np.uint8))
    code, stats = _stats(root, '--split', 'train', '--split', 'val', '--split', 'test',
                         '--split', 'fold2_test')
    assert stats['format'] == 'dfew'
    assert stats['splits']['train']['clips'] == 27 and stats['splits']['val']['clips'] == 3
    assert stats['splits']['test']['clips'] == 7 and stats['splits']['fold2_test']['clips'] == 7
    assert stats['splits']['test']['labels'] == {c: 1 for c in sorted(classes)}
    assert code == 1  # clips without media are reported, not hidden
    from training.core.media import read_frames
    got = read_frames(str(frames), 4)
    assert len(got) == 4 and [int(f[0, 0, 0]) for f in got] == [0, 80, 140, 220]


def test_mer2023_label_files_and_transcripts(tmp_path):
    """MER2023-style label CSVs + clips + transcripts: 6 classes, transcript attached."""
    root = tmp_path / 'mer'
    (root / 'video').mkdir(parents=True)
    labels = ['neutral', 'angry', 'happy', 'sad', 'worried', 'surprise']
    for split, n in (('train', 12), ('test', 6)):
        lines = ['name,discrete,valence']
        for i in range(n):
            name = f'{split}_{i:03d}'
            lines.append(f'{name},{labels[i % 6]},0.5')
            _write_video(str(root / 'video' / f'{name}.avi'), frames=3)
        (root / f'{split}_labels.csv').write_text('\n'.join(lines))
    (root / 'transcription.csv').write_text('name,sentence\ntrain_000,I am fine.\n')
    code, stats = _stats(root)
    assert stats['format'] == 'mer2023'
    assert stats['splits']['train']['labels'] == {c: 2 for c in sorted(labels)}
    assert stats['splits']['test']['clips'] == 6
    assert stats['splits']['train']['modalities']['transcript'] == 1
    from training.av.data import load_av_records
    record = load_av_records(str(root), 'train')[0]
    assert record.transcript == 'I am fine.' and record.categories == ()  # neutral
    (root / 'test_labels.csv').write_text('name,discrete\nx,bored\n')
    from emotion_ros.errors import InputError
    with pytest.raises(InputError, match='bored'):
        load_av_records(str(root), 'test')


def test_merr_coarse_and_fine_json(tmp_path):
    """MERR coarse/fine JSON: labels, reasons on fine, every 20th clip held out as *_val."""
    root = tmp_path / 'merr'
    root.mkdir()
    classes = ['neutral', 'happy', 'angry', 'worried', 'surprise', 'sad', 'doubt', 'fear',
               'contempt']
    coarse = {f'sample_{i:05d}': {'pseu_emotion': classes[i % 9]} for i in range(40)}
    fine = {f'sample_{i:05d}': {'emotion': classes[i % 9],
                                'smp_reason_caption': f'Reason {i}.'} for i in range(20)}
    (root / 'MERR_coarse_grained.json').write_text(json.dumps(coarse))
    (root / 'MERR_fine_grained.json').write_text(json.dumps(fine))
    code, stats = _stats(root)
    assert stats['format'] == 'merr'
    assert stats['splits']['coarse']['clips'] == 38 and stats['splits']['coarse_val']['clips'] == 2
    assert stats['splits']['fine']['with_reason'] == 19
    assert sum(stats['splits']['coarse']['labels'].values()) == 38
    from training.av.data import AVSampleSet, load_av_records
    records = load_av_records(str(root), 'fine')
    sample_set = AVSampleSet(records, 'av_emotions_v1', 'merr', with_reasons=True)
    assert sample_set.discrete_index(records[3]) == classes.index(records[3].label)


def test_av_jsonl_and_mixing_with_emotic(tmp_path):
    """Our AV JSONL plus an EMOTIC root in one run: images bring no audio (no audio slot)."""
    from training.av.data import AVSampleSet, load_av_records
    from training.emotic.synthetic import make_synthetic
    from training.av.synthetic import make_synthetic_av
    av_root = tmp_path / 'av'
    make_synthetic_av(str(av_root), {'train': 8, 'val': 4}, seed=3)
    emotic = tmp_path / 'emotic'
    make_synthetic(str(emotic), 6, 3, 3, seed=0)
    code, stats = _stats(av_root)
    assert code == 0 and stats['splits']['train']['labels'] == {
        'angry': 2, 'happy': 2, 'sad': 2, 'surprise': 2}
    records = load_av_records(f'{av_root},emotic:{emotic}', 'train')
    datasets = [r.dataset for r in records]
    assert datasets.count('av_jsonl') == 8 and datasets.count('emotic') >= 6
    samples = AVSampleSet(records, 'av_emotions_v1', 'mer2023')
    image_only = samples[datasets.index('emotic')]
    assert image_only.inputs.present() == ('image',) and image_only.discrete == -1
    both = samples[0]
    assert both.inputs.present() == ('image', 'audio') and both.discrete >= 0
    assert abs(len(both.inputs.audio) - RATE) < 10


def test_av_training_refuses_emotic_roots_past_the_skip_threshold(tmp_path):
    """An EMOTIC root in an audio-visual run is held to the LLaVA path's rule: past
    max_skip_fraction (5 % by default) of skipped persons the load fails naming the reasons;
    at a threshold that admits them the run's data report carries the skip counts."""
    from training.av.data import load_av_records, load_av_split
    from training.av.task import load_data
    from training.av.synthetic import make_synthetic_av
    from training.core.config import TrainConfig
    from training.emotic.dataset import load_dataset
    from training.emotic.synthetic import make_synthetic
    from emotion_ros.errors import InputError
    av_root = tmp_path / 'av'
    make_synthetic_av(str(av_root), {'train': 8, 'val': 4}, seed=3)
    emotic = tmp_path / 'emotic'
    make_synthetic(str(emotic), 12, 3, 3, seed=0)
    roots = f'{av_root},emotic:{emotic}'
    clean = load_av_records(roots, 'train')  # nothing skipped: the default threshold passes
    first = next(r for r in clean if r.dataset == 'emotic').image_path
    os.remove(first)  # the persons of one image of 12 are now skipped (> 5 %)
    reference, report = load_dataset(str(emotic), 'train', max_skip_fraction=1.0)
    lost = report.counts['missing_image']
    assert lost >= 1 and report.fraction > 0.05
    for call in (lambda: load_av_records(roots, 'train'),
                 lambda: load_av_split(roots, 'train', 0.05),
                 lambda: load_data(TrainConfig(data_root=roots, train_split='train',
                                               eval_split='val', max_skip_fraction=0.05))):
        with pytest.raises(InputError, match='missing_image') as err:
            call()
        assert err.value.kind == 'dataset_skips'
    records, skips = load_av_split(roots, 'train', 0.5)
    assert skips[str(emotic)]['skipped'] == {'missing_image': lost}
    assert skips[str(emotic)]['persons_used'] == len(reference)
    assert sum(r.dataset == 'emotic' for r in records) == len(reference)
    _, _, data_report = load_data(TrainConfig(data_root=roots, train_split='train',
                                              eval_split='val', max_skip_fraction=0.5))
    assert data_report['train']['emotic_skips'][str(emotic)]['skipped'] == {
        'missing_image': lost}
