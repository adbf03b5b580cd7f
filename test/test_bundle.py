"""Weights bundles: manifest contents, refusal of mismatched bundles, integrity, no overwrites."""

import json
import os

import pytest

from emotion_ros.llm import bundle
from emotion_ros.llm.contract import CATEGORIES, CONTRACT_VERSION
from emotion_ros.errors import BundleMismatchError, ConfigError, ModelLoadError

ARCH = {'model_type': 'llava', 'image_token_id': 4, 'vision_feature_layer': -2,
        'vision_feature_select_strategy': 'default', 'projector_hidden_act': 'gelu',
        'text_config': {'model_type': 'llama', 'vocab_size': 600, 'hidden_size': 192,
                        'num_hidden_layers': 2, 'num_attention_heads': 4,
                        'num_key_value_heads': 2, 'intermediate_size': 384},
        'vision_config': {'model_type': 'clip_vision_model', 'hidden_size': 64,
                          'num_hidden_layers': 1, 'num_attention_heads': 2, 'image_size': 32,
                          'patch_size': 8, 'intermediate_size': 128}}


def _info(base='org/base-7b', **changes):
    values = dict(name='b', base_model=base, base_model_fingerprint=bundle.model_fingerprint(ARCH),
                  base_model_arch=bundle.model_arch(ARCH), adapter_type='lora',
                  prompt_id='emotic_vad_v1', chat_template='llava-1.5', view='box',
                  head={'hidden_size': 192, 'head_hidden': 64, 'with_vad': True},
                  training_config={'lora_r': 8}, metrics={'map': 0.4},
                  thresholds={'Fear': 0.3})
    values.update(changes)
    return bundle.BundleInfo(**values)


def _writer(payload=b'weights'):
    def write(folder):
        """Write an adapter file and a head file."""
        os.makedirs(os.path.join(folder, 'adapter'))
        with open(os.path.join(folder, 'adapter', 'adapter_model.safetensors'), 'wb') as f:
            f.write(payload)
        with open(os.path.join(folder, 'head.safetensors'), 'wb') as f:
            f.write(b'head' * 100)
    return write


def _edit_manifest(path, **changes):
    manifest_path = os.path.join(path, 'manifest.json')
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest.update(changes)
    with open(manifest_path, 'w') as f:
        json.dump(manifest, f)


def test_manifest_records_contract_base_model_files_and_training(tmp_path):
    """The manifest names contract version, base model, files with checksums, config, metrics."""
    path = str(tmp_path / 'b')
    written = bundle.save_bundle(path, _info(), _writer())
    manifest = bundle.verify_bundle(path)
    assert manifest == written
    assert manifest['contract_version'] == CONTRACT_VERSION
    assert manifest['base_model'] == 'org/base-7b'
    assert manifest['categories'] == list(CATEGORIES)
    assert manifest['prompt_id'] == 'emotic_vad_v1' and manifest['view'] == 'box'
    assert manifest['training_config'] == {'lora_r': 8}
    assert manifest['metrics'] == {'map': 0.4} and manifest['thresholds'] == {'Fear': 0.3}
    assert set(manifest['files']) == {'adapter/adapter_model.safetensors', 'head.safetensors'}
    assert manifest['files']['head.safetensors']['bytes'] == 400
    assert manifest['processor_dir'] == ''  # none written: the robot uses the base model's


def test_other_contract_version_is_refused_naming_both(tmp_path):
    """A bundle of another contract version fails with a message naming both versions."""
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer())
    _edit_manifest(path, contract_version='0-old')
    with pytest.raises(BundleMismatchError) as err:
        bundle.verify_bundle(path)
    assert '0-old' in str(err.value) and f'version {CONTRACT_VERSION}' in str(err.value)


def test_other_base_model_is_refused_naming_both(tmp_path):
    """Asking for another base model fails with a message naming both models."""
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer())
    with pytest.raises(BundleMismatchError) as err:
        bundle.verify_bundle(path, expected_base_model='org/other-13b')
    assert 'org/base-7b' in str(err.value) and 'org/other-13b' in str(err.value)
    assert bundle.verify_bundle(path, expected_base_model='org/base-7b')['base_model']


def test_local_copy_of_the_base_model_is_accepted_by_architecture(tmp_path):
    """A local folder with the recorded architecture passes; another architecture does not."""
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer())
    same = tmp_path / 'copy'
    same.mkdir()
    copied = {**ARCH, 'dtype': 'bfloat16', '_name_or_path': 'elsewhere'}
    (same / 'config.json').write_text(json.dumps(copied))
    bundle.verify_bundle(path, expected_base_model=str(same))
    other = tmp_path / 'other'
    other.mkdir()
    bigger = json.loads(json.dumps(ARCH))
    bigger['text_config']['hidden_size'] = 256
    (other / 'config.json').write_text(json.dumps(bigger))
    with pytest.raises(BundleMismatchError, match='other'):
        bundle.verify_bundle(path, expected_base_model=str(other))


def test_existing_bundle_is_never_overwritten_silently(tmp_path):
    """Saving onto an existing bundle fails unless overwrite is asked for, then replaces it."""
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer(b'first'))
    with pytest.raises(ConfigError, match='already exists'):
        bundle.save_bundle(path, _info(), _writer(b'second'))
    adapter = os.path.join(path, 'adapter', 'adapter_model.safetensors')
    assert open(adapter, 'rb').read() == b'first'
    bundle.save_bundle(path, _info(), _writer(b'second'), overwrite=True)
    assert open(adapter, 'rb').read() == b'second'
    bundle.verify_bundle(path)
    assert sorted(os.listdir(tmp_path)) == ['b']  # no temporary folders left behind


def test_a_failing_writer_leaves_no_bundle(tmp_path):
    """An exception while writing weights leaves neither a bundle nor a temporary folder."""
    def broken(folder):
        """Write the files, then fail."""
        _writer()(folder)
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        bundle.save_bundle(str(tmp_path / 'b'), _info(), broken)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ModelLoadError, match='did not write'):
        bundle.save_bundle(str(tmp_path / 'c'), _info(), lambda folder: None)


def test_corrupt_truncated_or_missing_files_are_named(tmp_path):
    """A flipped byte, a truncated or a missing file fails verification naming the file."""
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer(b'0123456789'))
    adapter = os.path.join(path, 'adapter', 'adapter_model.safetensors')
    with open(adapter, 'wb') as f:
        f.write(b'0123456780')
    with pytest.raises(ModelLoadError, match='adapter_model.safetensors is corrupt'):
        bundle.verify_bundle(path)
    with open(adapter, 'wb') as f:
        f.write(b'01234')
    with pytest.raises(ModelLoadError, match='truncated'):
        bundle.verify_bundle(path)
    os.remove(adapter)
    with pytest.raises(ModelLoadError, match='is missing'):
        bundle.verify_bundle(path)
    assert bundle.verify_bundle(path, check_files=False)['adapter_type'] == 'lora'


def test_unreadable_manifests_raise_model_load_errors(tmp_path):
    """No folder, no manifest, broken JSON, missing keys or a newer format give clear errors."""
    with pytest.raises(ModelLoadError, match='does not exist'):
        bundle.load_manifest(str(tmp_path / 'nothing'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ModelLoadError, match='no manifest.json'):
        bundle.load_manifest(str(tmp_path / 'empty'))
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer())
    manifest_path = os.path.join(path, 'manifest.json')
    text = open(manifest_path).read()
    open(manifest_path, 'w').write(text[:len(text) // 2])
    with pytest.raises(ModelLoadError, match='cannot read'):
        bundle.load_manifest(path)
    open(manifest_path, 'w').write(json.dumps({'bundle_format': 1}))
    with pytest.raises(ModelLoadError, match='missing keys'):
        bundle.load_manifest(path)
    manifest = json.loads(text)
    manifest['bundle_format'] = bundle.BUNDLE_FORMAT + 1
    open(manifest_path, 'w').write(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match='newer'):
        bundle.load_manifest(path)


def test_bundle_info_rejects_impossible_values():
    """Unknown adapter type, prompt, view or threshold category are rejected by name."""
    with pytest.raises(ConfigError, match='adapter_type'):
        _info(adapter_type='qlora-magic')
    with pytest.raises(ConfigError, match='prompt_id'):
        _info(prompt_id='nope')
    with pytest.raises(ConfigError, match='view'):
        _info(view='face')
    with pytest.raises(ConfigError, match='thresholds'):
        _info(thresholds={'Joy': 0.5})
    with pytest.raises(ConfigError, match='base_model'):
        _info(base='')


def test_fingerprint_ignores_dtype_and_paths_but_not_architecture():
    """Copies that differ only in dtype/paths share a fingerprint; other sizes do not."""
    copy = {**ARCH, 'dtype': 'float16', '_name_or_path': '/x', 'transformers_version': '9'}
    assert bundle.model_fingerprint(copy) == bundle.model_fingerprint(ARCH)
    other = json.loads(json.dumps(ARCH))
    other['vision_config']['patch_size'] = 14
    assert bundle.model_fingerprint(other) != bundle.model_fingerprint(ARCH)


@pytest.mark.parametrize('change', ['template', 'vad_mapping', 'prompt', 'view_pad'])
def test_bundle_with_another_contract_hash_is_refused_naming_both(tmp_path, monkeypatch, change):
    """Editing a template, the VAD mapping, the prompt or the view refuses old bundles by hash."""
    from emotion_ros.llm import contract, head, person_view, spec, templates
    path = str(tmp_path / 'b')
    written = bundle.save_bundle(path, _info(), _writer())
    recorded = written['contract_hash']
    assert recorded.startswith('sha256:') and written['contract']['head']['vad_mapping']
    assert bundle.verify_bundle(path)['contract_hash'] == recorded
    if change == 'template':
        monkeypatch.setitem(templates.CHAT_TEMPLATES, 'llava-1.5', templates.ChatTemplate(
            'llava-1.5', 'USER:<image>\n{question}\nASSISTANT:', ' '))
    elif change == 'vad_mapping':
        monkeypatch.setitem(head.HEAD_SPEC, 'vad_mapping', 'vad = 0 + 10 * sigmoid(x)')
    elif change == 'prompt':
        monkeypatch.setitem(contract.PROMPTS, 'emotic_vad_v1', contract.PromptTemplate(
            'emotic_vad_v1', 'How does the person in the red box feel?', True))
    else:
        monkeypatch.setattr(spec, 'PAD_COLOR_RGB', (0, 0, 0))
    assert person_view.PAD_COLOR_RGB  # the module stays importable
    current = spec.contract_hash(spec.manifest_spec(written))
    assert current != recorded
    with pytest.raises(BundleMismatchError) as err:
        bundle.verify_bundle(path)
    message = str(err.value)
    assert recorded in message and current in message
    part = {'template': 'chat_template', 'vad_mapping': 'head', 'prompt': 'prompt',
            'view_pad': 'view'}[change]
    assert part in message


def test_bundle_without_contract_hash_is_refused(tmp_path):
    """A bundle from before contract hashes is refused with what to do, not loaded blindly."""
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer())
    _edit_manifest(path, contract_hash='')
    with pytest.raises(BundleMismatchError, match='no contract hash.*export'):
        bundle.verify_bundle(path, check_files=False)


def test_contract_hash_ignores_prompts_the_bundle_does_not_use(tmp_path, monkeypatch):
    """Adding a new prompt or template leaves existing bundles loadable."""
    from emotion_ros.llm import contract, templates
    path = str(tmp_path / 'b')
    bundle.save_bundle(path, _info(), _writer())
    monkeypatch.setitem(contract.PROMPTS, 'new_v1', contract.PromptTemplate(
        'new_v1', 'A new question?', False))
    monkeypatch.setitem(templates.CHAT_TEMPLATES, 'new', templates.ChatTemplate(
        'new', '<image>{question}', ' '))
    assert bundle.verify_bundle(path)['prompt_id'] == 'emotic_vad_v1'
