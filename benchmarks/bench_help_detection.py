"""Benchmark of call-for-help detection in long continuous streams.

Builds a labelled set with espeak-ng (voices and variants, two speeds, pitch
changes), lays calls for help, near-miss sentences and calm speech out in
long continuous streams (minutes, silence between, no reset), applies robot
microphone conditions (sox reverb, telephone-like band-limiting, white noise
and babble of other talkers at -55/-40/-30 dBFS), pushes each stream through
``AudioCueExtractor`` (exactly what ``audio_node`` runs) in 100 ms chunks and
prints, per condition and backend: recall over all call placements, false
detections on near-miss and calm sentences (per sentence and per hour of
that speech), and CPU seconds per second of audio.

Splits: ``dev`` (voices and sentences the thresholds were tuned on) and
``test`` (other voices AND other sentences, never tuned on).

Voice families (``--family``): ``espeak`` (espeak-ng voices and variants, what
issue 7 asked for) and ``flite`` (CMU flite's voices built from recordings of
real speakers: slt and kal16 in dev, awb and rms in test). pocketsphinx, trained
on human speech, mishears espeak-ng's formant synthesis ("Help!" -> "two");
the flite family shows what the detector does with speech closer to a human's.

    python benchmarks/bench_help_detection.py --split test            # the reported numbers
    python benchmarks/bench_help_detection.py --split dev --quick     # while developing
    python benchmarks/bench_help_detection.py --set keyword_threshold=0.5 --split dev
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor  # noqa: E402
from emotion_ros.audio.synth import (build_stream, Placement, RATE, set_rms_dbfs,  # noqa: E402
                                     sox, speak)
from emotion_ros.config.schema import from_mapping  # noqa: E402

SPEECH_DBFS = -23.0

SPLITS = {
    'dev': {
        'voices': ['en-us', 'en+m3', 'en+f3'],
        'calls': ['Help!', 'Help me!', 'Somebody help!', 'Can anyone hear me?',
                  'I am stuck!', 'Over here! Help!',
                  # calls without the word "help" (issue 14)
                  'I am trapped in here!', 'Is anybody there? I am hurt!', 'Please get me out!'],
        'near': ['The health of my helmet, it held well.',
                 'Hello there, I will hold the yellow shelf.',
                 'The kelp is healthy here.', 'We are stopping over there for lunch.',
                 'Can anybody hear the music?', 'The old door is stuck again.'],
        'calm': ['The weather is nice today and the sky is blue.',
                 'I think the robot needs a new battery.',
                 'Turn left at the next corner and walk to the door.',
                 'My sister bought a red car last summer.'],
    },
    'test': {
        'voices': ['en-gb', 'en+f4', 'en-us+m5', 'en+f2'],
        'calls': ['Help! Somebody help me!', 'Please help me!', 'Help, I am stuck!',
                  'Can anyone hear me? Over here!', 'Help! Help!',
                  # calls without the word "help" (issue 14), other sentences than dev's
                  'Get me out of here!', 'I am stuck and I cannot move!',
                  'Over here! I am injured!'],
        'near': ['He held the yellow helmet in the hall.',
                 'Hello, the hotel is over there.',
                 'The healthy whelp yelped at the bell.',
                 'Anybody here may hear the music.', 'We got out of here early yesterday.'],
        'calm': ['The coffee in the kitchen is still warm.',
                 'We will meet at the station at nine.',
                 'The children are playing in the garden.',
                 'Please close the window before you leave.'],
    },
}
#: Voices of the flite family per split (``--family flite``); sentences as above.
FLITE_VOICES = {'dev': ['flite:slt', 'flite:kal16'], 'test': ['flite:awb', 'flite:rms']}
FAMILIES = ('espeak', 'flite')
# Talkers of the babble noise (never in either split).
BABBLE_VOICES = ['en-us+m7', 'en+f5', 'en-gb-x-rp']
BABBLE_TEXT = ['The meeting was moved to Thursday afternoon because of the rain.',
               'Most of the books on the top shelf are about old ships.',
               'She said the train would be late again this evening.']
SPEEDS = (150, 185)
PITCHES = (40, 65)

CONDITIONS = {
    'clean': [],
    'reverb': ['reverb', '50', '50', '70'],
    'band': ['sinc', '300-3400'],
    'white-55': [], 'white-40': [], 'white-30': [],
    'babble-40': [], 'babble-30': [],
    'band+reverb+white-40': ['sinc', '300-3400', 'reverb', '40'],
}
QUICK_CONDITIONS = ['clean', 'reverb', 'white-40', 'babble-40']


def clips(split: str, quick: bool, family: str = 'espeak') -> List[Tuple[np.ndarray, str, str]]:
    """All (samples, kind, label) of a split: every sentence x voice x speed x pitch."""
    s = SPLITS[split]
    voices = s['voices'] if family == 'espeak' else FLITE_VOICES[split]
    speeds = SPEEDS[:1] if quick else SPEEDS
    pitches = PITCHES[:1] if quick else PITCHES
    out = []
    for kind in ('calls', 'near', 'calm'):
        for text in s[kind]:
            for voice in voices:
                for speed in speeds:
                    for pitch in pitches:
                        x = set_rms_dbfs(speak(text, voice, speed, pitch), SPEECH_DBFS)
                        out.append((x, kind.rstrip('s'), f'{text} [{voice} s{speed} p{pitch}]'))
    return out


def make_stream(items, placements_per_clip: int, seed: int):
    """Shuffle clips (each ``placements_per_clip`` times) into one stream with random gaps."""
    rng = np.random.default_rng(seed)
    order = [it for it in items for _ in range(placements_per_clip if it[1] == 'call' else 1)]
    idx = rng.permutation(len(order))
    order = [order[i] for i in idx]
    gaps = rng.uniform(0.6, 3.0, len(order))
    return build_stream(order, gaps)


def babble(n: int, seed: int) -> np.ndarray:
    """Several talkers at once, looped to ``n`` samples, normalised to 0 dBFS RMS."""
    rng = np.random.default_rng(seed)
    mix = np.zeros(n, np.float32)
    for voice in BABBLE_VOICES:
        talk = np.concatenate([np.concatenate([speak(t, voice), np.zeros(4000, np.float32)])
                               for t in BABBLE_TEXT])
        reps = int(np.ceil((n + talk.size) / talk.size))
        track = np.tile(talk, reps)
        start = int(rng.integers(0, talk.size))
        mix += track[start:start + n]
    return set_rms_dbfs(mix, 0.0)


def apply_condition(x: np.ndarray, name: str, seed: int) -> np.ndarray:
    """Room/microphone effects (sox) then noise at the named level."""
    effects = CONDITIONS[name]
    y = sox(x, effects) if effects else x.copy()
    rng = np.random.default_rng(seed)
    for part in name.split('+'):
        if part.startswith('white-'):
            level = -float(part.split('-')[1])
            y = y + set_rms_dbfs(rng.normal(0, 1, y.size).astype(np.float32), level)
        elif part.startswith('babble-'):
            level = -float(part.split('-')[1])
            y = y + babble(y.size, seed) * (10 ** (level / 20))
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def run(cfg: AudioCueConfig, audio: np.ndarray, chunk_s: float = 0.1):
    """Push ``audio`` through a fresh extractor in chunks.

    Returns transcripts, cues, CPU seconds and, per transcript, the stream time
    at which it would be out live: the end of the chunk whose push produced it
    plus its decode time (the detector runs inline here, so the decode is the
    only processing delay; the live node adds its queueing, which is small
    while it keeps up).
    """
    ex = AudioCueExtractor(cfg)
    ex.load()
    chunk = int(chunk_s * RATE)
    transcripts, cues, ready = [], [], []
    cpu0 = time.process_time()
    for i in range(0, audio.size, chunk):
        cues.extend(ex.push(audio[i:i + chunk], RATE, i / RATE))
        for t in ex.pop_transcripts():
            transcripts.append(t)
            ready.append(min(i + chunk, audio.size) / RATE + t.decode_s)
    for t in ex.flush():
        transcripts.append(t)
        ready.append(audio.size / RATE + t.decode_s)
    cpu = time.process_time() - cpu0
    ex.close()
    return transcripts, cues, cpu, ready


def score(placements: Sequence[Placement], transcripts, tolerance: float = 0.3,
          ready: Sequence[float] = ()) -> Dict:
    """Recall over call placements; false detections per near-miss / calm placement.

    With ``ready`` (when each transcript was out, stream seconds), also the cue
    delays: for each heard call, from the end of the call to its first help cue.
    """
    helps = [t for t in transcripts if t.help_detected]
    when = {id(t): r for t, r in zip(transcripts, ready)}

    def over(t, p: Placement) -> bool:
        # The calls as the detector reported them: the located phrases (word alignment,
        # with their margin) or, when they were not located, the whole utterance.
        return any(a < p.end + tolerance and b > p.start - tolerance
                   for a, b in t.call_spans)

    def hit(p: Placement) -> bool:
        return any(over(t, p) for t in helps)

    out: Dict = {}
    for kind in ('call', 'near', 'calm'):
        ps = [p for p in placements if p.kind == kind]
        flagged = [p for p in ps if hit(p)]
        out[kind] = {'n': len(ps), 'flagged': len(flagged),
                     'hours': sum(p.end - p.start for p in ps) / 3600.0,
                     'examples': [p.label for p in (flagged if kind != 'call' else
                                                    [q for q in ps if not hit(q)])][:5]}
    out['delays'] = [min(when[id(t)] for t in helps if over(t, p)) - p.end
                     for p in placements if p.kind == 'call' and hit(p) and when]
    calls = [p for p in placements if p.kind == 'call']
    # Help transcripts whose calls overlap no call: what would raise a false alert.
    out['false_help'] = sum(1 for t in helps if not any(over(t, p) for p in calls))
    explained = [t for t in helps if any(over(t, p) for p in placements)]
    out['other_false'] = len(helps) - len(explained)
    # What the detector said where it was wrong: help transcripts over a near-miss or
    # calm sentence or over nothing labelled, with the sentence they overlap.
    out['wrong_helps'] = [
        {'text': t.text, 'status': t.status, 'phrase': t.help_phrase,
         'help_score': round(t.help_score, 4), 'no_speech_prob': round(t.no_speech_prob, 4),
         'avg_logprob': round(t.avg_logprob, 3),
         'over': [p.label for p in placements if p.kind != 'call' and over(t, p)]}
        for t in helps if not any(over(t, p) for p in calls)]
    return out


def main(argv=None) -> int:
    """Build the set, run the streams, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--split', choices=sorted(SPLITS), default='test')
    parser.add_argument('--family', choices=FAMILIES + ('all',), default='espeak',
                        help='voices: espeak-ng (default), flite (voices from real '
                        'speakers) or all (both, reported separately)')
    parser.add_argument('--quick', action='store_true',
                        help='one speed and pitch, 4 conditions, 1 placement per call clip')
    parser.add_argument('--conditions', default='', help='comma-separated subset of: '
                        + ', '.join(CONDITIONS))
    parser.add_argument('--placements', type=int, default=2,
                        help='placements of each call clip per stream (default 2)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override an AudioCueConfig field (JSON value), e.g. '
                        'keyword_threshold=0.5 or keyword_levels=[-30,-25]')
    parser.add_argument('--backends', default='default',
                        help='comma-separated: default (the configuration as shipped: '
                        'Whisper tiny.en on CTranslate2), keyphrase (pocketsphinx), '
                        'whisper-transformers (needs --whisper-model)')
    parser.add_argument('--whisper-model', default='',
                        help='whisper_model of the default and whisper-transformers backends '
                        '(a folder or a model name; default: the bundled tiny.en)')
    parser.add_argument('--sweep', action='store_true',
                        help='also print recall / false detections for every help_score '
                        'threshold (tuning on dev)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default='', help='write the results here as JSON')
    args = parser.parse_args(argv)

    overrides = {}
    for item in args.set:
        key, _, value = item.partition('=')
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    overrides.setdefault('detector_timeout_s', 0.0)   # inline: CPU of this process only
    model = {'whisper_model': args.whisper_model} if args.whisper_model else {}
    choices = {
        'default': lambda: from_mapping(AudioCueConfig, {**model, **overrides}),
        'keyphrase': lambda: from_mapping(AudioCueConfig, {**overrides,
                                                           'help_detector': 'keyphrase'}),
        'whisper-transformers': lambda: from_mapping(AudioCueConfig, {
            **overrides, **model, 'help_detector': 'whisper',
            'whisper_engine': 'transformers'}),
    }
    backends = {}
    for name in args.backends.split(','):
        if name not in choices:
            parser.error(f'--backends: {name!r} is not one of {", ".join(choices)}')
        backends[name] = choices[name]()

    conditions = (args.conditions.split(',') if args.conditions else
                  (QUICK_CONDITIONS if args.quick else list(CONDITIONS)))
    placements = 1 if args.quick else args.placements
    families = FAMILIES if args.family == 'all' else (args.family,)
    sets = {}
    for family in families:
        t0 = time.time()
        sets[family] = clips(args.split, args.quick, family)
        n_calls = sum(1 for it in sets[family] if it[1] == 'call')
        print(f'# split {args.split}, {family}: {len(sets[family])} clips ({n_calls} calls x '
              f'{placements} placements), built in {time.time() - t0:.0f} s', flush=True)
    rows, runs = [], []
    for backend, cfg in backends.items():
        for family, items in sets.items():
            for row, scored in run_conditions(backend, family, cfg, items, conditions,
                                              placements, args.seed):
                rows.append(row)
                runs.append(scored)
    report(rows, overrides, args)
    curve = sweep(runs) if args.sweep else []
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as out:
            json.dump({'split': args.split, 'overrides': overrides, 'rows': rows,
                       'sweep': curve}, out, indent=1)
    return 0


def run_conditions(backend: str, family: str, cfg: AudioCueConfig, items, conditions,
                   placements: int, seed: int):
    """One long stream per condition through ``cfg``'s extractor.

    Yields ``(row, (placements, transcripts))`` per condition.
    """
    for i, cond in enumerate(conditions):
        clean, places = make_stream(items, placements, seed + i)
        audio = apply_condition(clean, cond, seed + 100 + i)
        transcripts, _, cpu, ready = run(cfg, audio)
        s = score(places, transcripts, ready=ready)
        dur = audio.size / RATE
        row = {'backend': backend, 'family': family, 'condition': cond, 'stream_min': dur / 60,
               'recall': s['call']['flagged'] / max(1, s['call']['n']),
               'calls': s['call']['n'], 'heard': s['call']['flagged'],
               'near': s['near']['n'], 'calm': s['calm']['n'],
               'near_flagged_n': s['near']['flagged'], 'calm_flagged_n': s['calm']['flagged'],
               'near_false_pct': 100 * s['near']['flagged'] / max(1, s['near']['n']),
               'near_false_per_h': s['near']['flagged'] / max(1e-9, s['near']['hours']),
               'calm_false_pct': 100 * s['calm']['flagged'] / max(1, s['calm']['n']),
               'calm_false_per_h': s['calm']['flagged'] / max(1e-9, s['calm']['hours']),
               'other_false': s['other_false'], 'cpu_s_per_s': cpu / dur,
               'false_help': s['false_help'],
               'delays': s['delays'],
               'delay_p50': float(np.percentile(s['delays'], 50)) if s['delays'] else math.nan,
               'delay_p95': float(np.percentile(s['delays'], 95)) if s['delays'] else math.nan,
               'utterances': len(transcripts), 'missed': s['call']['examples'],
               'near_flagged': s['near']['examples'], 'calm_flagged': s['calm']['examples'],
               'model_id': next((t.model_id for t in transcripts), ''),
               'wrong_helps': s['wrong_helps']}
        print(f'{backend:9s} {family:6s} {cond:22s} {dur / 60:5.1f} min  recall '
              f"{row['recall']:.3f} ({s['call']['flagged']}/{s['call']['n']})  near "
              f"{row['near_false_pct']:5.1f}%  calm {row['calm_false_pct']:5.1f}%  other "
              f"{row['other_false']}  no-call help utterances {row['false_help']}  cpu "
              f"{row['cpu_s_per_s']:.3f} s/s  cue delay p50 "
              f"{row['delay_p50']:.2f} p95 {row['delay_p95']:.2f} s", flush=True)
        yield row, (places, transcripts)


def report(rows: List[Dict], overrides: Dict, args: argparse.Namespace) -> None:
    """The Markdown table: one row per stream, one total per backend and voice family."""
    print()
    models = sorted({r['model_id'] for r in rows if r.get('model_id')})
    print(f'Machine: {platform.machine()}, {os.cpu_count()} cores, '
          f'{platform.python_version()}; split {args.split}; overrides {overrides}; '
          f'models {models}')
    print('| backend | voices | condition | stream (min) | recall | near-miss false (% / per h) '
          '| calm false (% / per h) | other false | help utterances without a call | CPU s/s '
          '| cue delay p50 / p95 (s) |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['backend']} | {r['family']} | {r['condition']} | {r['stream_min']:.1f} | "
              f"{r['recall']:.3f} ({r['calls']}) | {r['near_false_pct']:.1f} / "
              f"{r['near_false_per_h']:.0f} | {r['calm_false_pct']:.1f} / "
              f"{r['calm_false_per_h']:.0f} | {r['other_false']} | {r['false_help']} | "
              f"{r['cpu_s_per_s']:.3f} | "
              f"{r['delay_p50']:.2f} / {r['delay_p95']:.2f} |")
    for key in dict.fromkeys((r['backend'], r['family']) for r in rows):
        rs = [r for r in rows if (r['backend'], r['family']) == key]
        calls = sum(r['calls'] for r in rs)
        heard = sum(r['heard'] for r in rs)
        near = sum(r['near_flagged_n'] for r in rs), sum(r['near'] for r in rs)
        calm = sum(r['calm_flagged_n'] for r in rs), sum(r['calm'] for r in rs)
        delays = [d for r in rs for d in r['delays']]
        print(f'| {key[0]} | {key[1]} | **all {len(rs)}** | '
              f"{sum(r['stream_min'] for r in rs):.1f} | **{heard / max(1, calls):.3f}** "
              f'({calls}) | **{100 * near[0] / max(1, near[1]):.1f}** ({near[0]} of {near[1]}) '
              f'| **{100 * calm[0] / max(1, calm[1]):.1f}** ({calm[0]} of {calm[1]}) | '
              f"{sum(r['other_false'] for r in rs)} | {sum(r['false_help'] for r in rs)} | "
              f"**{np.mean([r['cpu_s_per_s'] for r in rs]):.3f}** | "
              f'{_pct(delays, 50):.2f} / {_pct(delays, 95):.2f} |')


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def sweep(runs: List) -> List[Dict]:
    """Recall and false detections for every help_score threshold over all streams.

    Returns the curve as counts (flagged, n) per kind and threshold, so that runs of
    condition subsets can be added up.
    """
    curve = []
    print('\nthreshold sweep over all conditions (help_score >= t):')
    levels = sorted({round(t.help_score, 4) for _, ts in runs for t in ts if t.help_score > 0})
    for t in levels:
        tot: Dict[str, List[int]] = {'call': [0, 0], 'near': [0, 0], 'calm': [0, 0]}
        for places, ts in runs:
            sw = [dataclasses.replace(x, help_detected=x.help_score >= t - 1e-3) for x in ts]
            sc = score(places, sw)
            for k in tot:
                tot[k][0] += sc[k]['flagged']
                tot[k][1] += sc[k]['n']
        print(f"  t={t:.3f}: recall {tot['call'][0] / max(1, tot['call'][1]):.3f}  "
              f"near {100 * tot['near'][0] / max(1, tot['near'][1]):.1f}%  "
              f"calm {100 * tot['calm'][0] / max(1, tot['calm'][1]):.1f}%")
        curve.append({'t': t, **tot})
    return curve


if __name__ == '__main__':
    sys.exit(main())
