"""The contract hash: everything that changes the meaning of trained weights, hashed.

A bundle's manifest records :func:`contract_spec` (as JSON) and its
:func:`contract_hash`. Loading recomputes the spec from this code for the
bundle's own choices (prompt, chat template, view, modality layout, label
set) and refuses the bundle when the hashes differ, naming both hashes and
the parts that changed. The spec holds the 26 categories, the VAD scale,
words and head mapping, the score primer, the prompt text, the chat
template, the person-view rendering, the head layout, the modality layout
(which inputs, in which order, how many tokens, which audio rate), for models
with audio the audio preprocessing (rate, channels, resampling method:
:data:`emotion_ros.audio.preprocess.AUDIO_PREPROCESSING`) and the
discrete label set with its mapping. Adding a new prompt or template does not
change the hash of bundles that do not use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Mapping, Optional

from emotion_ros.audio.preprocess import AUDIO_PREPROCESSING
from emotion_ros.errors import BundleMismatchError
from emotion_ros.llm.contract import (CATEGORIES, CONTRACT_VERSION, PROMPTS, SCORE_PRIMER,
                                      VAD_MAX, VAD_MIN, VAD_NAMES, VAD_WORDS)
from emotion_ros.llm.head import HEAD_SPEC
from emotion_ros.llm.labels import CLASS_TO_CATEGORIES, LABEL_SETS
from emotion_ros.llm.person_view import BOX_COLOR_RGB, DEFAULT_CROP_MARGIN, PAD_COLOR_RGB
from emotion_ros.llm.templates import CHAT_TEMPLATES

# The layout of the LLaVA backend: one person view as image tokens, nothing else.
LLAVA_MODALITIES: Dict[str, Any] = {'kind': 'llava', 'inputs': ['image']}


def contract_spec(prompt_id: str, chat_template: str, view: str,
                  modalities: Optional[Mapping[str, Any]] = None,
                  label_set: str = '') -> Dict[str, Any]:
    """The parts of the contract a bundle made with these choices depends on.

    Raises:
        BundleMismatchError: when this code no longer has the prompt, template
            or label set (named).
    """
    if prompt_id not in PROMPTS:
        raise BundleMismatchError(f'prompt {prompt_id!r} does not exist in this emotion_ros '
                                  f'(known: {sorted(PROMPTS)})')
    if chat_template not in CHAT_TEMPLATES:
        raise BundleMismatchError(f'chat template {chat_template!r} does not exist in this '
                                  f'emotion_ros (known: {sorted(CHAT_TEMPLATES)})')
    spec: Dict[str, Any] = {
        'contract_version': CONTRACT_VERSION,
        'categories': list(CATEGORIES),
        'vad': {'names': list(VAD_NAMES), 'scale': [VAD_MIN, VAD_MAX],
                'words': list(VAD_WORDS)},
        'score_primer': SCORE_PRIMER,
        'prompt': dataclasses.asdict(PROMPTS[prompt_id]),
        'chat_template': dataclasses.asdict(CHAT_TEMPLATES[chat_template]),
        'view': {'name': view, 'box_color': list(BOX_COLOR_RGB),
                 'pad_color': list(PAD_COLOR_RGB), 'crop_margin': DEFAULT_CROP_MARGIN},
        'head': dict(HEAD_SPEC),
        'modalities': dict(modalities or LLAVA_MODALITIES),
    }
    if 'audio' in spec['modalities'].get('inputs', ()):
        # How audio becomes the encoder's input (rate, channels, resampler): a model trained
        # on audio preprocessed otherwise would hear another signal on the robot.
        spec['audio_preprocessing'] = dict(AUDIO_PREPROCESSING)
    if label_set:
        if label_set not in LABEL_SETS:
            raise BundleMismatchError(f'label set {label_set!r} does not exist in this '
                                      f'emotion_ros (known: {sorted(LABEL_SETS)})')
        spec['label_set'] = {'name': label_set, 'classes': list(LABEL_SETS[label_set]),
                             'to_categories': {c: list(CLASS_TO_CATEGORIES[c])
                                               for c in LABEL_SETS[label_set]}}
    return json.loads(json.dumps(spec, sort_keys=True))  # plain JSON types, as stored


def contract_hash(spec: Mapping[str, Any]) -> str:
    """A stable short hash of a contract spec (``sha256:`` + 16 hex digits)."""
    text = json.dumps(spec, sort_keys=True, separators=(',', ':'))
    return 'sha256:' + hashlib.sha256(text.encode()).hexdigest()[:16]


def spec_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """Top-level parts of two specs that differ (e.g. ``['chat_template', 'head']``)."""
    keys = set(recorded) | set(current)
    return sorted(k for k in keys if recorded.get(k) != current.get(k))


def manifest_spec(manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """Recompute, with this code, the spec for the choices a manifest records."""
    return contract_spec(str(manifest['prompt_id']), str(manifest['chat_template']),
                         str(manifest['view']), manifest.get('modalities') or None,
                         str(manifest.get('label_set') or ''))


def check_contract(path: str, manifest: Mapping[str, Any]) -> None:
    """Refuse a bundle whose recorded contract hash differs from this code's.

    Raises:
        BundleMismatchError: naming the bundle's hash, this code's hash and the
            parts that differ.
    """
    recorded_hash = manifest.get('contract_hash')
    if not recorded_hash:
        raise BundleMismatchError(
            f'bundle {path} records no contract hash (made by an older emotion_ros); this '
            'emotion_ros needs one: re-export it from its run with `python -m training export`')
    try:
        current = manifest_spec(manifest)
    except BundleMismatchError as exc:
        raise BundleMismatchError(f'bundle {path} (contract {recorded_hash}) cannot be '
                                  f'served: {exc}') from None
    current_hash = contract_hash(current)
    if current_hash != recorded_hash:
        recorded = manifest.get('contract') or {}
        parts = spec_differences(recorded, current)
        why = ''
        if 'audio_preprocessing' in parts:
            why = (f' The audio preprocessing changed: the bundle was trained on audio '
                   f'preprocessed as {_describe_audio(recorded.get("audio_preprocessing"))}, '
                   f'this emotion_ros gives the audio encoder '
                   f'{_describe_audio(current.get("audio_preprocessing"))}.')
        raise BundleMismatchError(
            f'bundle {path} was trained under contract {recorded_hash}, this emotion_ros '
            f'computes contract {current_hash} for the same settings (prompt '
            f'{manifest["prompt_id"]!r}, template {manifest["chat_template"]!r}, view '
            f'{manifest["view"]!r}); parts that differ: {parts or "unknown"}. The weights '
            'would be read with another meaning: retrain, or use the emotion_ros the bundle '
            f'was made with.{why}')


def _describe_audio(pre: Any) -> str:
    """A one-line description of an ``audio_preprocessing`` spec part."""
    if not isinstance(pre, Mapping):
        return ('an unrecorded preprocessing (before it was part of the contract: scipy '
                'resample_poly in training, linear interpolation without anti-aliasing on the '
                'robot)')
    resampler = pre.get('resampler')
    method = resampler.get('method') if isinstance(resampler, Mapping) else resampler
    return f'{pre.get("sample_rate")} Hz, {pre.get("channels")}, resampled by {method}'
