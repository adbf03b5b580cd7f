"""The out-of-the-box demo: a sample bag replayed into the real node graph.

1. Builds ``<out>/demo_bag`` (once) from media installed packages ship: real
   photos of people (ultralytics' zidane.jpg and bus.jpg) as a 15 FPS 640x480
   camera stream, and calls for help synthesised with espeak-ng as 16 kHz
   audio; the last part shows an empty scene while a voice calls for help.
2. Starts perception_node, audio_node, distress_node and alert_monitor as
   separate processes with config/robot.yaml, and bag_player to replay the bag.
3. Prints every alert as it arrives and writes ``<out>/alerts.json``,
   ``<out>/summary.json`` and annotated frames ``<out>/frames/*.jpg``.

Nothing here is scripted: the alerts come from the models' inference on the
media. Run with ``make demo`` (or ``python -m emotion_ros.ros.demo --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from emotion_ros.audio.pcm import SAMPLE_RATE

ROOT = Path(os.environ.get('EMOTION_ROS_ROOT', Path(__file__).resolve().parents[2]))
FPS = 15
SIZE = (640, 480)
AUDIO_RATE = SAMPLE_RATE
CHUNK = 1600
# (start s, end s, photo or None) and (start s, text) of the demo's script.
SCENES = [(0.0, 5.0, 'zidane'), (5.0, 10.0, 'bus'), (10.0, 16.0, None)]
CALLS = [(6.0, 'Help! Somebody help me!'), (12.0, 'Help! Somebody help me!')]


def _speech(text: str, workdir: Path) -> np.ndarray:
    from emotion_ros.audio.features import resample
    from emotion_ros.audio.pcm import read_wav
    if shutil.which('espeak-ng') is None:
        sys.exit('espeak-ng is missing: run make setup (it installs it with apt)')
    path = workdir / 'speech.wav'
    subprocess.run(['espeak-ng', '-s', '140', '-w', str(path), text], check=True)
    samples, rate = read_wav(path)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return resample(mono, rate, AUDIO_RATE)


def build_bag(path: Path) -> None:
    """Write the demo bag (camera + audio) from installed media."""
    import cv2
    from rclpy.serialization import serialize_message

    from emotion_ros.evaluation.bags import BagWriter
    from emotion_ros.ros import conversions
    from emotion_ros.sample_media import sample_images

    photos = {name: cv2.resize(cv2.imread(str(p)), SIZE)[:, :, ::-1].copy()
              for name, p in sample_images().items() if name in ('zidane', 'bus')}
    empty = np.full((SIZE[1], SIZE[0], 3), 60, np.uint8)  # an empty grey scene
    duration = SCENES[-1][1]
    audio = np.zeros(int(duration * AUDIO_RATE), np.float32)
    rng = np.random.default_rng(0)
    audio += rng.normal(0, 0.003, audio.shape).astype(np.float32)  # room noise
    with tempfile.TemporaryDirectory() as tmp:
        for start, text in CALLS:
            speech = 0.8 * _speech(text, Path(tmp))
            i = int(start * AUDIO_RATE)
            audio[i:i + len(speech)] += speech[:len(audio) - i]
    t0 = 1_700_000_000.0  # bag time; bag_player moves the stamps to the replay time
    with BagWriter(path, 'mcap') as bag:
        bag.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
        bag.add_topic('/audio', 'emotion_ros_msgs/msg/AudioFrame')
        for i in range(int(duration * FPS)):
            t = i / FPS
            name = next(s[2] for s in SCENES if s[0] <= t < s[1])
            rgb = photos[name] if name else empty
            msg = conversions.rgb_to_image(rgb, conversions.make_header(t0 + t, 'camera'))
            bag.write_raw('/camera/image_raw', int((t0 + t) * 1e9), serialize_message(msg))
        for i in range(0, len(audio), CHUNK):
            t = i / AUDIO_RATE
            msg = conversions.samples_to_audio_frame(
                audio[i:i + CHUNK], AUDIO_RATE, 'S16LE',
                conversions.make_header(t0 + t, 'microphone'))
            bag.write_raw('/audio', int((t0 + t) * 1e9), serialize_message(msg))


class _Recorder:
    """Collects person estimates and annotated frames while the demo runs."""

    def __init__(self, out: Path) -> None:
        import rclpy
        from emotion_ros_msgs.msg import DistressAlert, PersonEmotionArray
        from sensor_msgs.msg import Image

        self.out = out
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('demo_recorder', context=self.context)
        self.frames = 0
        self.persons_msgs = 0
        self.max_persons = 0
        self.track_ids = set()
        self.alerts: List[Dict] = []
        self.distress_diagnostics: Dict[str, str] = {}
        self._last_saved = -1.0
        from rclpy.executors import SingleThreadedExecutor
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.node.create_subscription(PersonEmotionArray, 'persons', self._on_persons, 10)
        self.node.create_subscription(Image, 'debug_image', self._on_debug, 2)
        self.node.create_subscription(DistressAlert, 'distress_alerts', self._on_alert, 50)
        from diagnostic_msgs.msg import DiagnosticArray
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 20)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith('distress_node'):
                self.distress_diagnostics = {kv.key: kv.value for kv in status.values}

    def _on_persons(self, msg) -> None:
        self.persons_msgs += 1
        self.max_persons = max(self.max_persons, len(msg.persons))
        self.track_ids.update(p.track_id for p in msg.persons)

    def _on_alert(self, msg) -> None:
        from emotion_ros.ros import conversions
        self.alerts.append(conversions.alert_to_dict(msg))

    def _on_debug(self, msg) -> None:
        import cv2
        now = time.monotonic()
        if now - self._last_saved < 1.0:
            return
        self._last_saved = now
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
        self.frames += 1
        cv2.imwrite(str(self.out / 'frames' / f'frame_{self.frames:03d}.jpg'), rgb[:, :, ::-1])

    def spin(self, seconds: float) -> None:
        """Process callbacks for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        import rclpy
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def main(argv=None) -> int:
    """Build the demo bag, run the node graph on it, print and save the alerts."""
    parser = argparse.ArgumentParser(
        description='Replay a sample bag (real photos + a synthesised call for help) into the '
                    'emotion_ros node graph and report the distress alerts.')
    parser.add_argument('--out', default=str(ROOT / 'demo_output'),
                        help='output folder (default: %(default)s)')
    parser.add_argument('--config', default=str(ROOT / 'config' / 'robot.yaml'),
                        help='parameters file for the nodes (default: %(default)s)')
    parser.add_argument('--rebuild-bag', action='store_true', help='write the demo bag again')
    args = parser.parse_args(argv)
    for var in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', 'ROS_LOG_DIR'):
        if var not in os.environ:
            sys.exit(f'{var} is not set: run through make demo (it sources tools/env.sh)')

    print(f'[demo] ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}: a second shell that runs '
          '`. tools/env.sh` in this checkout joins the same graph (alert_monitor list)',
          flush=True)
    out = Path(args.out)
    bag = out / 'demo_bag'
    if args.rebuild_bag and bag.exists():
        shutil.rmtree(bag)
    if not bag.exists():
        out.mkdir(parents=True, exist_ok=True)
        print(f'[demo] writing the sample bag {bag} from installed media ...', flush=True)
        build_bag(bag)
    run_dir = out / time.strftime('run-%Y%m%d-%H%M%S')
    (run_dir / 'frames').mkdir(parents=True)
    print(f'[demo] results go to {run_dir}', flush=True)

    exe = Path(sys.executable).parent
    ros = ['--ros-args', '--params-file', args.config]
    remap = ['-r', 'image:=/camera/image_raw', '-r', 'audio:=/audio']
    logs = run_dir / 'logs'
    logs.mkdir()
    procs: Dict[str, subprocess.Popen] = {}

    def start(name: str, argv: List[str], quiet: bool = True) -> None:
        log = open(logs / f'{name}.log', 'w')
        procs[name] = subprocess.Popen([str(exe / name), *argv],
                                       stdout=log if quiet else None, stderr=subprocess.STDOUT
                                       if quiet else None, start_new_session=True)

    recorder = _Recorder(run_dir)
    try:
        start('perception_node', ros + ['-p', 'autostart:=true', '-p',
                                        'publish_debug_image:=true'] + remap)
        start('audio_node', ros + remap)
        start('distress_node', ros)
        start('alert_monitor', ['--ros-args', '-p',
                                f'output_jsonl:={run_dir / "alerts.jsonl"}'], quiet=False)
        print('[demo] waiting for the nodes to load their models ...', flush=True)
        deadline = time.monotonic() + 120
        while recorder.node.count_subscribers('/camera/image_raw') == 0 or \
                recorder.node.count_subscribers('/audio') == 0 or \
                recorder.node.count_subscribers('distress_alerts') == 0:
            recorder.spin(0.2)
            if time.monotonic() > deadline:
                raise RuntimeError(f'nodes did not start; see {logs}')
        recorder.spin(3.0)  # perception configures/activates after subscribing
        print(f'[demo] playing {bag} ({SCENES[-1][1]:.0f} s) ...', flush=True)
        start('bag_player', ['--ros-args', '-p', f'bag:={bag}'])
        while procs['bag_player'].poll() is None:
            recorder.spin(0.2)
        recorder.spin(3.0)
    finally:
        for name, proc in procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    summary = {'bag': str(bag), 'config': args.config, 'alerts': recorder.alerts,
               'person_frames': recorder.persons_msgs,
               'max_persons_in_frame': recorder.max_persons,
               'tracks': sorted(recorder.track_ids), 'annotated_frames': recorder.frames,
               # Stamps are replay time (bag_player restamps), so this is the real delay from
               # the evidence's capture to its alert.
               'alert_latency_ms': {k.rsplit('.', 1)[1]: float(v) for k, v in
                                    recorder.distress_diagnostics.items()
                                    if k.startswith('alert_latency_ms.')}}
    recorder.close()
    (run_dir / 'alerts.json').write_text(json.dumps(recorder.alerts, indent=2))
    (run_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    print(f'[demo] {len(recorder.alerts)} alerts, {recorder.persons_msgs} person frames, '
          f'up to {recorder.max_persons} people in a frame, {len(recorder.track_ids)} tracks',
          flush=True)
    if summary['alert_latency_ms']:
        print('[demo] alert latency (evidence stamp to alert, distress_node /diagnostics): '
              + ', '.join(f'{k} {v:.0f} ms' for k, v in summary['alert_latency_ms'].items()),
              flush=True)
    print(f'[demo] wrote {run_dir / "alerts.json"}, {run_dir / "summary.json"} and '
          f'{recorder.frames} annotated frames in {run_dir / "frames"}', flush=True)
    return 0 if recorder.alerts else 1


if __name__ == '__main__':
    sys.exit(main())
