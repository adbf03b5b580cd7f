"""Chat templates and prompt rendering shared by training and every LLM backend.

A template lays out one question (and, in training, its answer) for a base
model family; it is chosen by explicit id (training config, bundle manifest),
never guessed from the model name. The image placeholder ``<image>`` marks
where the person view's tokens go; the audio-visual model adds ``<video>``
and ``<audio>`` (see :mod:`emotion_ros.llm.multimodal`), all expanded by the
same code in training and on the robot.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

from emotion_ros.errors import ConfigError
from emotion_ros.llm.contract import SCORE_PRIMER

IMAGE_PLACEHOLDER = '<image>'
VIDEO_PLACEHOLDER = '<video>'
AUDIO_PLACEHOLDER = '<audio>'


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """How a question (and, in training, the answer) is laid out for one base model family.

    ``prompt`` holds ``{question}`` and the image placeholder; the answer is
    appended as ``answer_prefix + answer`` and ends with the tokenizer's EOS.
    """

    template_id: str
    prompt: str
    answer_prefix: str


CHAT_TEMPLATES: Dict[str, ChatTemplate] = {
    # What llava-hf/llava-1.5-*-hf document for inference.
    'llava-1.5': ChatTemplate('llava-1.5', 'USER: <image>\n{question} ASSISTANT:', ' '),
    # The Vicuna v1 system prompt LLaVA-1.5 was instruction-tuned with.
    'vicuna-v1': ChatTemplate(
        'vicuna-v1',
        'A chat between a curious human and an artificial intelligence assistant. The '
        "assistant gives helpful, detailed, and polite answers to the human's questions. "
        'USER: <image>\n{question} ASSISTANT:',
        ' '),
}
DEFAULT_CHAT_TEMPLATE = 'llava-1.5'


def get_template(template_id: str) -> ChatTemplate:
    """The template registered under ``template_id``.

    Raises:
        ConfigError: for an unknown template id (the known ones are listed).
    """
    if template_id not in CHAT_TEMPLATES:
        raise ConfigError(f'chat_template: unknown template {template_id!r}; '
                          f'known: {sorted(CHAT_TEMPLATES)}')
    return CHAT_TEMPLATES[template_id]


def render_prompt(template_id: str, question: str) -> str:
    """Put a question into a chat template (the image placeholder not yet expanded).

    Raises:
        ConfigError: for an unknown template id.
    """
    return get_template(template_id).prompt.format(question=question)


def scoring_prompt(template_id: str, question: str) -> str:
    """The text scored in one forward pass: the prompt followed by the answer's start."""
    return render_prompt(template_id, question) + get_template(template_id).answer_prefix + \
        SCORE_PRIMER
