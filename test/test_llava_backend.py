"""The llava backend: cheap import, bundle loading and refusal, one batched forward pass per
frame, explanations on request, zero-shot scoring, merged bundles, bad input, cleanup."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from emotion_ros.backends.factory import create_backend
from emotion_ros.backends.llava import LlavaBackend, LlavaOptions
from emotion_ros.config.schema import from_mapping
from emotion_ros.errors import BundleMismatchError, ConfigError, InputError, ModelLoadError

torch = pytest.importorskip('torch')
pytest.importorskip('peft')

BOXES = [(10, 10, 60, 110), (70, 20, 150, 115), (100, 0, 160, 60)]


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """A tiny base, a bundle on it, an emotions-only bundle and another (wider) base."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from training.core.tiny import save_tiny_llava, write_random_bundle
    root = tmp_path_factory.mktemp('llava_backend')
    base = save_tiny_llava(str(root / 'base'))
    return {
        'root': root,
        'base': base,
        'bundle': write_random_bundle(base, str(root / 'bundle'), seed=1),
        'emotions_only': write_random_bundle(base, str(root / 'emo'), seed=2,
                                             prompt_id='emotic_emotions_v1', view='box'),
        'other_base': save_tiny_llava(str(root / 'other_base'), seed=5, text_hidden=48),
    }


@pytest.fixture(scope='module')
def backend(models):
    """The llava backend loaded from the random bundle (CPU)."""
    be = LlavaBackend(LlavaOptions(bundle_path=models['bundle'], device='cpu', max_batch=8))
    be.load()
    yield be
    be.close()


def _image(seed=0):
    return (np.random.default_rng(seed).random((120, 160, 3)) * 255).astype(np.uint8)


def _count_llm_forwards(backend):
    from emotion_ros.backends.llava import core_llava
    calls = []
    handle = core_llava(backend._model).model.language_model.register_forward_hook(
        lambda *_: calls.append(1))
    return calls, handle


def test_importing_the_options_pulls_in_neither_torch_nor_ros():
    """The node can import LlavaOptions at start-up without paying for torch (or rclpy)."""
    code = ('import sys; import emotion_ros.backends.llava as m; m.LlavaOptions(); '
            'print("torch" in sys.modules, "transformers" in sys.modules, "rclpy" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['False', 'False', 'False']


def test_options_validate_as_ros_parameters():
    """Options build from emotion.llava.* parameters; bad values name the parameter."""
    opts = from_mapping(LlavaOptions, {'emotion.llava.bundle_path': '/b',
                                       'emotion.llava.max_batch': 4}, 'emotion.llava')
    assert opts.bundle_path == '/b' and opts.max_batch == 4 and opts.dtype == 'auto'
    with pytest.raises(ConfigError, match='emotion.llava.device'):
        from_mapping(LlavaOptions, {'emotion.llava.device': 'tpu'}, 'emotion.llava')
    with pytest.raises(ConfigError, match='emotion.llava.max_batch'):
        from_mapping(LlavaOptions, {'emotion.llava.max_batch': 0}, 'emotion.llava')
    with pytest.raises(ConfigError, match='bundle_path'):
        LlavaBackend(LlavaOptions())


def test_registered_backend_is_cheap_until_loaded(models):
    """create_backend('llava') builds without loading; using it before load() fails clearly."""
    be = create_backend('llava', LlavaOptions(bundle_path=models['bundle'], device='cpu'))
    assert isinstance(be, LlavaBackend) and not be.loaded and be.can_explain
    with pytest.raises(ModelLoadError, match='before load'):
        be.estimate(_image(), BOXES)


def test_all_persons_of_a_frame_in_one_forward_pass(backend):
    """Three persons cost one language-model forward (no generation); scores and VAD valid."""
    calls, handle = _count_llm_forwards(backend)
    try:
        outputs = backend.estimate(_image(), BOXES)
    finally:
        handle.remove()
    assert len(calls) == 1
    assert len(outputs) == 3
    for out in outputs:
        assert out.scores.shape == (26,) and ((out.scores >= 0) & (out.scores <= 1)).all()
        assert len(set(np.round(out.scores, 6))) > 1
        assert all(1.0 <= v <= 10.0 for v in out.vad)
    assert not np.allclose(outputs[0].scores, outputs[1].scores)
    assert backend.model_id.startswith('llava:bundle@')
    assert backend.estimate(_image(), []) == []


def test_batched_scores_equal_one_person_at_a_time(backend):
    """Batching (left padding) does not change any person's scores."""
    image = _image(3)
    together = backend.estimate(image, BOXES)
    for box, batched in zip(BOXES, together):
        alone = backend.estimate(image, [box])[0]
        assert np.allclose(alone.scores, batched.scores, atol=1e-5)
        assert np.allclose(alone.vad, batched.vad, atol=1e-4)


def test_more_persons_than_max_batch_are_chunked(models):
    """With max_batch 2, five persons take three forward passes and keep their order."""
    be = LlavaBackend(LlavaOptions(bundle_path=models['bundle'], device='cpu', max_batch=2))
    be.load()
    boxes = BOXES + [(0, 0, 40, 40), (120, 80, 160, 120)]
    calls, handle = _count_llm_forwards(be)
    try:
        chunked = be.estimate(_image(), boxes)
    finally:
        handle.remove()
    assert len(calls) == 3
    whole = LlavaBackend(LlavaOptions(bundle_path=models['bundle'], device='cpu', max_batch=8))
    whole.load()
    for a, b in zip(chunked, whole.estimate(_image(), boxes)):
        assert np.allclose(a.scores, b.scores, atol=1e-5)
    be.close()
    whole.close()


def test_explanation_is_generated_within_the_token_budget(backend):
    """explain() generates text on request, with at most max_new_tokens decoding steps."""
    calls, handle = _count_llm_forwards(backend)
    try:
        text = backend.explain(_image(), BOXES[0], max_new_tokens=3)
    finally:
        handle.remove()
    assert text.strip()  # generated words, not an empty placeholder
    assert 1 <= len(calls) <= 3  # prefill + at most 2 more steps for 3 tokens
    views = backend.render_views(_image(), BOXES[:1])
    assert text == backend.generate(views, 'explain_v1', 3, use_adapter=False)[0]
    longer = backend.explain(_image(), BOXES[0])  # default budget
    assert longer.strip() and longer.startswith(text[:2])


def test_bad_images_and_boxes_raise_input_errors(backend):
    """Wrong dtype, channels or boxes outside the image give InputError naming the problem."""
    with pytest.raises(InputError, match='uint8'):
        backend.estimate(_image().astype(np.float32), BOXES)
    with pytest.raises(InputError, match='3'):
        backend.estimate(_image()[:, :, :2], BOXES)
    with pytest.raises(InputError, match='outside'):
        backend.estimate(_image(), [(500, 500, 600, 600)])
    with pytest.raises(InputError, match='finite'):
        backend.estimate(_image(), [(math.nan, 0, 10, 10)])
    with pytest.raises(InputError):
        backend.explain(_image(), (5, 5, 5, 5), 4)


def test_bundle_of_another_contract_is_refused(models, tmp_path):
    """A bundle made for another contract version fails on load naming both versions."""
    import shutil
    copy = tmp_path / 'old_contract'
    shutil.copytree(models['bundle'], copy)
    manifest = json.loads((copy / 'manifest.json').read_text())
    manifest['contract_version'] = '0'
    (copy / 'manifest.json').write_text(json.dumps(manifest))
    be = LlavaBackend(LlavaOptions(bundle_path=str(copy), device='cpu'))
    with pytest.raises(BundleMismatchError, match='contract version 0'):
        be.load()
    assert not be.loaded


def test_bundle_on_another_base_model_is_refused_naming_both(models):
    """Pointing a bundle at a base model of another architecture fails naming both models."""
    be = LlavaBackend(LlavaOptions(bundle_path=models['bundle'],
                                   base_model=models['other_base'], device='cpu'))
    with pytest.raises(BundleMismatchError) as err:
        be.load()
    assert models['other_base'] in str(err.value) and models['base'] in str(err.value)


def test_corrupt_head_file_is_refused(models, tmp_path):
    """A head file whose bytes changed after export is refused before anything runs."""
    import shutil
    copy = tmp_path / 'corrupt'
    shutil.copytree(models['bundle'], copy)
    head = copy / 'head.safetensors'
    data = bytearray(head.read_bytes())
    data[-1] ^= 0xFF
    head.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match='head.safetensors is corrupt'):
        LlavaBackend(LlavaOptions(bundle_path=str(copy), device='cpu')).load()


def test_emotions_only_bundle_gives_no_vad(models):
    """The emotions-only ablation has no VAD head: VAD is NaN, scores still continuous."""
    be = LlavaBackend(LlavaOptions(bundle_path=models['emotions_only'], device='cpu'))
    be.load()
    out = be.estimate(_image(), BOXES[:2])
    assert all(math.isnan(v) for v in out[0].vad)
    assert be.view == 'box' and be.prompt_id == 'emotic_emotions_v1'
    assert len(set(np.round(out[0].scores, 6))) > 1
    be.close()


def test_zero_shot_scores_are_continuous_name_probabilities(models):
    """Without a bundle, scores are per-category name probabilities (continuous), VAD NaN."""
    be = LlavaBackend(LlavaOptions(base_model=models['base'], device='cpu'))
    be.load()
    assert be.zero_shot and 'zero-shot' in be.model_id
    out = be.estimate(_image(), BOXES)
    scores = np.stack([o.scores for o in out])
    assert ((scores > 0) & (scores < 1)).all() and scores.std() > 0
    assert all(math.isnan(v) for v in out[0].vad)
    views = be.render_views(_image(), BOXES[1:2])
    assert be.explain(_image(), BOXES[1], 4) == be.generate(views, 'explain_v1', 4)[0]
    assert be.explanation_source == 'base'
    be.close()


def test_merged_bundle_scores_like_the_adapter(models, backend):
    """Merging the LoRA adapter into the weights keeps the scores; the merged bundle loads."""
    from emotion_ros.llm.bundle import merge_adapter, verify_bundle
    merged_path = os.path.join(models['root'], 'merged')
    manifest = merge_adapter(models['bundle'], merged_path, dtype='float32')
    assert manifest['adapter_type'] == 'merged'
    assert verify_bundle(merged_path, expected_base_model=models['base'])
    with pytest.raises(ConfigError, match='already exists'):
        merge_adapter(models['bundle'], merged_path)
    merged = LlavaBackend(LlavaOptions(bundle_path=merged_path, device='cpu'))
    merged.load()
    image = _image(7)
    for a, b in zip(merged.estimate(image, BOXES), backend.estimate(image, BOXES)):
        assert np.allclose(a.scores, b.scores, atol=1e-4)
        assert np.allclose(a.vad, b.vad, atol=1e-3)
    # A merged bundle has no base model to fall back on: it explains with the merged
    # (fine-tuned) weights, as documented, and says so; the LoRA bundle uses base words.
    assert merged.explanation_source == 'merged' and backend.explanation_source == 'base'
    views = backend.render_views(image, BOXES[:1])
    tuned = backend.generate(views, 'explain_v1', 6, use_adapter=True)[0]
    base_words = backend.generate(views, 'explain_v1', 6, use_adapter=False)[0]
    assert tuned != base_words  # the check below can tell the two apart
    assert backend.explain(image, BOXES[0], 6) == base_words
    assert merged.explain(image, BOXES[0], 6) == tuned
    merged.close()


def test_close_frees_the_model_and_can_be_repeated(models):
    """close() unloads (estimate then fails clearly) and is safe twice; load() works again."""
    be = LlavaBackend(LlavaOptions(bundle_path=models['bundle'], device='cpu'))
    be.load()
    assert be.loaded
    be.close()
    be.close()
    assert not be.loaded
    with pytest.raises(ModelLoadError):
        be.estimate(_image(), BOXES)
    be.load()
    assert len(be.estimate(_image(), BOXES[:1])) == 1
    be.close()


def test_missing_base_model_is_a_model_load_error(tmp_path):
    """A base model that is not there fails load() with a ModelLoadError naming it."""
    missing = str(tmp_path / 'no_such_model')
    be = LlavaBackend(LlavaOptions(base_model=missing, device='cpu'))
    with pytest.raises(ModelLoadError, match='no_such_model'):
        be.load()
    assert not be.loaded
