"""The light CPU emotion backend: face expression (facex) mapped onto EMOTIC.

For every person box it searches the upper part of the box for a face
(mediapipe BlazeFace, the models mediapipe 0.10.21 ships), classifies the face
with the 7-class facex model (a 2.6 MB .tflite that the facex wheel ships; run
with ai-edge-litert, the facex package itself is never imported because it
wants TensorFlow) and maps the 7 probabilities onto the 26 EMOTIC categories
and Valence/Arousal/Dominance through the fixed tables below. Persons without
a usable face get ``EmotionOutput.unknown()``. Everything installs from PyPI
and runs offline; see docs/light_backend.md for the tables' sources and the
limits of the approach.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import logging
import math
from pathlib import Path
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.backends.base import EmotionBackend
from emotion_ros.config.schema import field
from emotion_ros.llm.contract import CATEGORIES, VAD_MAX, VAD_MIN
from emotion_ros.errors import InputError, ModelLoadError
from emotion_ros.types import Box, EmotionOutput

_LOG = logging.getLogger(__name__)

#: facex's output classes, in the model's order.
FACEX_CLASSES: Tuple[str, ...] = (
    'anger', 'disgust', 'fear', 'happy', 'neutral', 'sadness', 'surprised')
FACEX_INPUT_SIZE = 200

# Valence, arousal, dominance of the 7 class names on the 1-9 scale of
# Warriner, Kuperman & Brysbaert (2013), "Norms of valence, arousal, and
# dominance for 13,915 English lemmas", Behavior Research Methods 45(4),
# 1191-1207 (columns V/A/D.Mean.Sum of Ratings_Warriner_et_al.csv), looked up
# for the exact words facex names its classes with.
VAD_NORMS_1_9: Dict[str, Tuple[float, float, float]] = {
    'anger': (2.50, 5.93, 5.14),
    'disgust': (3.32, 5.00, 4.84),
    'fear': (2.93, 6.14, 3.32),
    'happy': (8.47, 6.05, 7.21),
    'neutral': (5.50, 3.45, 5.81),
    'sadness': (2.40, 2.81, 3.84),
    'surprised': (6.57, 5.95, 4.72),
}

# How strongly each basic expression implies each EMOTIC category (0..1),
# columns in FACEX_CLASSES order: anger, disgust, fear, happy, neutral,
# sadness, surprised. Set by hand from the category definitions of Kosti et al.
# (2019, TPAMI, Table 1); not learned. A category's score is the
# probability-weighted sum of its row, so it stays in [0, 1]; every basic
# expression maps most strongly onto its own EMOTIC category (disgust onto
# Aversion, neutral onto Engagement).
CATEGORY_WEIGHTS: Dict[str, Tuple[float, ...]] = {
    #                  ang   dis   fea   hap   neu   sad   sur
    'Affection':       (0.0, 0.0, 0.0, 0.5, 0.1, 0.0, 0.0),
    'Anger':           (1.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0),
    'Annoyance':       (0.7, 0.4, 0.0, 0.0, 0.05, 0.1, 0.0),
    'Anticipation':    (0.0, 0.0, 0.15, 0.2, 0.3, 0.0, 0.3),
    'Aversion':        (0.3, 1.0, 0.2, 0.0, 0.0, 0.0, 0.0),
    'Confidence':      (0.2, 0.0, 0.0, 0.5, 0.2, 0.0, 0.0),
    'Disapproval':     (0.5, 0.6, 0.0, 0.0, 0.05, 0.1, 0.0),
    'Disconnection':   (0.0, 0.1, 0.0, 0.0, 0.3, 0.3, 0.0),
    'Disquietment':    (0.2, 0.1, 0.6, 0.0, 0.0, 0.3, 0.3),
    'Doubt/Confusion': (0.1, 0.1, 0.2, 0.0, 0.1, 0.2, 0.3),
    'Embarrassment':   (0.0, 0.1, 0.2, 0.15, 0.0, 0.3, 0.1),
    'Engagement':      (0.2, 0.0, 0.1, 0.3, 0.6, 0.0, 0.4),
    'Esteem':          (0.0, 0.0, 0.0, 0.4, 0.1, 0.0, 0.0),
    'Excitement':      (0.1, 0.0, 0.0, 0.6, 0.0, 0.0, 0.5),
    'Fatigue':         (0.0, 0.0, 0.0, 0.0, 0.1, 0.4, 0.0),
    'Fear':            (0.0, 0.1, 1.0, 0.0, 0.0, 0.1, 0.3),
    'Happiness':       (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.1),
    'Pain':            (0.2, 0.4, 0.3, 0.0, 0.0, 0.4, 0.0),
    'Peace':           (0.0, 0.0, 0.0, 0.4, 0.4, 0.0, 0.0),
    'Pleasure':        (0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0),
    'Sadness':         (0.0, 0.0, 0.1, 0.0, 0.0, 1.0, 0.0),
    'Sensitivity':     (0.0, 0.0, 0.3, 0.0, 0.0, 0.5, 0.0),
    'Suffering':       (0.2, 0.2, 0.3, 0.0, 0.0, 0.7, 0.0),
    'Surprise':        (0.0, 0.0, 0.2, 0.1, 0.0, 0.0, 1.0),
    'Sympathy':        (0.0, 0.0, 0.0, 0.2, 0.1, 0.3, 0.0),
    'Yearning':        (0.0, 0.0, 0.0, 0.0, 0.1, 0.3, 0.0),
}


def vad_1_9_to_1_10(value: float) -> float:
    """Rescale a rating from Warriner's 1-9 scale onto EMOTIC's 1-10 (linear, ends fixed)."""
    return VAD_MIN + (value - 1.0) * (VAD_MAX - VAD_MIN) / 8.0


def mapping_matrices() -> Tuple[np.ndarray, np.ndarray]:
    """Return the 26 x 7 category matrix and the 7 x 3 VAD matrix (on 1-10), contract order."""
    cat = np.array([CATEGORY_WEIGHTS[name] for name in CATEGORIES], np.float32)
    vad = np.array([[vad_1_9_to_1_10(v) for v in VAD_NORMS_1_9[c]] for c in FACEX_CLASSES],
                   np.float32)
    return cat, vad


def map_expression(probs: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """Map 7 facex probabilities onto 26 EMOTIC scores in [0, 1] and VAD on 1-10.

    Raises:
        InputError: for a vector that is not 7 finite non-negative numbers.
    """
    p = np.asarray(probs, np.float64).reshape(-1)
    if p.shape != (len(FACEX_CLASSES),) or not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InputError(f'expected {len(FACEX_CLASSES)} finite non-negative probabilities, '
                         f'got {probs!r}', kind='model_output')
    total = p.sum()
    p = p / total if total > 0 else np.full_like(p, 1.0 / len(p))
    cat, vad = mapping_matrices()
    scores = np.clip(cat.astype(np.float64) @ p, 0.0, 1.0).astype(np.float32)
    v = vad.astype(np.float64).T @ p
    return scores, (float(v[0]), float(v[1]), float(v[2]))


@dataclasses.dataclass(frozen=True)
class LightOptions:
    """Options of the light backend (``emotion.light.*`` parameters)."""

    model_path: str = field('', 'facex expression model (.tflite); empty: the file the facex '
                            'package installs (assets/model_optimized.tflite)')
    face_confidence: float = field(0.5, 'Minimum face score (mediapipe) for a face inside a '
                                   'person box', min=0.0, max=1.0)
    min_face_px: int = field(20, 'Faces narrower than this many pixels are not classified '
                             '(the person is reported as unknown)', min=4, max=1000)
    search_fraction: float = field(0.6, 'Upper fraction of the person box searched for the '
                                   'face', min=0.1, max=1.0)
    box_margin: float = field(0.1, 'The person box is widened by this fraction on each side '
                              'before the face search', min=0.0, max=1.0)
    face_margin: float = field(0.1, 'The face box is enlarged by this fraction on each side '
                               'before classification', min=0.0, max=1.0)
    color: str = field('grey', 'Face pixels given to the model: grey (copied to 3 channels, '
                       'as the facex package itself does) or rgb', choices=('grey', 'rgb'))
    flip_average: bool = field(True, 'Average the face and its mirror image (steadier '
                               'output, twice the model time)')
    temperature: float = field(1.0, 'Softmax temperature applied to the 7 probabilities '
                               '(>1 softer, <1 sharper)', min=0.05, max=20.0)
    threads: int = field(1, 'CPU threads of the tflite interpreter (1 is fastest when other '
                         'nodes share the CPU: extra threads spin-wait)', min=1, max=64)
    max_batch: int = field(1, 'Face images per interpreter call. 1 is fastest on one thread: '
                           'a batch costs the same CPU per image (~14 ms on the CI kind), '
                           'gives the same numbers, and every change of the batch size '
                           're-allocates the interpreter (50-100 ms)', min=1, max=256)


def _facex_model_path() -> Path:
    spec = importlib.util.find_spec('facex')  # locates the package, does not import it
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError('the light backend needs the facex package for its model file: '
                             'pip install --no-deps facex==1.1.0')
    return Path(list(spec.submodule_search_locations)[0]) / 'assets' / 'model_optimized.tflite'


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return 'missing'


class LightBackend(EmotionBackend):
    """Face expression (facex 7 classes) mapped onto the 26 EMOTIC categories + VAD."""

    name = 'light'
    # 7 face classes: neutral and disgusted faces often read as 'sadness 1.00'. Alone this
    # backend must not raise DISTRESS: it declares 0.55, below the fusion's
    # weak_evidence_weight (0.6), and the fusion keeps weak visual evidence alone at WATCH or
    # below whatever its thresholds (fusion/distress.py); the weight also scales its score.
    visual_evidence_weight = 0.55
    # The face is searched in the person box widened by box_margin (context_margin).
    pixels_only = True

    def __init__(self, options: Optional[LightOptions] = None) -> None:
        """Keep the options; ``load()`` reads the models."""
        self.options = options if options is not None else LightOptions()
        self._interpreter: Any = None
        self._input_index = 0
        self._output_index = 0
        self._batch = 1
        self._faces: Any = None
        self._lock = threading.Lock()
        self._cat, self._vad = mapping_matrices()
        self._model_path: Optional[Path] = None
        self._model_id = ''
        #: Time spent in the last ``estimate`` call, per stage (ms).
        self.last_timings_ms: Dict[str, float] = {}

    @property
    def model_id(self) -> str:
        """Backend and weights, e.g. 'light:facex-1.1.0+mediapipe-0.10.21'."""
        if self._model_id:  # package metadata is read once (it parses files: ~0.5 ms)
            return self._model_id
        custom = '' if not self.options.model_path else f'({Path(self.options.model_path).name})'
        return f'light:facex-{_version("facex")}{custom}+mediapipe-{_version("mediapipe")}'

    @property
    def context_margin(self) -> float:
        """The person box is searched widened by this fraction (``box_margin``)."""
        return float(self.options.box_margin)

    @property
    def loaded(self) -> bool:
        """True between a successful ``load()`` and ``close()``."""
        return self._interpreter is not None and self._faces is not None

    def load(self) -> None:
        """Load the expression model and the face detector.

        Raises:
            ModelLoadError: when a model file is missing, corrupt or has the
                wrong input/output shape, naming the file.
        """
        if self.loaded:
            return
        path = Path(self.options.model_path).expanduser() if self.options.model_path \
            else _facex_model_path()
        if not path.is_file():
            raise ModelLoadError(f'facex model file not found: {path} (install facex==1.1.0 '
                                 'or set emotion.light.model_path)')
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelLoadError(f'the light backend needs ai-edge-litert to run {path.name}: '
                                 f'pip install ai-edge-litert ({exc})') from exc
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=self.options.threads)
            interpreter.allocate_tensors()
        except Exception as exc:
            raise ModelLoadError(f'cannot load the expression model {path}: {exc}') from exc
        inp = interpreter.get_input_details()
        out = interpreter.get_output_details()
        want = [1, FACEX_INPUT_SIZE, FACEX_INPUT_SIZE, 3]
        if len(inp) != 1 or list(inp[0]['shape']) != want or inp[0]['dtype'] != np.float32 \
                or len(out) != 1 or int(out[0]['shape'][-1]) != len(FACEX_CLASSES):
            raise ModelLoadError(
                f'{path} does not look like the facex model: expected one float32 input of '
                f'shape {want} and {len(FACEX_CLASSES)} outputs, got inputs '
                f'{[(list(d["shape"]), np.dtype(d["dtype"]).name) for d in inp]} and outputs '
                f'{[list(d["shape"]) for d in out]}')
        from emotion_ros.perception.detectors.faces import FaceFinder

        # Full-range first: its boxes (forehead to chin) are closest to the Haar
        # cascade boxes the facex package crops with; the short-range model
        # only runs when it finds nothing (it catches large profile faces).
        faces = FaceFinder(confidence=self.options.face_confidence, models=('full', 'short'),
                           tiles=1, first_hit=True)
        faces.load()
        self._interpreter = interpreter
        self._input_index = int(inp[0]['index'])
        self._output_index = int(out[0]['index'])
        self._batch = 1
        self._faces = faces
        self._model_path = path
        # One pass at load: the first person's frame then does not pay the interpreter's
        # first-invoke set-up (hundreds of ms).
        self._run(np.zeros((min(2, self.options.max_batch), FACEX_INPUT_SIZE,
                            FACEX_INPUT_SIZE, 3), np.float32))
        self._model_id = ''
        self._model_id = self.model_id
        _LOG.info('light emotion backend loaded %s (%s)', path, self.model_id)

    def close(self) -> None:
        """Drop the models. Safe to call twice."""
        with self._lock:
            self._interpreter = None
            if self._faces is not None:
                self._faces.close()
                self._faces = None

    # -- face search -----------------------------------------------------

    def find_face(self, image_rgb: np.ndarray, box: Box) -> Optional[Tuple[Box, float]]:
        """Find the face of the person in ``box``: ``(face box in image pixels, score)``.

        Searches the upper ``search_fraction`` of the (widened) person box and
        prefers confident faces near the box's horizontal centre. Returns None
        when there is no face of at least ``min_face_px``.

        Raises:
            InputError: for a box with NaN coordinates.
        """
        from emotion_ros.perception.image_codec import clip_box

        if self._faces is None:
            raise RuntimeError('LightBackend.find_face() called before load()')
        height, width = image_rgb.shape[:2]
        x0, y0, x1, y1 = clip_box(box, width, height, self.options.box_margin)
        y1 = min(y1, y0 + int(math.ceil((y1 - y0) * self.options.search_fraction)))
        min_px = self.options.min_face_px
        if x1 - x0 < min_px or y1 - y0 < min_px:
            return None
        region = image_rgb[y0:y1, x0:x1]
        found = self._faces.find(region)
        centre = 0.5 * (float(box[0]) + float(box[2])) - x0
        best: Optional[Tuple[Box, float]] = None
        best_rank = -math.inf
        for (fx0, fy0, fx1, fy1), score in found:
            if fx1 - fx0 < min_px:
                continue
            offset = abs(0.5 * (fx0 + fx1) - centre) / max(x1 - x0, 1)
            rank = score - offset
            if rank > best_rank:
                best_rank = rank
                best = ((fx0 + x0, fy0 + y0, fx1 + x0, fy1 + y0), score)
        return best

    def _face_input(self, image_rgb: np.ndarray, face: Box) -> np.ndarray:
        import cv2

        fx0, fy0, fx1, fy1 = face
        side = max(fx1 - fx0, fy1 - fy0) * (1.0 + 2.0 * self.options.face_margin)
        cx, cy = 0.5 * (fx0 + fx1), 0.5 * (fy0 + fy1)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        x1, y1 = x0 + int(round(side)), y0 + int(round(side))
        height, width = image_rgb.shape[:2]
        patch = image_rgb[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
        pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
        if any(pads):
            # A square crop keeps the face's proportions at the image border.
            patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_REPLICATE)
        size = (FACEX_INPUT_SIZE, FACEX_INPUT_SIZE)
        interp = cv2.INTER_AREA if patch.shape[0] > FACEX_INPUT_SIZE else cv2.INTER_LINEAR
        patch = cv2.resize(patch, size, interpolation=interp)
        if self.options.color == 'grey':
            grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
            patch = cv2.merge([grey, grey, grey])
        return patch.astype(np.float32) * (1.0 / 255.0)

    # -- classification --------------------------------------------------

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the interpreter on N x 200 x 200 x 3 inputs, in chunks of ``max_batch``."""
        outputs = []
        for start in range(0, len(batch), self.options.max_batch):
            chunk = np.ascontiguousarray(batch[start:start + self.options.max_batch])
            if len(chunk) != self._batch:
                self._interpreter.resize_tensor_input(
                    self._input_index, [len(chunk), FACEX_INPUT_SIZE, FACEX_INPUT_SIZE, 3])
                self._interpreter.allocate_tensors()
                self._batch = len(chunk)
            self._interpreter.set_tensor(self._input_index, chunk)
            self._interpreter.invoke()
            outputs.append(np.array(self._interpreter.get_tensor(self._output_index)))
        return np.concatenate(outputs).reshape(len(batch), len(FACEX_CLASSES))

    def classify_faces(self, faces: np.ndarray) -> np.ndarray:
        """7-class probabilities for face images (N x 200 x 200 x 3 float in [0, 1]).

        Applies the mirror averaging and temperature of the options.

        Raises:
            InputError: for inputs of the wrong shape or with NaN.
            RuntimeError: when called before ``load()``.
        """
        if self._interpreter is None:
            raise RuntimeError('LightBackend used before load()')
        faces = np.asarray(faces, np.float32)
        if faces.ndim != 4 or faces.shape[1:] != (FACEX_INPUT_SIZE, FACEX_INPUT_SIZE, 3) \
                or not np.all(np.isfinite(faces)):
            raise InputError(f'faces must be N x {FACEX_INPUT_SIZE} x {FACEX_INPUT_SIZE} x 3 '
                             f'finite floats, got shape {faces.shape}', kind='image_format')
        if len(faces) == 0:
            return np.zeros((0, len(FACEX_CLASSES)), np.float32)
        n = len(faces)
        batch = np.concatenate([faces, faces[:, :, ::-1]]) if self.options.flip_average \
            else faces
        with self._lock:
            probs = self._run(batch).astype(np.float64)
        if self.options.flip_average:
            probs = 0.5 * (probs[:n] + probs[n:])
        if self.options.temperature != 1.0:
            logits = np.log(np.clip(probs, 1e-12, None)) / self.options.temperature
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs.astype(np.float32)

    def estimate(self, image_rgb: np.ndarray, boxes: Sequence[Box]) -> List[EmotionOutput]:
        """Score every person box of one RGB image; unknown for persons without a face.

        Raises:
            InputError: for an image that is not H x W x 3 uint8 or a box with NaN.
            RuntimeError: when called before ``load()``.
        """
        import time

        from emotion_ros.perception.detectors.base import check_rgb

        check_rgb(image_rgb)
        if not self.loaded:
            raise RuntimeError('LightBackend.estimate() called before load()')
        t0 = time.perf_counter()
        faces: List[Optional[Tuple[Box, float]]] = [self.find_face(image_rgb, b) for b in boxes]
        t1 = time.perf_counter()
        inputs = [self._face_input(image_rgb, f[0]) for f in faces if f is not None]
        probs = self.classify_faces(np.stack(inputs)) if inputs else np.zeros((0, 7))
        t2 = time.perf_counter()
        out: List[EmotionOutput] = []
        k = 0
        for face in faces:
            if face is None:
                out.append(EmotionOutput.unknown())
                continue
            scores, vad = map_expression(probs[k])
            k += 1
            out.append(EmotionOutput(scores=scores, vad=vad, face_visible=True))
        self.last_timings_ms = {'face_search': 1000.0 * (t1 - t0),
                                'expression': 1000.0 * (t2 - t1), 'faces': float(k)}
        return out

    def expression_probabilities(self, image_rgb: np.ndarray,
                                 boxes: Sequence[Box]) -> List[Optional[Dict[str, float]]]:
        """Return the raw 7-class facex probabilities per box (None without a face).

        Raises:
            InputError: for a malformed image or box.
        """
        from emotion_ros.perception.detectors.base import check_rgb

        check_rgb(image_rgb)
        faces = [self.find_face(image_rgb, b) for b in boxes]
        inputs = [self._face_input(image_rgb, f[0]) for f in faces if f is not None]
        probs = self.classify_faces(np.stack(inputs)) if inputs else np.zeros((0, 7))
        result: List[Optional[Dict[str, float]]] = []
        k = 0
        for face in faces:
            if face is None:
                result.append(None)
            else:
                result.append(dict(zip(FACEX_CLASSES, (float(v) for v in probs[k]))))
                k += 1
        return result
