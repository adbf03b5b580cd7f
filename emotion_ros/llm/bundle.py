"""Weights bundles: the hand-over of a fine-tuned LLM model from training to the robot.

A bundle is a folder::

    manifest.json          what the robot needs to know (see BundleInfo), file checksums
    adapter/               peft LoRA adapter (adapter_config.json, adapter_model.safetensors)
    model/                 instead of adapter/ in a merged bundle: the full merged model
    head.safetensors       the score head (26 category logits + 3 VAD)
    processor/             tokenizer + image processor used in training
    multimodal.safetensors (audio_visual only) audio/temporal projectors, discrete head
    audio_encoder/         (audio_visual only) the frozen speech encoder's config + weights

The manifest records the contract version (:data:`emotion_ros.llm.contract.
CONTRACT_VERSION`), the contract spec and its hash (:mod:`emotion_ros.llm.spec`:
templates, prompt, head layout, VAD mapping, view, modality layout, label set)
and the base model (its name and an architecture fingerprint);
:func:`verify_bundle` refuses a bundle made for another contract hash or base
model with a message naming both. Bundles are written to a
temporary folder and renamed into place, so a crash never leaves half a
bundle, and an existing bundle is only replaced when asked to.

This module imports no torch at module level; :func:`merge_adapter` imports
it when called.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
from typing import Any, Callable, Dict, List, Mapping, Optional

from emotion_ros import __version__ as EMOTION_ROS_VERSION
from emotion_ros.errors import BundleMismatchError, ConfigError, ModelLoadError
from emotion_ros.llm.contract import CATEGORIES, CONTRACT_VERSION, PERSON_VIEWS, PROMPTS
from emotion_ros.llm.contract import VAD_NAMES
from emotion_ros.llm.spec import check_contract, contract_hash, contract_spec

_LOG = logging.getLogger(__name__)

BUNDLE_FORMAT = 2  # 2: contract spec + hash, model kinds
MANIFEST_NAME = 'manifest.json'
ADAPTER_TYPES = ('lora', 'merged')
MODEL_KINDS = ('llava', 'audio_visual')

_REQUIRED_KEYS = ('bundle_format', 'contract_version', 'base_model', 'adapter_type',
                  'prompt_id', 'chat_template', 'view', 'categories', 'head', 'head_file',
                  'files')

# Config keys that decide whether weights fit: everything else in config.json
# (dtype, versions, paths, generation defaults) may differ between copies.
_TEXT_KEYS = ('model_type', 'vocab_size', 'hidden_size', 'intermediate_size',
              'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads')
_VISION_KEYS = ('model_type', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
                'num_attention_heads', 'image_size', 'patch_size')
_TOP_KEYS = ('image_token_id', 'image_token_index', 'vision_feature_layer',
             'vision_feature_select_strategy', 'projector_hidden_act')


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    """What training knows about a bundle; becomes manifest.json (plus checksums)."""

    name: str
    base_model: str
    base_model_fingerprint: str
    base_model_arch: Mapping[str, Any]
    adapter_type: str  # 'lora' (adapter_dir) or 'merged' (model_dir)
    prompt_id: str
    chat_template: str
    view: str
    head: Mapping[str, Any]  # hidden_size, head_hidden, with_vad
    training_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    adapter_dir: str = 'adapter'
    model_dir: str = 'model'
    head_file: str = 'head.safetensors'
    processor_dir: str = 'processor'
    model_kind: str = 'llava'  # 'llava' or 'audio_visual'
    modalities: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # '' = llava's
    label_set: str = ''  # discrete label set of the discrete head ('' = none)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # kind-specific

    def __post_init__(self) -> None:
        """Check the fields the robot relies on.

        Raises:
            ConfigError: naming the bad field.
        """
        if self.adapter_type not in ADAPTER_TYPES:
            raise ConfigError(f'bundle adapter_type: {self.adapter_type!r} is not one of '
                              f'{list(ADAPTER_TYPES)}')
        if self.prompt_id not in PROMPTS:
            raise ConfigError(f'bundle prompt_id: unknown prompt {self.prompt_id!r}')
        if self.view not in PERSON_VIEWS:
            raise ConfigError(f'bundle view: {self.view!r} is not one of {list(PERSON_VIEWS)}')
        if not self.base_model:
            raise ConfigError('bundle base_model: must name the base model')
        if self.model_kind not in MODEL_KINDS:
            raise ConfigError(f'bundle model_kind: {self.model_kind!r} is not one of '
                              f'{list(MODEL_KINDS)}')
        unknown = set(self.thresholds) - set(CATEGORIES)
        if unknown:
            raise ConfigError(f'bundle thresholds: unknown categories {sorted(unknown)}')


def model_arch(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The architecture-defining subset of a LLaVA ``config.json`` (as a dict)."""
    text = config.get('text_config') or {}
    vision = config.get('vision_config') or {}
    arch: Dict[str, Any] = {k: config[k] for k in _TOP_KEYS if k in config}
    arch['text'] = {k: text[k] for k in _TEXT_KEYS if k in text}
    arch['vision'] = {k: vision[k] for k in _VISION_KEYS if k in vision}
    return arch


def model_fingerprint(config: Mapping[str, Any]) -> str:
    """A stable hash of :func:`model_arch`, recorded in the manifest and checked on load."""
    text = json.dumps(model_arch(config), sort_keys=True, default=str)
    return 'sha256:' + hashlib.sha256(text.encode()).hexdigest()[:16]


def local_model_fingerprint(path: str) -> Optional[str]:
    """Fingerprint of the ``config.json`` in a local model folder, or None if there is none."""
    config_path = os.path.join(path, 'config.json')
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path, encoding='utf-8') as f:
            return model_fingerprint(json.load(f))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'cannot read {config_path}: {exc}') from exc


def mismatch_base_error(bundle_path: str, manifest: Mapping[str, Any], base: str,
                        found_fingerprint: str) -> BundleMismatchError:
    """The error for a base model whose architecture differs from the bundle's."""
    return BundleMismatchError(
        f'bundle {bundle_path} was trained on base model {manifest["base_model"]!r} '
        f'(architecture {manifest.get("base_model_fingerprint")}), but the base model '
        f'{base!r} has architecture {found_fingerprint}; use the base model the bundle '
        'was trained on')


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _list_files(root: str) -> List[str]:
    out = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if rel != MANIFEST_NAME:
                out.append(rel.replace(os.sep, '/'))
    return sorted(out)


def save_bundle(path: str, info: BundleInfo, write_files: Callable[[str], None],
                overwrite: bool = False) -> Dict[str, Any]:
    """Write a bundle: ``write_files(folder)`` writes the weights, this adds the manifest.

    The bundle is assembled in a temporary sibling folder and renamed into
    place, so a crash leaves either the old bundle or the new one.

    Args:
        path: the bundle folder to create.
        info: what goes into the manifest.
        write_files: writes adapter/ (or model/), the head file and processor/.
        overwrite: replace an existing bundle at ``path``.

    Returns:
        The manifest written.

    Raises:
        ConfigError: when ``path`` exists and ``overwrite`` is false.
        ModelLoadError: when ``write_files`` did not write the files the manifest names.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise ConfigError(f'bundle output {path} already exists; choose another folder or '
                          'pass overwrite (--overwrite) to replace it')
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        write_files(tmp)
        needed = [info.head_file]
        needed.append(info.adapter_dir if info.adapter_type == 'lora' else info.model_dir)
        missing = [n for n in needed if not os.path.exists(os.path.join(tmp, n))]
        if missing:
            raise ModelLoadError(f'bundle {path}: the weights writer did not write {missing}')
        files = {rel: {'sha256': _sha256(os.path.join(tmp, rel)),
                       'bytes': os.path.getsize(os.path.join(tmp, rel))}
                 for rel in _list_files(tmp)}
        manifest = dict(dataclasses.asdict(info))
        spec = contract_spec(info.prompt_id, info.chat_template, info.view,
                             info.modalities or None, info.label_set)
        manifest.update({
            'contract': spec,
            'contract_hash': contract_hash(spec),
            'bundle_format': BUNDLE_FORMAT,
            'contract_version': CONTRACT_VERSION,
            'categories': list(CATEGORIES),
            'vad_names': list(VAD_NAMES),
            'vad_scale': [1.0, 10.0],
            'emotion_ros_version': EMOTION_ROS_VERSION,
            'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec='seconds'),
            'files': files,
        })
        if not (os.path.isdir(os.path.join(tmp, info.processor_dir))):
            manifest['processor_dir'] = ''
        with open(os.path.join(tmp, MANIFEST_NAME), 'w', encoding='utf-8') as f:
            json.dump(manifest, f, indent=2, sort_keys=True, default=_json_default)
            f.write('\n')
        if os.path.exists(path):
            if not overwrite:  # appeared while we were writing
                raise ConfigError(f'bundle output {path} already exists')
            old = tmp + '.old'
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _LOG.info('wrote bundle %s (%d files)', path, len(files))
    return manifest


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, 'item'):
        return value.item()
    return str(value)


def load_manifest(path: str) -> Dict[str, Any]:
    """Read and sanity-check a bundle's manifest.json.

    Raises:
        ModelLoadError: when the folder or manifest is missing, unreadable,
            not JSON, or lacks required keys (named).
    """
    manifest_path = os.path.join(path, MANIFEST_NAME)
    if not os.path.isdir(path):
        raise ModelLoadError(f'weights bundle {path} does not exist (or is not a folder)')
    if not os.path.isfile(manifest_path):
        raise ModelLoadError(f'weights bundle {path} has no {MANIFEST_NAME}')
    try:
        with open(manifest_path, encoding='utf-8') as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f'cannot read {manifest_path}: {exc}') from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f'{manifest_path}: expected a JSON object')
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelLoadError(f'{manifest_path}: missing keys {missing}')
    if manifest['bundle_format'] > BUNDLE_FORMAT:
        raise ModelLoadError(f'{manifest_path}: bundle format {manifest["bundle_format"]} is '
                             f'newer than this emotion_ros understands ({BUNDLE_FORMAT}); '
                             'update emotion_ros')
    return manifest


def _same_base(expected: str, manifest: Mapping[str, Any]) -> bool:
    recorded = str(manifest['base_model'])
    if expected == recorded:
        return True
    if os.path.isdir(expected) and os.path.isdir(recorded) and \
            os.path.samefile(expected, recorded):
        return True
    # A local copy of the same model (e.g. the hub model downloaded to the robot)
    # is accepted when its architecture fingerprint matches the recorded one.
    found = local_model_fingerprint(expected) if os.path.isdir(expected) else None
    return found is not None and found == manifest.get('base_model_fingerprint')


def verify_bundle(path: str, expected_base_model: Optional[str] = None,
                  check_files: bool = True) -> Dict[str, Any]:
    """Check that a bundle fits this contract (and base model) and is intact.

    Args:
        path: the bundle folder.
        expected_base_model: the base model the caller will load; None skips the check.
            A local folder whose config.json has the recorded architecture
            fingerprint counts as the same model.
        check_files: verify each file's size and sha256 against the manifest.

    Returns:
        The manifest.

    Raises:
        BundleMismatchError: naming both contract versions, or both base models.
        ModelLoadError: for missing, truncated or corrupt files (named).
    """
    manifest = load_manifest(path)
    found_version = str(manifest['contract_version'])
    if found_version != CONTRACT_VERSION:
        raise BundleMismatchError(
            f'bundle {path} was made for contract version {found_version}, this emotion_ros '
            f'speaks contract version {CONTRACT_VERSION}; retrain or export the bundle with '
            'a matching emotion_ros')
    if list(manifest['categories']) != list(CATEGORIES):
        raise BundleMismatchError(f'bundle {path} has categories {manifest["categories"]}, '
                                  f'contract {CONTRACT_VERSION} has {list(CATEGORIES)}')
    check_contract(path, manifest)
    if expected_base_model and not _same_base(expected_base_model, manifest):
        raise BundleMismatchError(
            f'bundle {path} was trained on base model {manifest["base_model"]!r}, but base '
            f'model {expected_base_model!r} was requested')
    if manifest['adapter_type'] not in ADAPTER_TYPES:
        raise ModelLoadError(f'bundle {path}: unknown adapter_type {manifest["adapter_type"]!r}')
    if check_files:
        for rel, meta in manifest['files'].items():
            full = os.path.join(path, rel)
            if not os.path.isfile(full):
                raise ModelLoadError(f'bundle {path}: file {rel} is missing')
            size = os.path.getsize(full)
            if size != meta.get('bytes'):
                raise ModelLoadError(f'bundle {path}: file {rel} has {size} bytes, the '
                                     f'manifest says {meta.get("bytes")} (truncated copy?)')
            if _sha256(full) != meta.get('sha256'):
                raise ModelLoadError(f'bundle {path}: file {rel} is corrupt (sha256 differs '
                                     'from the manifest)')
        if manifest['head_file'] not in manifest['files']:
            raise ModelLoadError(f'bundle {path}: head file {manifest["head_file"]} is not '
                                 'listed in the manifest')
    return manifest


def merge_adapter(src: str, dst: str, base_model: Optional[str] = None,
                  dtype: str = 'bfloat16', overwrite: bool = False) -> Dict[str, Any]:
    """Export a LoRA bundle as a merged bundle (adapter folded into the weights).

    A merged bundle loads without peft and runs slightly faster, at the cost
    of a full model copy (about 14 GB for a 7B model in bf16).

    Args:
        src: a LoRA bundle.
        dst: the merged bundle folder to create.
        base_model: where to load the base model from ('' / None: the manifest's).
        dtype: weights dtype of the merged model: bfloat16, float16 or float32.
        overwrite: replace an existing ``dst``.

    Raises:
        BundleMismatchError, ModelLoadError: as :func:`verify_bundle`.
        ConfigError: when ``src`` is already merged, or ``dst`` exists.
    """
    manifest = verify_bundle(src, expected_base_model=base_model or None)
    if manifest['adapter_type'] != 'lora':
        raise ConfigError(f'bundle {src} is already merged')
    if manifest.get('model_kind', 'llava') != 'llava':
        raise ConfigError(f'bundle {src} is a {manifest["model_kind"]} bundle; merging is '
                          'implemented for llava bundles only (serve it with its adapter)')
    if os.path.exists(dst) and not overwrite:
        raise ConfigError(f'bundle output {dst} already exists; pass overwrite to replace it')
    import torch
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration
    torch_dtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16,
                   'float32': torch.float32}.get(dtype)
    if torch_dtype is None:
        raise ConfigError(f'dtype: {dtype!r} is not one of bfloat16, float16, float32')
    base = base_model or manifest['base_model']
    try:
        model = LlavaForConditionalGeneration.from_pretrained(base, dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, os.path.join(src, manifest['adapter_dir']))
        merged = model.merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f'cannot merge bundle {src} into {base!r}: {exc}') from exc
    fields = {f.name for f in dataclasses.fields(BundleInfo)}
    info_kwargs = {k: v for k, v in manifest.items() if k in fields}
    info_kwargs['adapter_type'] = 'merged'
    info_kwargs['name'] = (manifest.get('name') or os.path.basename(src)) + '-merged'
    info = BundleInfo(**info_kwargs)

    def write(folder: str) -> None:
        """Write the merged model, the head and the processor."""
        merged.save_pretrained(os.path.join(folder, info.model_dir))
        shutil.copy2(os.path.join(src, manifest['head_file']),
                     os.path.join(folder, info.head_file))
        if manifest.get('processor_dir'):
            shutil.copytree(os.path.join(src, manifest['processor_dir']),
                            os.path.join(folder, info.processor_dir))

    return save_bundle(dst, info, write, overwrite=overwrite)
