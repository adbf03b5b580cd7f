"""A synthetic dataset in the EMOTIC CSV layout whose labels can really be learned.

For offline end-to-end runs (tests, the training demo) where EMOTIC itself
cannot be downloaded. Every image is a noisy scene with one or more "persons"
(rectangles); each person's labels are painted into their box:

* **categories**: the body holds a 5 x 6 grid of cells, one cell per category
  in contract order; a present category fills its cell with its own colour
  (26 hues, none of them the red of the person box), absent ones stay at the
  body's grey;
* **valence**: the grey level of the body (dark = 1 ... light = 10);
* **arousal**: the grey level of the head band (top of the box);
* **dominance**: the grey level of the legs band (bottom of the box) and,
  more loosely, the height of the box.

Categories are drawn with rates that loosely follow EMOTIC's imbalance
(Engagement common, Embarrassment rare) with a floor so that small splits
still have positives; VAD follows the categories (happy people get high
valence), plus noise, as in real data. Output is deterministic for a seed
(each split has its own random stream, so ``--train`` does not change val).
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.llm.contract import CATEGORIES, NUM_CATEGORIES, VAD_MAX, VAD_MIN
from emotion_ros.errors import ConfigError
from training.emotic.records import SPLITS

GENERATOR_VERSION = '1'
FOLDER = 'synthetic/images'
GRID_ROWS, GRID_COLS = 5, 6
HEAD_FRACTION = 0.18
LEGS_FRACTION = 0.18

# Rough share of persons per category in EMOTIC train, floored at 6 % so that
# small synthetic splits have positives everywhere. Not the real statistics.
CATEGORY_RATES: Dict[str, float] = {
    'Affection': 0.08, 'Anger': 0.06, 'Annoyance': 0.06, 'Anticipation': 0.27,
    'Aversion': 0.06, 'Confidence': 0.14, 'Disapproval': 0.06, 'Disconnection': 0.08,
    'Disquietment': 0.07, 'Doubt/Confusion': 0.06, 'Embarrassment': 0.06, 'Engagement': 0.5,
    'Esteem': 0.06, 'Excitement': 0.14, 'Fatigue': 0.06, 'Fear': 0.06, 'Happiness': 0.22,
    'Pain': 0.06, 'Peace': 0.11, 'Pleasure': 0.17, 'Sadness': 0.06, 'Sensitivity': 0.06,
    'Suffering': 0.06, 'Surprise': 0.06, 'Sympathy': 0.06, 'Yearning': 0.06,
}

# Plausible (valence, arousal, dominance) per category on 1-10; a person's VAD
# is the mean over their categories plus noise.
CATEGORY_VAD: Dict[str, Tuple[float, float, float]] = {
    'Affection': (8, 5, 6), 'Anger': (2, 8, 7), 'Annoyance': (3, 6, 5),
    'Anticipation': (6, 6, 6), 'Aversion': (3, 5, 5), 'Confidence': (7, 6, 8),
    'Disapproval': (3, 5, 6), 'Disconnection': (4, 3, 4), 'Disquietment': (3, 6, 4),
    'Doubt/Confusion': (4, 5, 4), 'Embarrassment': (3, 6, 3), 'Engagement': (6, 6, 6),
    'Esteem': (7, 5, 6), 'Excitement': (8, 8, 7), 'Fatigue': (4, 2, 3), 'Fear': (2, 8, 2),
    'Happiness': (9, 7, 7), 'Pain': (2, 6, 2), 'Peace': (8, 2, 6), 'Pleasure': (8, 5, 7),
    'Sadness': (2, 3, 3), 'Sensitivity': (5, 5, 4), 'Suffering': (1, 6, 2),
    'Surprise': (6, 8, 5), 'Sympathy': (6, 4, 5), 'Yearning': (5, 5, 4),
}


def _category_colors() -> np.ndarray:
    # Hues from 20 to 340 degrees: the red of the drawn person box stays unique.
    colors = []
    for k in range(NUM_CATEGORIES):
        hue = (20.0 + k * 320.0 / (NUM_CATEGORIES - 1)) / 360.0
        saturation = 0.9 if k % 2 == 0 else 0.7
        colors.append([int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, 0.95)])
    return np.array(colors, np.uint8)


CATEGORY_COLORS = _category_colors()


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
    """Where :func:`make_synthetic` wrote what."""

    root: str
    csv_paths: Dict[str, str]  # split -> emotic_pre/<split>.csv
    images_root: str  # root/emotic; CSV paths are Folder/Filename under it
    persons: Dict[str, int]
    images: Dict[str, int]
    seed: int


def grey_level(value: float) -> int:
    """Grey level (0-255) that encodes a VAD value on 1-10."""
    return int(round(40 + (value - VAD_MIN) / (VAD_MAX - VAD_MIN) * 190))


def sample_labels(rng: np.random.Generator) -> Tuple[List[str], Tuple[int, int, int]]:
    """Draw one person's categories (at least one) and integer VAD on 1-10."""
    rates = np.array([CATEGORY_RATES[c] for c in CATEGORIES])
    present = rng.random(NUM_CATEGORIES) < rates
    if not present.any():
        present[rng.choice(NUM_CATEGORIES, p=rates / rates.sum())] = True
    names = [c for c, keep in zip(CATEGORIES, present) if keep]
    prior = np.mean([CATEGORY_VAD[c] for c in names], axis=0)
    vad = np.clip(np.rint(prior + rng.normal(0.0, 1.0, 3)), VAD_MIN, VAD_MAX).astype(int)
    return names, (int(vad[0]), int(vad[1]), int(vad[2]))


def draw_person(image: np.ndarray, box: Tuple[int, int, int, int], categories: Sequence[str],
                vad: Sequence[float]) -> None:
    """Paint a person's labels into their box of an (H, W, 3) uint8 image, in place."""
    x1, y1, x2, y2 = box
    height = y2 - y1
    head = max(2, int(round(height * HEAD_FRACTION)))
    legs = max(2, int(round(height * LEGS_FRACTION)))
    image[y1:y1 + head, x1:x2] = grey_level(vad[1])
    image[y2 - legs:y2, x1:x2] = grey_level(vad[2])
    body_top, body_bottom = y1 + head, y2 - legs
    image[body_top:body_bottom, x1:x2] = grey_level(vad[0])
    # Inset from the box edge so that the red box of the 'box' view never covers a cell.
    inset = max(2, int(round(0.06 * (x2 - x1))))
    rows = np.linspace(body_top, body_bottom, GRID_ROWS + 1).round().astype(int)
    cols = np.linspace(x1 + inset, x2 - inset, GRID_COLS + 1).round().astype(int)
    present = set(categories)
    for k, name in enumerate(CATEGORIES):
        if name not in present:
            continue
        r, c = divmod(k, GRID_COLS)
        # A one-pixel gap keeps neighbouring cells apart after JPEG and resizing.
        image[rows[r] + 1:rows[r + 1], cols[c] + 1:cols[c + 1]] = CATEGORY_COLORS[k]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    top, bottom = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    image = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).copy()
    for _ in range(int(rng.integers(2, 5))):  # muted scene objects
        w = int(rng.integers(width // 8, width // 3))
        h = int(rng.integers(height // 8, height // 3))
        x = int(rng.integers(0, width - w))
        y = int(rng.integers(0, height - h))
        grey = rng.uniform(50, 210)
        image[y:y + h, x:x + w] = grey + rng.uniform(-20, 20, 3)
    return image


def _place_boxes(rng: np.random.Generator, width: int, height: int,
                 dominances: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    boxes: List[Tuple[int, int, int, int]] = []
    scale = 1.0 if len(dominances) == 1 else 0.8
    for dominance in dominances:
        frac = (0.55 + 0.3 * (dominance - VAD_MIN) / (VAD_MAX - VAD_MIN)) * scale
        for _ in range(50):
            h = int(min(height - 2, round(height * (frac + rng.uniform(-0.05, 0.05)))))
            w = int(min(width * 0.9 / len(dominances), round(h * rng.uniform(0.45, 0.65))))
            w = max(w, GRID_COLS * 3 + 6)
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            if all(x + w <= b[0] or x >= b[2] for b in boxes):
                boxes.append((x, y, x + w, y + h))
                break
    return boxes


def _split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split)]))


def make_synthetic(root: str, n_train: int, n_val: int, n_test: int, seed: int = 0,
                   image_size: Tuple[int, int] = (160, 120), *, persons_per_image: int = 1,
                   overwrite: bool = False, progress: bool = False) -> SyntheticDataset:
    """Write a synthetic dataset in the EMOTIC CSV layout.

    Layout: ``root/emotic_pre/{train,val,test}.csv`` (the preprocessed-CSV
    columns) and ``root/emotic/synthetic/images/<split>_<n>.jpg``, plus
    ``root/synthetic.json`` recording how it was made.
    ``training.emotic.dataset.load_dataset(root, split)`` reads it like EMOTIC.

    Args:
        root: output folder (created).
        n_train: persons in train (likewise ``n_val``, ``n_test``; 0 skips a split).
        n_val: persons in val.
        n_test: persons in test.
        seed: random seed; the same seed gives the same dataset.
        image_size: (width, height) of the images, at least 48 x 48.
        persons_per_image: up to this many persons per image (1-3).
        overwrite: replace an existing synthetic dataset in ``root``.
        progress: show a progress bar on stderr.

    Raises:
        ConfigError: for negative counts, no persons at all, a too small image,
            or an existing dataset in ``root`` without ``overwrite``.
    """
    from PIL import Image  # lazy: only writing images needs Pillow

    counts = {'train': n_train, 'val': n_val, 'test': n_test}
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f'n_{split}: must be an integer >= 0, got {n!r}')
    if sum(counts.values()) == 0:
        raise ConfigError('n_train, n_val, n_test: at least one split needs persons')
    width, height = (int(v) for v in image_size)
    if width < 48 or height < 48:
        raise ConfigError(f'image_size: must be at least 48x48, got {width}x{height}')
    if not 1 <= persons_per_image <= 3:
        raise ConfigError(f'persons_per_image: must be 1-3, got {persons_per_image!r}')
    root = os.path.abspath(os.fspath(root))
    csv_dir = os.path.join(root, 'emotic_pre')
    images_root = os.path.join(root, 'emotic')
    image_dir = os.path.join(images_root, FOLDER)
    existing = [s for s in SPLITS if os.path.exists(os.path.join(csv_dir, f'{s}.csv'))]
    if existing and not overwrite:
        raise ConfigError(f'root: {root} already holds a dataset ({existing}); '
                          'pass overwrite=True (--overwrite) to replace it')
    if overwrite and os.path.isdir(image_dir):
        for name in os.listdir(image_dir):
            if name.endswith('.jpg'):
                os.remove(os.path.join(image_dir, name))
    for split in existing:
        os.remove(os.path.join(csv_dir, f'{split}.csv'))
    os.makedirs(csv_dir, exist_ok=True)
    os.makedirs(image_dir, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(counts.values()), desc='synthetic persons', unit='person',
                   file=sys.stderr, dynamic_ncols=True)
    csv_paths, images = {}, {}
    for split, n in counts.items():
        if n == 0:
            continue
        rng = _split_rng(seed, split)
        path = os.path.join(csv_dir, f'{split}.csv')
        written = image_count = 0
        with open(path, 'w', newline='', encoding='utf-8') as handle:
            writer = csv.writer(handle)
            writer.writerow(['Index', 'Folder', 'Filename', 'Image Size', 'BBox',
                             'Categorical_Labels', 'Continuous_Labels', 'Gender', 'Age'])
            while written < n:
                k = min(n - written, int(rng.integers(1, persons_per_image + 1)))
                people = [sample_labels(rng) for _ in range(k)]
                image = _background(rng, width, height)
                boxes = _place_boxes(rng, width, height, [vad[2] for _, vad in people])
                canvas = np.clip(image, 0, 255).astype(np.uint8)
                for box, (names, vad) in zip(boxes, people):
                    draw_person(canvas, box, names, vad)
                noisy = canvas.astype(np.float64) + rng.normal(0.0, 4.0, canvas.shape)
                filename = f'{split}_{image_count:05d}.jpg'
                Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
                    os.path.join(image_dir, filename), quality=95, subsampling=0)
                for box, (names, vad) in zip(boxes, people):
                    writer.writerow([written, FOLDER, filename, str([width, height]),
                                     str(list(box)), str(names), str(list(vad)),
                                     str(rng.choice(['Male', 'Female'])),
                                     str(rng.choice(['Adult', 'Teenager', 'Kid'],
                                                    p=[0.8, 0.1, 0.1]))])
                    written += 1
                    if bar is not None:
                        bar.update(1)
                image_count += 1
        csv_paths[split] = path
        images[split] = image_count
    if bar is not None:
        bar.close()
    info = SyntheticDataset(root=root, csv_paths=csv_paths, images_root=images_root,
                            persons={s: n for s, n in counts.items() if n}, images=images,
                            seed=seed)
    with open(os.path.join(root, 'synthetic.json'), 'w', encoding='utf-8') as handle:
        json.dump({'generator': 'training.emotic.synthetic', 'version': GENERATOR_VERSION,
                   'seed': seed, 'image_size': [width, height],
                   'persons_per_image': persons_per_image, 'persons': info.persons,
                   'images': images}, handle, indent=2)
    return info


def _image_size(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'expected WIDTHxHEIGHT, got {text!r}') from exc
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m training make-synthetic``."""
    parser.add_argument('out', help='output folder (gets emotic_pre/ and emotic/)')
    parser.add_argument('--train', type=int, default=800, help='persons in train '
                        '(default %(default)s)')
    parser.add_argument('--val', type=int, default=200, help='persons in val '
                        '(default %(default)s)')
    parser.add_argument('--test', type=int, default=200, help='persons in test '
                        '(default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default %(default)s)')
    parser.add_argument('--image-size', type=_image_size, default=(160, 120),
                        metavar='WxH', help='image size (default 160x120)')
    parser.add_argument('--persons-per-image', type=int, default=1,
                        help='up to this many persons per image, 1-3 (default %(default)s)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a synthetic dataset already in OUT')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')


def run(args: argparse.Namespace) -> int:
    """Run ``python -m training make-synthetic``."""
    info = make_synthetic(args.out, args.train, args.val, args.test, args.seed,
                          args.image_size, persons_per_image=args.persons_per_image,
                          overwrite=args.overwrite,
                          progress=not args.no_progress and sys.stderr.isatty())
    summary = ', '.join(f'{s} {n} persons / {info.images[s]} images'
                        for s, n in info.persons.items())
    print(f'wrote {info.root}: {summary}')
    print(f'check it with: python -m training stats {info.root}')
    return 0


def expected_chance_map(rates: Optional[Dict[str, float]] = None) -> float:
    """Roughly the mAP of a random scorer: the mean positive rate of the categories."""
    rates = rates or CATEGORY_RATES
    return float(np.mean([rates[c] for c in CATEGORIES]))
