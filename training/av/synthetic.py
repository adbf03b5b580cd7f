"""A synthetic audio-visual task whose label needs BOTH modalities (tests, smoke runs).

Each clip shows a person-like figure wearing a red or a blue top (the image
attribute) and carries one second of a voice-like tone whose pitch rises or
falls (the tone pattern). The class is the pair:

=========  =======  ========  ===============================
top        tone     class     EMOTIC categories (via mer2023)
=========  =======  ========  ===============================
red        rising   happy     Happiness
red        falling  angry     Anger
blue       rising   surprise  Surprise
blue       falling  sad       Sadness
=========  =======  ========  ===============================

so vision alone or audio alone can tell at best one of two classes apart
(50 % accuracy on balanced data) and only both reach 100 %. Nuisances: the
figure's position, size and skin/background colours, the tone's base pitch,
loudness, harmonics and noise. It is written in the audio-visual JSONL layout
(:mod:`training.av.data`), so it trains through the same readers as real data.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE as AUDIO_SAMPLE_RATE, write_wav
from emotion_ros.errors import ConfigError

LABEL_SET = 'mer2023'
COMBOS: Dict[Tuple[str, str], str] = {
    ('red', 'rising'): 'happy', ('red', 'falling'): 'angry',
    ('blue', 'rising'): 'surprise', ('blue', 'falling'): 'sad',
}
TOPS = {'red': (200, 30, 30), 'blue': (30, 50, 200)}


def render_figure(rng: np.random.Generator, top: str, size: int = 64) -> np.ndarray:
    """A square RGB image of a figure (head, top in the given colour) on a random background."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = rng.integers(60, 200, 3)
    image += rng.integers(0, 20, (size, size, 1)).astype(np.uint8)
    w = int(rng.integers(size // 3, size // 2))
    x = int(rng.integers(0, size - w))
    head = w // 2
    y = int(rng.integers(0, size // 4))
    skin = rng.integers(120, 230, 3)
    image[y:y + head, x + w // 4:x + w // 4 + head] = skin
    colour = np.asarray(TOPS[top]) + rng.integers(-25, 26, 3)
    image[y + head:size, x:x + w] = np.clip(colour, 0, 255)
    return image


def render_tone(rng: np.random.Generator, pattern: str, seconds: float = 1.0) -> np.ndarray:
    """A voice-like tone (fundamental + harmonics) whose pitch rises or falls, float32."""
    n = int(seconds * AUDIO_SAMPLE_RATE)
    t = np.arange(n) / AUDIO_SAMPLE_RATE
    low = rng.uniform(140.0, 220.0)
    high = low * rng.uniform(1.8, 2.4)
    start, end = (low, high) if pattern == 'rising' else (high, low)
    freq = start + (end - start) * t / seconds
    phase = 2 * np.pi * np.cumsum(freq) / AUDIO_SAMPLE_RATE
    wave = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    envelope = np.minimum(1.0, np.minimum(t, seconds - t) * 20)
    wave = wave * envelope * rng.uniform(0.2, 0.8)
    wave += rng.normal(0, 0.02, n)
    return wave.astype(np.float32)


def make_items(n: int, seed: int) -> List[Dict[str, Any]]:
    """``n`` balanced items in memory: image, audio, top, tone, label."""
    rng = np.random.default_rng(seed)
    combos = list(COMBOS)
    items = []
    for i in range(n):
        top, tone = combos[i % len(combos)]
        items.append({'image': render_figure(rng, top), 'audio': render_tone(rng, tone),
                      'top': top, 'tone': tone, 'label': COMBOS[(top, tone)]})
    order = rng.permutation(n)
    return [items[i] for i in order]


def make_synthetic_av(root: str, sizes: Optional[Dict[str, int]] = None, seed: int = 0,
                      overwrite: bool = False) -> Dict[str, int]:
    """Write the task in the audio-visual JSONL layout (one ``<split>.av.jsonl`` per split).

    Raises:
        ConfigError: when ``root`` already holds the dataset and ``overwrite`` is false.
    """
    from PIL import Image
    sizes = sizes or {'train': 400, 'val': 100, 'test': 200}
    if any(os.path.exists(os.path.join(root, f'{s}.av.jsonl')) for s in sizes) and not overwrite:
        raise ConfigError(f'{root} already holds a dataset; pass --overwrite to replace it')
    media = os.path.join(root, 'media')
    os.makedirs(media, exist_ok=True)
    for k, (split, n) in enumerate(sizes.items()):
        lines = []
        for i, item in enumerate(make_items(n, seed * 1000 + k)):
            name = f'{split}_{i:05d}'
            Image.fromarray(item['image']).save(os.path.join(media, name + '.png'))
            write_wav(os.path.join(media, name + '.wav'), item['audio'], AUDIO_SAMPLE_RATE)
            lines.append({'id': name, 'image': f'media/{name}.png', 'audio': f'media/{name}.wav',
                          'label': item['label'], 'label_set': LABEL_SET,
                          'top': item['top'], 'tone': item['tone']})
        with open(os.path.join(root, f'{split}.av.jsonl'), 'w', encoding='utf-8') as f:
            for line in lines:
                f.write(json.dumps(line) + '\n')
    return dict(sizes)


def add_arguments(parser: Any) -> None:
    """Arguments of ``make-synthetic-av``."""
    parser.add_argument('out', help='folder to write the dataset to')
    parser.add_argument('--train', type=int, default=400, help='training clips (default 400)')
    parser.add_argument('--val', type=int, default=100, help='validation clips (default 100)')
    parser.add_argument('--test', type=int, default=200, help='test clips (default 200)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing dataset')


def run(args: Any) -> int:
    """Run ``make-synthetic-av`` from parsed arguments."""
    sizes = make_synthetic_av(args.out, {'train': args.train, 'val': args.val,
                                         'test': args.test}, args.seed, args.overwrite)
    print(json.dumps({'out': os.path.abspath(args.out), 'clips': sizes}))
    return 0
