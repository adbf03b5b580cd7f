"""The audio-visual model's inputs and forward: one convention for training and serving.

Per person the language model receives, in this order and only for what is
present (a missing modality contributes **no tokens**, not zeros):

* ``Person: <image>``: LLaVA's image tokens of the person view (vision tower +
  LLaVA's projector, as the llava backend);
* ``Motion: <video>``: a few temporal tokens from a short clip of that
  person's crops: each frame through the same vision tower and projector,
  averaged over patches, a temporal projector, pooled over time to
  ``video_tokens`` tokens;
* ``Voice: <audio>``: a frozen speech encoder of the HuBERT / wav2vec2 /
  WavLM family (transformers) on a 16 kHz window, pooled over time to
  ``audio_tokens`` tokens, a learned temporal position added, projected by
  the audio projector (the position goes in before the non-linear projector:
  attention sums tokens, so only position-dependent features keep a rising
  voice apart from a falling one);
* ``Words: "..."``: the transcript of what was said, as text.

:func:`encode_av` turns a prompt (plus, in training, its answer) into token
ids where modality slots hold negative sentinels; :meth:`AudioVisualModel.
embed` replaces the sentinels by the modality features. Training, scoring on
the robot and explanation generation all call these two functions, so
features are inserted at the same places in every mode (Emotion-LLaMA's code
inserts them differently in training and generation; this does not).

The score head (26 categories + VAD) and the discrete head (few-class
datasets, :mod:`emotion_ros.llm.labels`) read the hidden state of the last
token of the score primer, as in the llava backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.errors import ConfigError, InputError, ModelLoadError
from emotion_ros.llm.contract import SCORE_PRIMER, VAD_MAX, VAD_MIN
from emotion_ros.llm.encoding import positions_from_mask
from emotion_ros.llm.head import apply_head, build_discrete_head, build_score_head
from emotion_ros.llm.labels import label_set as get_label_set
from emotion_ros.llm.scoring import core_llava
from emotion_ros.llm.templates import AUDIO_PLACEHOLDER, get_template, IMAGE_PLACEHOLDER
from emotion_ros.llm.templates import VIDEO_PLACEHOLDER
from emotion_ros.llm.weights import load_strict

IGNORE_INDEX = -100
AUDIO_SAMPLE_RATE = SAMPLE_RATE  # the models' audio rate (emotion_ros.audio.preprocess)
MODALITIES = ('image', 'video', 'audio', 'transcript')
# Token-id sentinels of modality slots in encoded prompts (never valid vocabulary ids).
SENTINELS: Dict[str, int] = {'image': -1, 'video': -2, 'audio': -3}
_PLACEHOLDERS = {IMAGE_PLACEHOLDER: 'image', VIDEO_PLACEHOLDER: 'video',
                 AUDIO_PLACEHOLDER: 'audio'}
_SPLIT = re.compile('(' + '|'.join(re.escape(p) for p in _PLACEHOLDERS) + ')')
# How each present modality appears in the prompt, in this order.
SEGMENTS: Dict[str, str] = {
    'image': 'Person: ' + IMAGE_PLACEHOLDER + '\n',
    'video': 'Motion: ' + VIDEO_PLACEHOLDER + '\n',
    'audio': 'Voice: ' + AUDIO_PLACEHOLDER + '\n',
    'transcript': 'Words: "{transcript}"\n',
}
TRANSCRIPT_MAX_CHARS = 300


@dataclasses.dataclass(frozen=True)
class ModalityLayout:
    """What the audio-visual model reads and how many tokens each modality becomes."""

    image_tokens: int
    video_tokens: int = 4
    video_frames: int = 8
    audio_tokens: int = 4
    audio_window_s: float = 4.0
    audio_encoder_type: str = 'hubert'
    audio_hidden: int = 0

    def to_dict(self) -> Dict[str, Any]:
        """The manifest / contract-hash form (plain JSON)."""
        out: Dict[str, Any] = {'kind': 'audio_visual', 'inputs': list(MODALITIES),
                               'segments': dict(SEGMENTS), 'sentinels': dict(SENTINELS),
                               'audio_sample_rate': AUDIO_SAMPLE_RATE,
                               'audio_normalize': 'zero mean, unit variance per window',
                               'audio_pooling': 'adaptive average over encoder frames',
                               'video_pooling': 'patch mean, projector, adaptive average '
                                                'over frames',
                               'transcript_max_chars': TRANSCRIPT_MAX_CHARS}
        out.update(dataclasses.asdict(self))
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> 'ModalityLayout':
        """Read the layout back from a manifest."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclasses.dataclass
class AVInputs:
    """One person's inputs; any of them may be None (that modality is then absent)."""

    image: Optional[np.ndarray] = None  # rendered person view, (H, W, 3) uint8
    frames: Optional[Sequence[np.ndarray]] = None  # person crops of a short clip
    audio: Optional[np.ndarray] = None  # mono float32 at 16 kHz
    transcript: Optional[str] = None

    def present(self) -> Tuple[str, ...]:
        """The modalities that carry something, in prompt order."""
        out = []
        if self.image is not None:
            out.append('image')
        if self.frames is not None and len(self.frames) > 0:
            out.append('video')
        if self.audio is not None and len(self.audio) > 0:
            out.append('audio')
        if self.transcript:
            out.append('transcript')
        return tuple(out)

    def without(self, *modalities: str) -> 'AVInputs':
        """A copy with some modalities removed (ablations)."""
        return AVInputs(image=None if 'image' in modalities else self.image,
                        frames=None if 'video' in modalities else self.frames,
                        audio=None if 'audio' in modalities else self.audio,
                        transcript=None if 'transcript' in modalities else self.transcript)


def render_av_prompt(template_id: str, question: str, present: Sequence[str],
                     transcript: str = '') -> str:
    """The prompt text with one placeholder per present modality (the media block).

    The chat template's ``<image>\\n`` is replaced by the segments of the
    present modalities, in :data:`MODALITIES` order.

    Raises:
        ConfigError: for an unknown template or one without an image placeholder.
        InputError: when nothing at all is present.
    """
    template = get_template(template_id)
    if IMAGE_PLACEHOLDER + '\n' not in template.prompt:
        raise ConfigError(f'chat template {template_id!r} has no "<image>\\n" to put the '
                          'media block at')
    if not present:
        raise InputError('a person needs at least one of image, video, audio or transcript',
                         kind='no_modality')
    block = ''
    for name in MODALITIES:
        if name in present:
            segment = SEGMENTS[name]
            if name == 'transcript':
                text = ' '.join(transcript.split())[:TRANSCRIPT_MAX_CHARS].replace('"', "'")
                segment = segment.replace('{transcript}', text)
            block += segment
    prompt = template.prompt.replace('{question}', '\0')
    prompt = prompt.replace(IMAGE_PLACEHOLDER + '\n', block, 1)
    return prompt.replace('\0', question)


@dataclasses.dataclass(frozen=True)
class EncodedAV:
    """Token ids with modality sentinels, labels, and where the heads read."""

    input_ids: List[int]
    labels: List[int]
    score_index: int


def _tokens(tokenizer: Any, text: str, special: bool) -> List[int]:
    return list(tokenizer(text, add_special_tokens=special)['input_ids'])


def encode_av(tokenizer: Any, template_id: str, prompt: str, counts: Mapping[str, int],
              answer: Optional[str] = None, mode: str = 'score',
              max_seq_len: int = 0) -> EncodedAV:
    """Tokenise a rendered prompt (and answer): THE encoding of training and serving.

    The prompt is split at its placeholders; text pieces are tokenised
    separately (the first with the BOS token), each placeholder becomes
    ``counts[modality]`` sentinel ids. Then, for ``mode='score'`` (and in
    training), the answer prefix + score primer follow as one piece (the
    heads read its last token), then the rest of the answer and EOS. For
    ``mode='generate'`` the ids end with the prompt (explanations).

    Raises:
        InputError: (kind 'answer_tokens') for an answer that does not start
            with the score primer or leaves no tokens after it, or a sample
            longer than ``max_seq_len``.
    """
    template = get_template(template_id)
    ids: List[int] = []
    first = True
    for piece in _SPLIT.split(prompt):
        if piece in _PLACEHOLDERS:
            name = _PLACEHOLDERS[piece]
            ids.extend([SENTINELS[name]] * int(counts[name]))
        elif piece:
            ids.extend(_tokens(tokenizer, piece, first))
            first = False
    labels = [IGNORE_INDEX] * len(ids)
    if mode == 'generate':
        return EncodedAV(ids, labels, len(ids) - 1)
    primer = _tokens(tokenizer, template.answer_prefix + SCORE_PRIMER, False)
    ids += primer
    score_index = len(ids) - 1
    labels += primer
    if answer is not None:
        if not answer.startswith(SCORE_PRIMER):
            raise InputError(f'answer {answer!r} does not start with {SCORE_PRIMER!r}',
                             kind='answer_tokens')
        rest = _tokens(tokenizer, answer[len(SCORE_PRIMER):], False)
        if not rest:
            raise InputError(f'answer {answer!r} has no tokens after the primer',
                             kind='answer_tokens')
        if tokenizer.eos_token_id is None:
            raise InputError('the tokenizer has no EOS token', kind='answer_tokens')
        rest.append(int(tokenizer.eos_token_id))
        ids += rest
        labels += rest
    if max_seq_len and len(ids) > max_seq_len:
        raise InputError(f'a sample has {len(ids)} tokens, more than max_seq_len '
                         f'{max_seq_len}; truncating would cut the answer', kind='answer_tokens')
    return EncodedAV(ids, labels, score_index)


def normalize_audio(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (what wav2vec2-family feature extractors do), float32."""
    x = np.asarray(audio, np.float32).reshape(-1)
    if not np.isfinite(x).all():
        raise InputError('audio holds NaN or infinite samples', kind='audio')
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def collate_av(items: Sequence[AVInputs], encoded: Sequence[EncodedAV], pad_id: int,
               pixel_fn: Any, layout: ModalityLayout) -> Dict[str, Any]:
    """Left-pad encoded persons and stack their modality inputs into one batch.

    ``pixel_fn(list of uint8 views)`` is the image processor path
    (:func:`emotion_ros.llm.encoding.pixel_values_for`). Returns tensors only
    (empty ones for absent modalities), so the batch moves to a device whole.
    """
    length = max(len(e.input_ids) for e in encoded)
    batch = len(encoded)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    score_index = torch.zeros(batch, dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[row, length - n:] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, length - n:] = 1
        labels[row, length - n:] = torch.tensor(e.labels, dtype=torch.long)
        score_index[row] = length - n + e.score_index
    images = [it.image for it in items if it.image is not None]
    frames: List[np.ndarray] = []
    video_lengths = []
    for it in items:
        clip = list(it.frames) if it.frames is not None else []
        if len(clip) > layout.video_frames:  # evenly spaced frames of a longer clip
            pick = np.linspace(0, len(clip) - 1, layout.video_frames).round().astype(int)
            clip = [clip[i] for i in pick]
        frames.extend(clip)
        video_lengths.append(len(clip))
    window = int(round(layout.audio_window_s * AUDIO_SAMPLE_RATE))
    waves = [normalize_audio(it.audio[-window:]) for it in items
             if it.audio is not None and len(it.audio) > 0]
    audio_lengths = [len(w) for w in waves]
    audio = torch.zeros((len(waves), max(audio_lengths, default=0)), dtype=torch.float32)
    for row, wave in enumerate(waves):
        audio[row, :len(wave)] = torch.from_numpy(wave)
    empty = torch.zeros((0, 3, 1, 1))
    return {
        'input_ids': input_ids, 'attention_mask': mask, 'labels': labels,
        'score_index': score_index,
        'pixel_values': pixel_fn(images) if images else empty,
        'video_pixels': pixel_fn(frames) if frames else empty,
        'video_lengths': torch.tensor(video_lengths, dtype=torch.long),
        'audio': audio, 'audio_lengths': torch.tensor(audio_lengths, dtype=torch.long),
    }


class AudioVisualModel(nn.Module):
    """LLaVA (with LoRA) + frozen speech encoder + per-modality projectors + heads.

    Args:
        llava: a (peft-wrapped) ``LlavaForConditionalGeneration``.
        audio_encoder: a transformers HuBERT / wav2vec2 / WavLM model (frozen
            here), or None for a model without audio.
        layout: token counts per modality.
        head_hidden: width of the score and discrete heads.
        label_set: name of the discrete label set ('' for no discrete head).
    """

    def __init__(self, llava: Any, audio_encoder: Any, layout: ModalityLayout,
                 head_hidden: int, label_set: str = '', head_dropout: float = 0.0) -> None:
        """Build projectors and heads for the LLM's hidden size."""
        super().__init__()
        self.llava = llava
        self.layout = layout
        core = core_llava(llava)
        hidden = int(core.config.text_config.hidden_size)
        self.hidden_size = hidden
        self.audio_encoder = audio_encoder
        if audio_encoder is not None:
            audio_encoder.requires_grad_(False)
            audio_encoder.eval()
            audio_dim = int(audio_encoder.config.hidden_size)
            self.audio_projector = nn.Sequential(nn.Linear(audio_dim, hidden), nn.GELU(),
                                                 nn.Linear(hidden, hidden))
            # Added BEFORE the non-linear projector: the language model's attention sums
            # tokens, so only position-dependent features keep 'rising' and 'falling' apart.
            self.audio_position = nn.Parameter(torch.randn(layout.audio_tokens, audio_dim))
        else:
            self.audio_projector = None
            self.audio_position = None
        self.video_projector = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(),
                                             nn.Linear(hidden, hidden))
        self.video_position = nn.Parameter(torch.randn(layout.video_tokens, hidden) *
                                           hidden ** -0.5)
        self.head = build_score_head(hidden, head_hidden, head_dropout)
        self.label_set = label_set
        self.discrete_head = build_discrete_head(
            hidden, head_hidden, len(get_label_set(label_set)), head_dropout) \
            if label_set else None

    def train(self, mode: bool = True) -> 'AudioVisualModel':
        """Switch modes; the frozen audio encoder always stays in eval mode."""
        super().train(mode)
        if self.audio_encoder is not None:
            self.audio_encoder.eval()
        return self

    # -- features -------------------------------------------------------------------------

    def _vision(self, pixels: torch.Tensor) -> torch.Tensor:
        core = core_llava(self.llava)
        out = core.model.get_image_features(
            pixel_values=pixels.to(core.dtype),
            vision_feature_layer=core.config.vision_feature_layer,
            vision_feature_select_strategy=core.config.vision_feature_select_strategy)
        feats = out.pooler_output if hasattr(out, 'pooler_output') else out
        if isinstance(feats, (list, tuple)):
            feats = torch.stack(list(feats))
        return feats  # [N, P, H]

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """LLaVA image tokens, ``[N * image_tokens, H]``."""
        feats = self._vision(pixels)
        if feats.shape[1] != self.layout.image_tokens:
            raise ModelLoadError(f'the vision tower gives {feats.shape[1]} image tokens, the '
                                 f'layout says {self.layout.image_tokens}')
        return feats.reshape(-1, feats.shape[-1])

    def video_features(self, pixels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Temporal tokens of each clip, ``[clips * video_tokens, H]``.

        Each frame goes through the vision tower and LLaVA's projector (the
        image path), is averaged over patches; frames are pooled over time to
        ``video_tokens``, get a temporal position and pass the video projector.
        """
        per_frame = self._vision(pixels).mean(1).float()  # [F, H]
        out = []
        start = 0
        for n in lengths.tolist():
            if n == 0:
                continue
            clip = per_frame[start:start + n].t().unsqueeze(0)  # [1, H, n]
            pooled = F.adaptive_avg_pool1d(clip, self.layout.video_tokens)[0].t()
            out.append(self.video_projector(pooled + self.video_position))
            start += n
        return torch.cat(out)

    def audio_features(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pooled, projected speech-encoder tokens, ``[windows * audio_tokens, H]``."""
        if self.audio_encoder is None:
            raise InputError('this model has no audio encoder but was given audio',
                             kind='audio')
        # Windows of equal length (the usual case: fixed windows) run as one batch.
        out: List[Optional[torch.Tensor]] = [None] * len(lengths)
        groups: Dict[int, List[int]] = {}
        for row, n in enumerate(lengths.tolist()):
            groups.setdefault(int(n), []).append(row)
        for n, rows in groups.items():
            waves = audio[rows, :n].to(self.audio_encoder.dtype)
            with torch.no_grad():
                enc = self.audio_encoder(waves).last_hidden_state
            pooled = F.adaptive_avg_pool1d(enc.float().transpose(1, 2),
                                           self.layout.audio_tokens).transpose(1, 2)
            tokens = self.audio_projector(pooled + self.audio_position)
            for k, row in enumerate(rows):
                out[row] = tokens[k]
        return torch.stack([t for t in out if t is not None]).reshape(-1, self.hidden_size)

    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``inputs_embeds`` with every modality slot filled: THE insertion of features.

        Raises:
            InputError: when the slots and the given features do not add up.
        """
        core = core_llava(self.llava)
        ids = batch['input_ids']
        embeds = core.get_input_embeddings()(ids.clamp(min=0))
        fills = []
        if batch['pixel_values'].shape[0]:
            fills.append(('image', self.image_features(batch['pixel_values'])))
        if batch['video_pixels'].shape[0]:
            fills.append(('video', self.video_features(batch['video_pixels'],
                                                       batch['video_lengths'])))
        if batch['audio'].shape[0]:
            fills.append(('audio', self.audio_features(batch['audio'],
                                                       batch['audio_lengths'])))
        filled = {name for name, _ in fills}
        for name, sentinel in SENTINELS.items():
            slots = ids == sentinel
            if name not in filled:
                if slots.any():
                    raise InputError(f'the prompt has {name} slots but no {name} was given',
                                     kind='modality')
                continue
            feats = dict(fills)[name]
            if int(slots.sum()) != feats.shape[0]:
                raise InputError(f'{int(slots.sum())} {name} slots but {feats.shape[0]} '
                                 f'{name} tokens', kind='modality')
            embeds = embeds.masked_scatter(slots.unsqueeze(-1),
                                           feats.to(embeds.dtype))
        return embeds

    def hidden_states(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Last-layer hidden states ``[B, T, H]`` of the language model (no LM head)."""
        core = core_llava(self.llava)
        mask = batch['attention_mask']
        out = core.model.language_model(inputs_embeds=self.embed(batch), attention_mask=mask,
                                        position_ids=positions_from_mask(mask),
                                        use_cache=False)
        return out.last_hidden_state

    # -- training and scoring ---------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                score_index: torch.Tensor, pixel_values: torch.Tensor,
                video_pixels: torch.Tensor, video_lengths: torch.Tensor,
                audio: torch.Tensor, audio_lengths: torch.Tensor,
                labels: Optional[torch.Tensor] = None,
                category_targets: Optional[torch.Tensor] = None,
                vad_targets: Optional[torch.Tensor] = None,
                discrete_targets: Optional[torch.Tensor] = None,
                lm_loss_weight: float = 1.0, score_loss_weight: float = 1.0,
                vad_loss_weight: float = 1.0,
                discrete_loss_weight: float = 1.0) -> Dict[str, torch.Tensor]:
        """One pass: heads at ``score_index``; with labels, the joint loss.

        Raises:
            InputError: (kind 'answer_tokens') when a batch with labels holds
                no answer token.
        """
        batch = {'input_ids': input_ids, 'attention_mask': attention_mask,
                 'pixel_values': pixel_values, 'video_pixels': video_pixels,
                 'video_lengths': video_lengths, 'audio': audio, 'audio_lengths': audio_lengths}
        hidden = self.hidden_states(batch)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        read = hidden[rows, score_index]
        logits, vad = apply_head(self.head, read)
        result: Dict[str, torch.Tensor] = {'category_logits': logits, 'vad': vad}
        if self.discrete_head is not None:
            result['discrete_logits'] = self.discrete_head(read.float())
        if labels is None:
            return result
        core = core_llava(self.llava)
        shift = labels[:, 1:]
        supervised = shift != IGNORE_INDEX
        n_tokens = int(supervised.sum())
        if n_tokens == 0:
            raise InputError('a training batch has no answer tokens', kind='answer_tokens')
        lm_logits = core.lm_head(hidden[:, :-1][supervised]).float()
        lm_loss = F.cross_entropy(lm_logits, shift[supervised])
        zero = lm_loss.new_zeros(())
        cls_loss = zero
        if category_targets is not None:
            cls_loss = F.binary_cross_entropy_with_logits(logits, category_targets.float())
        vad_loss = zero
        if vad_targets is not None:
            known = torch.isfinite(vad_targets)
            if known.any():
                scale = VAD_MAX - VAD_MIN
                vad_loss = F.smooth_l1_loss((vad[known] - VAD_MIN) / scale,
                                            (vad_targets[known] - VAD_MIN) / scale, beta=0.1)
        discrete_loss = zero
        if self.discrete_head is not None and discrete_targets is not None:
            known = discrete_targets >= 0
            if known.any():
                discrete_loss = F.cross_entropy(result['discrete_logits'][known],
                                                discrete_targets[known])
        loss = lm_loss_weight * lm_loss + score_loss_weight * (
            cls_loss + vad_loss_weight * vad_loss) + discrete_loss_weight * discrete_loss
        result.update(loss=loss, lm_loss=lm_loss.detach(), cls_loss=cls_loss.detach(),
                      vad_loss=vad_loss.detach(), discrete_loss=discrete_loss.detach(),
                      answer_tokens=lm_loss.new_tensor(n_tokens))
        return result

    def generate(self, batch: Mapping[str, torch.Tensor], max_new_tokens: int,
                 pad_token_id: int, eos_token_id: Optional[int]) -> torch.Tensor:
        """Greedy generation from the same ``inputs_embeds`` (explanations); new tokens only."""
        core = core_llava(self.llava)
        mask = batch['attention_mask']
        return core.generate(inputs_embeds=self.embed(batch), attention_mask=mask,
                             max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad_token_id, eos_token_id=eos_token_id)

    def extra_state_dict(self) -> Dict[str, torch.Tensor]:
        """Projectors, positions and heads (what a bundle stores beside the LoRA adapter)."""
        prefixes = ('audio_projector.', 'audio_position', 'video_projector.',
                    'video_position', 'head.', 'discrete_head.')
        return {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()
                if k.startswith(prefixes)}

    def load_extra_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`extra_state_dict` wrote (strict on names and shapes).

        Raises:
            ModelLoadError: naming missing, unexpected or mis-shaped tensors.
        """
        names = set(self.extra_state_dict())
        live = self.state_dict(keep_vars=True)
        load_strict({n: live[n] for n in names}, state, 'multimodal weights')


def build_audio_encoder(name_or_path: str, dtype: Any = None) -> Any:
    """Load a frozen HuBERT / wav2vec2 / WavLM encoder (folder or hub id) with transformers.

    Raises:
        ModelLoadError: when it cannot be loaded or is not a speech encoder.
    """
    from transformers import AutoConfig, AutoModel
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'cannot load audio encoder {name_or_path!r}: {exc}') from exc
    if config.model_type not in ('hubert', 'wav2vec2', 'wavlm', 'data2vec-audio'):
        raise ModelLoadError(f'audio encoder {name_or_path!r} is a {config.model_type!r} '
                             'model; expected hubert, wav2vec2, wavlm or data2vec-audio')
    try:
        kwargs = {'dtype': dtype} if dtype is not None else {}
        model = AutoModel.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'cannot load audio encoder {name_or_path!r}: {exc}') from exc
    return model.eval().requires_grad_(False)


def audio_fingerprint(config: Any) -> str:
    """A hash of a speech encoder's architecture (checked when the robot loads it)."""
    keys = ('model_type', 'hidden_size', 'num_hidden_layers', 'num_attention_heads',
            'intermediate_size', 'conv_dim', 'conv_stride', 'conv_kernel')
    values = {k: getattr(config, k, None) for k in keys}
    text = json.dumps(values, sort_keys=True, default=list)
    return 'sha256:' + hashlib.sha256(text.encode()).hexdigest()[:16]
