"""Streaming resampling and per-frame acoustic features (level, pitch, spectrum).

Everything here works on a fixed grid counted from the first sample of a
stream, so feeding the same audio in one piece or in many chunks gives
bit-identical results (the bag evaluation replays audio in one go, the live
node feeds small chunks).
"""

from __future__ import annotations

import dataclasses
import math
import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE

#: Internal analysis rate of the audio cues (the rate pocketsphinx and silero expect).
ANALYSIS_RATE = SAMPLE_RATE
#: The one resampler's filter (see :class:`StreamResampler`; part of the model contract,
#: :data:`emotion_ros.audio.preprocess.AUDIO_PREPROCESSING`).
RESAMPLER_ZERO_CROSSINGS = 12
RESAMPLER_KAISER_BETA = 8.6
RESAMPLER_CUTOFF = 0.92  # of the lower Nyquist frequency when downsampling
#: Frame grid of the acoustic features: 64 ms frames every 20 ms.
FRAME_LENGTH = 1024
FRAME_HOP = 320
#: Levels are floored here so that digital silence gives a finite number.
LEVEL_FLOOR_DBFS = -120.0

# Spectral flatness is measured where speech and screams carry energy, so that
# DC offsets and the empty band above 7 kHz of 16 kHz audio do not count.
_FLATNESS_BAND_HZ = (100.0, 7000.0)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of samples in [-1, 1] in dB relative to full scale (floored)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return LEVEL_FLOOR_DBFS
    rms = math.sqrt(float(np.mean(x * x)))
    return max(LEVEL_FLOOR_DBFS, 20.0 * math.log10(rms)) if rms > 0 else LEVEL_FLOOR_DBFS


class StreamResampler:
    """Band-limited rational resampler that keeps its state between chunks.

    A Kaiser-windowed sinc interpolator evaluated at the exact rational output
    positions ``k * in_rate / out_rate``; output ``k`` is produced once the
    input it needs has arrived, so the result does not depend on how the input
    is chunked. The delay is ``half_width`` input samples (under 2 ms for the
    usual rates).
    """

    # Phase tables up to this many phases are exact; unusual rates (44101 Hz)
    # round each output position to the nearest of this many phases (an error
    # under 1/8000 of a sample, far below 16-bit resolution).
    _MAX_TABLE_PHASES = 4096

    def __init__(self, in_rate: int, out_rate: int,
                 zero_crossings: int = RESAMPLER_ZERO_CROSSINGS,
                 kaiser_beta: float = RESAMPLER_KAISER_BETA) -> None:
        """Create a resampler from ``in_rate`` to ``out_rate`` (Hz, integers)."""
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f'resampler rates must be > 0, got {in_rate} -> {out_rate}')
        g = math.gcd(int(in_rate), int(out_rate))
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self._up = self.out_rate // g    # L
        self._down = self.in_rate // g   # M
        self.identity = self._up == self._down
        ratio = min(1.0, self._up / self._down)
        # Cut a little below the new Nyquist so the transition band does not alias.
        self._cutoff = 0.5 * ratio * (RESAMPLER_CUTOFF if ratio < 1.0 else 1.0)
        self.half_width = int(math.ceil(zero_crossings / ratio))
        self._beta = kaiser_beta
        self._offsets_int = np.arange(-self.half_width + 1, self.half_width + 1, dtype=np.int64)
        self._offsets = self._offsets_int.astype(np.float64)
        self._phases = min(self._up, self._MAX_TABLE_PHASES)
        self._table = self._taps(np.arange(self._phases, dtype=np.float64) / self._phases)
        self.reset()

    def reset(self) -> None:
        """Forget the stream; the next sample is input sample 0."""
        # Zero history before the first sample, so output 0 is centred on input 0.
        self._buf = np.zeros(self.half_width, dtype=np.float64)
        self._buf_start = -self.half_width
        self._next_out = 0

    def _taps(self, frac: np.ndarray) -> np.ndarray:
        """Filter taps for outputs at fractional positions ``frac`` in [0, 1)."""
        t = self._offsets[None, :] - frac[:, None]
        fc = self._cutoff
        h = 2.0 * fc * np.sinc(2.0 * fc * t)
        arg = np.clip(1.0 - (t / self.half_width) ** 2, 0.0, None)
        return h * np.i0(self._beta * np.sqrt(arg)) / np.i0(self._beta)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed input samples, return every output sample that is now complete."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if self.identity:
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        in_end = self._buf_start + self._buf.size
        up, down = self._up, self._down
        # Output k needs inputs up to floor(k * M / L) + half_width.
        # (One sample of margin where phases are rounded, which may round up.)
        margin = self.half_width + (1 if self._phases != up else 0)
        last = ((in_end - margin) * up - 1) // down
        if last < self._next_out:
            return np.zeros(0, dtype=np.float32)
        ks = np.arange(self._next_out, last + 1, dtype=np.int64)
        base = (ks * down) // up
        phase = (ks * down) % up
        if self._phases != up:
            phase = (phase * self._phases + up // 2) // up
            base = base + phase // self._phases  # rounded up to the next sample
            phase = phase % self._phases
        index = base[:, None] + self._offsets_int[None, :] - self._buf_start
        # A plain row sum (not einsum/BLAS) keeps the summation order fixed per
        # row, so results are bit-identical however the input was chunked.
        out = (self._buf[index] * self._table[phase]).sum(axis=1)
        self._next_out = int(last) + 1
        # Keep only the history the next output still needs.
        keep_from = (self._next_out * down) // up - self.half_width + 1
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out.astype(np.float32)

    def pending_s(self) -> float:
        """Seconds of input received whose outputs are still held back (the filter delay)."""
        if self.identity:
            return 0.0
        in_end = self._buf_start + self._buf.size
        return max(0.0, in_end - self._next_out * self._down / self._up) / self.in_rate

    def flush(self) -> np.ndarray:
        """Return the outputs still held back by the filter delay (end of a file)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        return self.process(np.zeros(self.half_width, dtype=np.float64))


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole signal (``(n,)`` or ``(n, channels)``) in one call.

    :class:`StreamResampler` run over the signal and flushed, cut to
    ``round(n * out_rate / in_rate)`` samples: the one resampler of the
    project for files, synthetic speech and bags. (The models' input uses
    :func:`emotion_ros.audio.preprocess.to_model_rate`, the same filter as a
    live stream delivers it.)
    """
    x = np.asarray(samples, dtype=np.float32)
    if in_rate == out_rate:
        return x.copy()
    n_out = int(round(x.shape[0] * out_rate / in_rate))
    columns = x[:, None] if x.ndim == 1 else x
    outs = []
    for c in range(columns.shape[1]):
        r = StreamResampler(in_rate, out_rate)
        y = np.concatenate([r.process(columns[:, c]), r.flush()])[:n_out]
        outs.append(np.pad(y, (0, max(0, n_out - y.size))))
    out = np.stack(outs, axis=1)
    return out[:, 0] if x.ndim == 1 else out


@dataclasses.dataclass
class FrameFeatures:
    """Acoustic features of a batch of frames (one row per frame)."""

    level_dbfs: np.ndarray       # RMS level of the frame
    pitch_hz: np.ndarray         # YIN f0, 0 where unvoiced
    aperiodicity: np.ndarray     # YIN's normalized difference at the chosen lag (0 = periodic)
    centroid_hz: np.ndarray      # power-weighted mean frequency, 0 for digital silence
    flatness: np.ndarray         # geometric / arithmetic mean of the power spectrum (0-1)
    power: np.ndarray            # mean square of the frame (weights for averages)


class FrameAnalyzer:
    """Level, YIN pitch, spectral centroid and flatness of 64 ms frames at 16 kHz.

    YIN (de Cheveigne and Kawahara 2002): cumulative-mean-normalized
    difference function, the first dip under ``voicing_threshold`` within the
    pitch range, refined by parabolic interpolation. A frame is voiced when
    such a dip exists and the frame is louder than ``silence_dbfs``.
    """

    def __init__(self, pitch_min_hz: float = 70.0, pitch_max_hz: float = 1100.0,
                 voicing_threshold: float = 0.25, silence_dbfs: float = -60.0,
                 rate: int = ANALYSIS_RATE, frame_length: int = FRAME_LENGTH) -> None:
        """Set the pitch search range and voicing rules (see the class doc)."""
        self.rate = rate
        self.frame_length = frame_length
        self.tau_min = max(2, int(math.floor(rate / pitch_max_hz)))
        self.tau_max = int(math.ceil(rate / pitch_min_hz))
        self.window = frame_length - self.tau_max  # YIN integration window
        if self.window < self.tau_max // 2 or self.tau_min >= self.tau_max:
            raise ValueError(f'pitch range {pitch_min_hz}-{pitch_max_hz} Hz does not fit '
                             f'{frame_length}-sample frames at {rate} Hz')
        self.voicing_threshold = voicing_threshold
        self.silence_dbfs = silence_dbfs
        self._hann = np.hanning(frame_length)
        self._freqs = np.fft.rfftfreq(frame_length, 1.0 / rate)
        lo, hi = _FLATNESS_BAND_HZ
        self._band = (self._freqs >= lo) & (self._freqs <= hi)
        self._nfft = 1 << int(math.ceil(math.log2(frame_length + self.window)))

    def analyze(self, frames: np.ndarray) -> FrameFeatures:
        """Compute the features of ``frames`` shaped ``(count, frame_length)``."""
        x = np.asarray(frames, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.frame_length:
            raise ValueError(f'expected (count, {self.frame_length}) frames, got {x.shape}')
        power = np.mean(x * x, axis=1)
        with np.errstate(divide='ignore'):
            level = np.maximum(LEVEL_FLOOR_DBFS, 10.0 * np.log10(power))
        spec = np.abs(np.fft.rfft(x * self._hann, axis=1)) ** 2
        total = spec.sum(axis=1)
        centroid = np.where(total > 0, (spec * self._freqs).sum(axis=1) / np.maximum(total, 1e-30),
                            0.0)
        band = spec[:, self._band] + 1e-20
        flatness = np.exp(np.mean(np.log(band), axis=1)) / np.mean(band, axis=1)
        pitch, aper = self._yin(x)
        voiced = (aper < self.voicing_threshold) & (level > self.silence_dbfs)
        pitch = np.where(voiced, pitch, 0.0)
        return FrameFeatures(level_dbfs=level, pitch_hz=pitch, aperiodicity=aper,
                             centroid_hz=centroid, flatness=flatness, power=power)

    def _yin(self, x: np.ndarray):
        count = x.shape[0]
        w, tmax = self.window, self.tau_max
        # d(tau) = E(x[0:W]) + E(x[tau:tau+W]) - 2 r(tau), r by FFT.
        spec_a = np.fft.rfft(x[:, :w], n=self._nfft, axis=1)
        spec_b = np.fft.rfft(x, n=self._nfft, axis=1)
        r = np.fft.irfft(np.conj(spec_a) * spec_b, n=self._nfft, axis=1)[:, :tmax + 1]
        sq = np.concatenate([np.zeros((count, 1)), np.cumsum(x * x, axis=1)], axis=1)
        taus = np.arange(tmax + 1)
        energy0 = sq[:, w][:, None]
        energy_tau = sq[:, taus + w] - sq[:, taus]
        diff = np.maximum(energy0 + energy_tau - 2.0 * r, 0.0)
        diff[:, 0] = 0.0
        cumulative = np.cumsum(diff[:, 1:], axis=1)
        cmnd = np.ones_like(diff)
        with np.errstate(divide='ignore', invalid='ignore'):
            cmnd[:, 1:] = np.where(cumulative > 0,
                                   diff[:, 1:] * taus[1:] / np.maximum(cumulative, 1e-30), 1.0)
        pitch = np.zeros(count)
        aper = np.ones(count)
        lo, hi = self.tau_min, tmax
        for i in range(count):
            row = cmnd[i]
            region = row[lo:hi + 1]
            below = np.flatnonzero(region < self.voicing_threshold)
            if below.size:
                # First dip under the threshold: follow it down to its minimum.
                t = lo + int(below[0])
                while t + 1 <= hi and row[t + 1] < row[t]:
                    t += 1
            else:
                t = lo + int(np.argmin(region))
            aper[i] = row[t]
            shift = 0.0
            if lo < t < hi:
                a, b, c = row[t - 1], row[t], row[t + 1]
                denom = a - 2.0 * b + c
                if denom > 0:
                    shift = 0.5 * (a - c) / denom
            pitch[i] = self.rate / (t + shift)
        return pitch, aper
