"""The score head: its layout, the VAD mapping and the discrete-emotion heads (torch inside).

The score head is an MLP from the LLM's hidden state at the end of the score
primer (``Emotions:``) to 26 category logits followed by 3 VAD values; VAD is
``1 + 9 * sigmoid(x)`` on EMOTIC's 1-10 scale. The discrete head (audio-visual
model) maps the same hidden state to one of a dataset's few classes; each
class set is documented with its mapping onto the 26 categories in
:mod:`emotion_ros.llm.labels`. :data:`HEAD_SPEC` is part of the contract hash:
changing the layout or the VAD mapping refuses old bundles by name.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

from emotion_ros.llm.contract import NUM_CATEGORIES, VAD_MAX, VAD_MIN

# The head predicts 26 category logits followed by 3 VAD values.
HEAD_OUTPUTS = NUM_CATEGORIES + 3
VAD_HEAD_MAPPING = f'vad = {VAD_MIN:g} + {VAD_MAX - VAD_MIN:g} * sigmoid(x)'
HEAD_SPEC: Dict[str, Any] = {
    'layout': ['category_logits[26]', 'vad[3]'],
    'category_activation': 'sigmoid',
    'vad_mapping': VAD_HEAD_MAPPING,
    'reads': 'last hidden state of the score primer token',
    'mlp': 'linear-gelu-dropout-linear',
}


def build_score_head(hidden_size: int, head_hidden: int, dropout: float = 0.0) -> Any:
    """The score head: an MLP from the LLM hidden state to 26 category logits + 3 VAD values."""
    import torch
    return torch.nn.Sequential(
        torch.nn.Linear(hidden_size, head_hidden),
        torch.nn.GELU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(head_hidden, HEAD_OUTPUTS),
    )


def apply_head(head: Any, hidden: Any) -> Tuple[Any, Any]:
    """Run the head in float32 on hidden states ``[B, H]``.

    Returns:
        (category logits ``[B, 26]``, VAD ``[B, 3]`` on 1-10).
    """
    out = head(hidden.float())
    logits = out[:, :NUM_CATEGORIES]
    vad = VAD_MIN + (VAD_MAX - VAD_MIN) * out[:, NUM_CATEGORIES:].sigmoid()
    return logits, vad


def build_discrete_head(hidden_size: int, head_hidden: int, num_classes: int,
                        dropout: float = 0.0) -> Any:
    """The discrete-emotion head: an MLP from the same hidden state to ``num_classes`` logits."""
    import torch
    return torch.nn.Sequential(
        torch.nn.Linear(hidden_size, head_hidden),
        torch.nn.GELU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(head_hidden, num_classes),
    )
