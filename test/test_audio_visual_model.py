"""The audio-visual model's contract: one placeholder convention, missing modality = no
tokens, the robot backend scores exactly what the training forward scores, explanations
come from the same inputs, the three speech-encoder families load, and a bundle whose
modality layout changed is refused by hash."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('peft')

from emotion_ros.llm import multimodal as mm  # noqa: E402


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    """A tiny LLaVA, a tiny HuBERT, a random audio_visual bundle on them and some clips."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from training.av.synthetic import make_items
    from training.av.tiny import write_random_av_bundle
    from training.core.tiny import save_tiny_audio_encoder, save_tiny_llava
    root = tmp_path_factory.mktemp('avmodel')
    base = save_tiny_llava(str(root / 'base'))
    encoder = save_tiny_audio_encoder(str(root / 'hubert'))
    bundle = write_random_av_bundle(base, encoder, str(root / 'bundle'), seed=3)
    return {'root': root, 'base': base, 'encoder': encoder, 'bundle': bundle,
            'items': make_items(12, 5)}


@pytest.fixture(scope='module')
def backend(parts):
    """The robot's audio_visual backend loaded from the random bundle."""
    from emotion_ros.backends.factory import create_backend
    from emotion_ros.backends.audio_visual import AudioVisualOptions
    be = create_backend('audio_visual', AudioVisualOptions(bundle_path=parts['bundle'],
                                                           device='cpu', max_batch=4))
    be.load()
    yield be
    be.close()


def _tokenizer(backend):
    return backend._processor.tokenizer


def test_missing_modality_gets_no_tokens_not_zeros(backend):
    """Without audio the prompt has no Voice segment and no audio slot; zeros are not absence."""
    layout = backend.layout
    counts = {'image': layout.image_tokens, 'video': layout.video_tokens,
              'audio': layout.audio_tokens}
    tok = _tokenizer(backend)
    everything = ('image', 'video', 'audio', 'transcript')
    for present in (('image', 'audio'), ('image',), ('audio',), everything):
        prompt = mm.render_av_prompt('llava-1.5', 'Q?', present, 'hello there')
        ids = mm.encode_av(tok, 'llava-1.5', prompt, counts).input_ids
        for name, sentinel in mm.SENTINELS.items():
            assert ids.count(sentinel) == (counts[name] if name in present else 0)
        assert ('Voice:' in prompt) == ('audio' in present)
        assert ('hello there' in prompt) == ('transcript' in present)
    # Silence is audio (its tokens are there); None is absence.
    silent = mm.AVInputs(image=np.zeros((32, 32, 3), np.uint8), audio=np.zeros(16000, np.float32))
    assert silent.present() == ('image', 'audio')
    assert silent.without('audio').present() == ('image',)
    with pytest.raises(Exception, match='at least one'):
        mm.render_av_prompt('llava-1.5', 'Q?', ())


def test_slots_and_features_must_match(backend):
    """A prompt with audio slots but no audio (or the reverse) is an error, never a zero fill."""
    batch = backend._batch([mm.AVInputs(image=np.zeros((32, 32, 3), np.uint8),
                                        audio=np.ones(8000, np.float32) * 0.1)],
                           'av_emotions_v1', 'score')
    broken = dict(batch)
    broken['audio'] = batch['audio'][:0]
    with pytest.raises(Exception, match='audio slots but no audio'):
        backend._model.embed(broken)


def test_backend_scores_equal_the_training_forward(parts, backend):
    """Robot scoring (left-padded, prompt + primer) equals training's forward with answers."""
    from training.av.data import AVSample
    from training.av.model import AVCollator
    from emotion_ros.llm.contract import format_answer, PROMPTS
    items = parts['items']
    inputs = []
    for k, it in enumerate(items):
        x = mm.AVInputs(image=it['image'], audio=it['audio'][:8000 + 500 * k])
        if k % 3 == 1:
            x = x.without('audio')
        if k % 3 == 2:
            x = mm.AVInputs(image=it['image'], audio=it['audio'], transcript='I am fine',
                            frames=[it['image'], it['image'][::-1]])
        inputs.append(x)
    served = backend.score_inputs(inputs)
    collator = AVCollator(backend._processor, 'llava-1.5', backend.layout, 'av_emotions_v1', 0)
    samples = [AVSample(inputs=x, prompt=PROMPTS['av_emotions_v1'].question,
                        answer=format_answer(['Fear', 'Pain']), labels_26=np.zeros(26, np.float32),
                        vad=(5.0, 5.0, 5.0), discrete=0) for x in inputs]
    batch = collator(samples)
    with torch.no_grad():
        out = backend._model(**batch)
    assert np.allclose(out['category_logits'].sigmoid().numpy(), served['scores'], atol=1e-5)
    assert np.allclose(out['vad'].numpy(), served['vad'], atol=1e-4)
    assert np.allclose(out['discrete_logits'].softmax(-1).numpy(), served['discrete'],
                       atol=1e-5)
    assert served['scores'].std() > 0 and len({round(float(s), 4) for s in
                                               served['scores'][:, 0]}) > 1


def test_estimate_uses_the_context_of_each_person(parts, backend):
    """estimate() with set_context gives each box its audio; without, image only (differs)."""
    items = parts['items']
    frame = np.concatenate([items[0]['image'], items[1]['image']], axis=1)
    boxes = [(0, 0, 64, 64), (64, 0, 128, 64)]
    plain = backend.estimate(frame, boxes)
    backend.set_context([mm.AVInputs(audio=items[0]['audio']), mm.AVInputs()])
    heard = backend.estimate(frame, boxes)
    assert not np.allclose(plain[0].scores, heard[0].scores)  # person 0 was heard
    assert np.allclose(plain[1].scores, heard[1].scores, atol=1e-5)  # person 1 was not
    again = backend.estimate(frame, boxes)  # the context applies to one call only
    assert np.allclose(plain[0].scores, again[0].scores, atol=1e-5)


def test_explanation_is_generated_from_the_same_inputs(parts, backend):
    """explain_inputs and explain generate non-empty text through the scoring inputs path."""
    it = parts['items'][0]
    text = backend.explain_inputs(mm.AVInputs(image=it['image'], audio=it['audio']), 6)
    assert text.strip()
    view_only = backend.explain(np.ascontiguousarray(it['image']), (0, 0, 64, 64), 6)
    assert view_only.strip()


@pytest.mark.parametrize('kind', ['hubert', 'wav2vec2', 'wavlm'])
def test_speech_encoder_families_load_and_pool(tmp_path, kind):
    """HuBERT, wav2vec2 and WavLM folders load frozen and pool to the layout's token count."""
    from training.core.tiny import save_tiny_audio_encoder
    encoder = mm.build_audio_encoder(save_tiny_audio_encoder(str(tmp_path / kind), kind))
    assert encoder.config.model_type == kind
    assert not any(p.requires_grad for p in encoder.parameters())
    with torch.no_grad():
        hidden = encoder(torch.randn(2, 16000)).last_hidden_state
    pooled = torch.nn.functional.adaptive_avg_pool1d(hidden.transpose(1, 2), 4)
    assert pooled.shape == (2, 32, 4)
    llava_dir = tmp_path / 'not_audio'
    llava_dir.mkdir()
    (llava_dir / 'config.json').write_text(json.dumps({'model_type': 'llama'}))
    from emotion_ros.errors import ModelLoadError
    with pytest.raises(ModelLoadError, match='llama'):
        mm.build_audio_encoder(str(llava_dir))


def test_bundle_with_another_modality_layout_is_refused(parts, monkeypatch):
    """Changing how modalities appear in the prompt refuses the bundle, naming both hashes."""
    from emotion_ros.errors import BundleMismatchError
    from emotion_ros.llm.bundle import verify_bundle
    manifest = verify_bundle(parts['bundle'])
    assert manifest['contract']['modalities']['segments']['audio'] == 'Voice: <audio>\n'
    layout = dict(manifest['modalities'])
    layout['segments'] = dict(layout['segments'], audio='Sound: <audio>\n')
    path = os.path.join(parts['root'], 'bundle', 'manifest.json')
    original = open(path).read()
    try:
        edited = json.loads(original)
        edited['modalities'] = layout
        with open(path, 'w') as f:
            json.dump(edited, f)
        with pytest.raises(BundleMismatchError) as err:
            verify_bundle(parts['bundle'], check_files=False)
        assert manifest['contract_hash'] in str(err.value) and 'modalities' in str(err.value)
    finally:
        with open(path, 'w') as f:
            f.write(original)


def test_llava_bundle_is_refused_by_the_audio_visual_backend(tmp_path):
    """Choosing audio_visual with a llava bundle fails naming the kinds."""
    from emotion_ros.backends.audio_visual import AudioVisualBackend, AudioVisualOptions
    from emotion_ros.errors import BundleMismatchError
    from training.core.tiny import save_tiny_llava, write_random_bundle
    base = save_tiny_llava(str(tmp_path / 'base'))
    bundle = write_random_bundle(base, str(tmp_path / 'llava_bundle'))
    with pytest.raises(BundleMismatchError, match='llava bundle'):
        AudioVisualBackend(AudioVisualOptions(bundle_path=bundle, device='cpu')).load()


def test_mixed_emotic_and_av_run_trains_resumes_and_exports(parts, tmp_path):
    """One run mixes EMOTIC images (no audio) with AV clips; a rerun resumes (finished: no-op),
    export writes an equivalent bundle and refuses to replace it without --overwrite."""
    from training.__main__ import main
    from training.emotic.synthetic import make_synthetic
    from training.av.synthetic import make_synthetic_av
    av, emotic = str(tmp_path / 'av'), str(tmp_path / 'emotic')
    make_synthetic_av(av, {'train': 12, 'val': 6}, seed=1)
    make_synthetic(emotic, 12, 6, 2, seed=0)
    run = str(tmp_path / 'run')
    argv = ['train', '--model-kind', 'audio_visual', '--prompt-id', 'av_emotions_v1',
            '--base-model', parts['base'], '--audio-encoder', parts['encoder'],
            '--data-root', f'{av},emotic:{emotic}', '--label-set', 'mer2023',
            '--output-dir', run, '--view', 'crop', '--lora-r', '4', '--lora-alpha', '8',
            '--head-hidden', '32', '--num-epochs', '1', '--per-device-train-batch-size', '8',
            '--no-gradient-checkpointing', '--num-workers', '0', '--no-progress']
    assert main(argv) == 0
    report = json.loads((tmp_path / 'run' / 'data_report.json').read_text())
    assert report['train']['datasets']['av_jsonl'] == 12
    assert report['train']['datasets']['emotic'] >= 12
    assert report['train']['modalities']['audio'] == 12
    assert main(argv) == 0  # the finished run is found and left as it is
    out = str(tmp_path / 'exported')
    assert main(['export', run, out]) == 0
    assert main(['export', run, out]) == 2  # no silent replacement
    from emotion_ros.backends.audio_visual import AudioVisualBackend, AudioVisualOptions
    it = parts['items'][0]
    inputs = [mm.AVInputs(image=it['image'], audio=it['audio']), mm.AVInputs(image=it['image'])]
    scores = []
    for path in (os.path.join(run, 'bundle'), out):
        be = AudioVisualBackend(AudioVisualOptions(bundle_path=path, device='cpu'))
        be.load()
        scores.append(be.score_inputs(inputs)['scores'])
        be.close()
    assert np.allclose(scores[0], scores[1], atol=1e-6)
