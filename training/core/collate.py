"""Tokenisation of training samples with the loss on answer tokens only.

A sample becomes ``prompt tokens + answer tokens + EOS``; labels are -100 on
the prompt (and image tokens) so only the answer is learnt, as in LLaVA. The
score head reads the token that ends the answer's fixed start ``Emotions:``
(``score_index``), the same position the robot scores in one forward pass.
The answer is located by tokenising the prompt alone (exactly what the robot
feeds the model) and checking that the full text's tokens start with it; the
rest must decode back to the answer. Anything else fails the run loudly with
:class:`AnswerTokensError`: LLaVA's own trainer only *warns* ("tokenization
mismatch") and then trains on a loss of zero, which wastes a GPU-week
without anyone noticing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence

import numpy as np

from emotion_ros.errors import InputError
from emotion_ros.llm.contract import SCORE_PRIMER
from emotion_ros.llm.encoding import encode_prompt, image_token_count, pixel_values_for
from emotion_ros.llm.templates import CHAT_TEMPLATES, render_prompt, scoring_prompt

IGNORE_INDEX = -100


class AnswerTokensError(InputError):
    """The answer tokens of a sample cannot be located (the loss would silently be zero)."""

    def __init__(self, message: str) -> None:
        """Create the error with kind 'answer_tokens'."""
        super().__init__(message, kind='answer_tokens')


@dataclasses.dataclass(frozen=True)
class EncodedText:
    """Token ids of one sample, its labels and where the score head reads."""

    input_ids: List[int]
    labels: List[int]
    score_index: int  # the last token of prompt + 'Emotions:', where the score head reads


def encode_example(processor: Any, template_id: str, question: str, answer: str,
                   image_tokens: int, max_seq_len: int) -> EncodedText:
    """Tokenise prompt + answer and label only the answer (and EOS).

    Raises:
        AnswerTokensError: when the prompt's tokens are not a prefix of the
            full text's tokens (a merge across the boundary, e.g. a template
            ending in a space), when the located tokens do not decode back to
            the answer, when the answer is empty, or when the sample is longer
            than ``max_seq_len`` (truncation would cut the answer away).
    """
    tokenizer = processor.tokenizer
    template = CHAT_TEMPLATES[template_id]
    prompt = render_prompt(template_id, question)
    prompt_ids = encode_prompt(processor, prompt, image_tokens)
    full_text = prompt + template.answer_prefix + answer
    full_ids = encode_prompt(processor, full_text, image_tokens)
    if tokenizer.eos_token_id is None:
        raise AnswerTokensError('the tokenizer has no EOS token: the end of an answer cannot '
                                'be learnt')
    full_ids.append(int(tokenizer.eos_token_id))
    if full_ids[:len(prompt_ids)] != prompt_ids:
        cut = next(i for i, (a, b) in enumerate(zip(prompt_ids, full_ids)) if a != b) \
            if any(a != b for a, b in zip(prompt_ids, full_ids)) else len(prompt_ids)
        raise AnswerTokensError(
            f'answer tokens cannot be located: the prompt tokenises differently alone and '
            f'followed by the answer (first difference at token {cut}: '
            f'{tokenizer.convert_ids_to_tokens(prompt_ids[cut:cut + 3])} vs '
            f'{tokenizer.convert_ids_to_tokens(full_ids[cut:cut + 3])}); chat template '
            f'{template_id!r} probably ends with whitespace that merges into the answer')
    answer_ids = full_ids[len(prompt_ids):]
    if len(answer_ids) < 2:
        raise AnswerTokensError(f'answer {answer!r} produced no tokens')
    decoded = tokenizer.decode(answer_ids[:-1], skip_special_tokens=True)
    if ' '.join(decoded.split()) != ' '.join(answer.split()):
        raise AnswerTokensError(f'answer tokens cannot be located: the tokens after the '
                                f'prompt decode to {decoded!r}, expected {answer!r}')
    if len(full_ids) > max_seq_len:
        raise AnswerTokensError(f'a sample has {len(full_ids)} tokens ({image_tokens} of them '
                                f'image tokens), more than --max-seq-len {max_seq_len}; '
                                'truncating would cut the answer, raise --max-seq-len')
    if not answer.startswith(SCORE_PRIMER):
        raise AnswerTokensError(f'answer {answer!r} does not start with {SCORE_PRIMER!r}; the '
                                'score head has no position to read')
    primed_ids = encode_prompt(processor, scoring_prompt(template_id, question), image_tokens)
    if full_ids[:len(primed_ids)] != primed_ids:
        raise AnswerTokensError(f'the scoring position cannot be located: {SCORE_PRIMER!r} '
                                'tokenises differently alone and followed by the answer')
    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    return EncodedText(input_ids=full_ids, labels=labels, score_index=len(primed_ids) - 1)


class EmotionCollator:
    """Turns a list of :class:`training.emotic.samples.Sample` into a right-padded model batch.

    The batch holds ``input_ids``, ``attention_mask``, ``labels``,
    ``pixel_values``, ``score_index`` (the head's read position),
    ``category_targets`` ``[B, 26]``, ``vad_targets`` ``[B, 3]`` (NaN where
    unknown).
    """

    def __init__(self, processor: Any, template_id: str, max_seq_len: int) -> None:
        """Measure the image token count once; see :func:`encode_example`."""
        if template_id not in CHAT_TEMPLATES:
            raise InputError(f'chat_template: unknown template {template_id!r}', kind='config')
        self.processor = processor
        self.template_id = template_id
        self.max_seq_len = max_seq_len
        self.image_tokens = image_token_count(processor)
        self.pad_id = processor.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = processor.tokenizer.eos_token_id

    def __call__(self, samples: Sequence[Any]) -> Dict[str, Any]:
        """Collate samples into tensors.

        Raises:
            AnswerTokensError: see :func:`encode_example`.
        """
        import torch
        encoded = [encode_example(self.processor, self.template_id, s.prompt, s.answer,
                                  self.image_tokens, self.max_seq_len) for s in samples]
        length = max(len(e.input_ids) for e in encoded)
        batch = len(encoded)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e.input_ids)
            input_ids[row, :n] = torch.tensor(e.input_ids)
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(e.labels)
        return {
            'input_ids': input_ids,
            'attention_mask': attention_mask,
            'labels': labels,
            'pixel_values': pixel_values_for(self.processor, [s.image for s in samples]),
            'score_index': torch.tensor([e.score_index for e in encoded], dtype=torch.long),
            'category_targets': torch.from_numpy(
                np.stack([np.asarray(s.labels_26, np.float32) for s in samples])),
            'vad_targets': torch.tensor([list(s.vad) for s in samples], dtype=torch.float32),
        }
