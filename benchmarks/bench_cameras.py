"""Benchmark two live cameras: the documented two-camera graph at 15 FPS each (issue 17 item 4).

Starts the node graph of ``emotion-ros up cameras:=cam_left,cam_right``
(:func:`emotion_ros.ros.graph.nodes`, config/robot.yaml as shipped) as separate
processes: one perception node per camera, distress_node, audio_node and
microphone_node playing a looped WAV of speech (espeak-ng; ``--no-audio`` leaves
the audio nodes out). A driver publishes two 640x480 rgb8 camera streams at 15 FPS
each on /cam_left/image_raw and /cam_right/image_raw: real photos (ultralytics'
bus.jpg, mirrored for the right camera) with Gaussian sensor noise, the people in
view for 3 s and gone for 3 s, cameras a quarter cycle apart (the light backend rates
one of them sad; distress_node runs with ``watch_threshold`` 0.2 instead of 0.45, and
``clear_threshold`` 0.1, so that this weak visual evidence raises WATCH alerts to time). Wall-clock
stamps; it reports per camera the processed rate (PersonEmotionArray messages per
second), camera stamp -> estimates received, frame-to-alert (stamp of the frame that
raised an alert -> alert received) and each process's CPU (cores busy), with the load
average, since the machine may be shared.

    . tools/env.sh && python benchmarks/bench_cameras.py [--seconds 45] [--no-audio]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CAMERAS = ('cam_left', 'cam_right')


def pct(values, q):
    """The q-th percentile (0-100) of values."""
    return float(np.percentile(np.asarray(values, float), q)) if values else float('nan')


def scenes(sigma: float):
    """Per camera: (noisy frames with people, noisy empty frames), 640x480 RGB."""
    import cv2

    from emotion_ros.sample_media import sample_images
    bus = cv2.resize(cv2.imread(str(sample_images()['bus'])), (640, 480))[:, :, ::-1]
    rng = np.random.default_rng(0)
    out = {}
    for k, camera in enumerate(CAMERAS):
        people = np.ascontiguousarray(bus if k == 0 else bus[:, ::-1])
        empty = np.full_like(people, 60)
        out[camera] = tuple(
            [np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)
             for _ in range(4)] for img in (people, empty))
    return out


def speech_wav(path: Path) -> Path:
    """A few seconds of ordinary speech (no call for help), 16 kHz mono."""
    if shutil.which('espeak-ng') is None:
        raise SystemExit('espeak-ng is needed for the microphone (or use --no-audio)')
    subprocess.run(['espeak-ng', '-s', '150', '-w', str(path),
                    'We are checking the rooms on this floor. The corridor is clear, the '
                    'doors are open, and the lights are on.'], check=True)
    return path


def start_graph(logdir: Path, audio: bool, wav: Path, watch=None):
    """Start the two-camera graph; returns [(name, Popen)]."""
    from emotion_ros.ros.graph import nodes
    specs = nodes({'cameras': ','.join(CAMERAS), 'use_microphone': str(audio).lower(),
                   'params_file': str(ROOT / 'config' / 'robot.yaml')})
    procs = []
    for spec in specs:
        if not audio and spec.name == 'audio_node':
            continue
        cmd = spec.command(sys.executable)
        if spec.name == 'perception_node':
            cmd += ['-p', 'autostart:=true']
        if spec.name == 'distress_node' and watch is not None:
            cmd += ['-p', f'watch_threshold:={watch}', '-p',
                    f'clear_threshold:={min(0.3, 0.5 * watch)}']
        if spec.name == 'microphone_node':
            cmd += ['-p', 'source:=wav', '-p', f'wav_path:={wav}', '-p', 'wav_loop:=true']
        name = (spec.namespace.strip('/').replace('/', '_') + '_' if spec.namespace else '') \
            + spec.name
        log = open(logdir / f'{name}.log', 'w')
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             env=dict(os.environ))))
    return procs


def main() -> None:
    """Run the graph, drive both cameras, print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=45.0, help='measured time')
    parser.add_argument('--fps', type=float, default=15.0, help='frames per second per camera')
    parser.add_argument('--noise', type=float, default=2.0, help='sensor noise (grey levels)')
    parser.add_argument('--watch-threshold', type=float, default=0.2,
                        help="distress_node's watch_threshold (robot.yaml: 0.45, which the "
                        "light backend's weak visual evidence alone seldom reaches; lower so "
                        'that the sad man raises WATCH alerts to time)')
    parser.add_argument('--cycle', type=float, default=6.0,
                        help='people in view for half of each cycle (s), then gone')
    parser.add_argument('--no-audio', action='store_true',
                        help='leave out audio_node and microphone_node')
    args = parser.parse_args()
    for var in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', 'ROS_LOG_DIR'):
        if var not in os.environ:
            sys.exit(f'{var} is not set: source tools/env.sh first')
    import psutil
    import rclpy
    from emotion_ros_msgs.msg import DistressAlert, PersonEmotionArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from emotion_ros.ros import conversions

    logdir = ROOT / 'build' / 'bench_cameras'
    logdir.mkdir(parents=True, exist_ok=True)
    audio = not args.no_audio
    wav = speech_wav(logdir / 'speech.wav') if audio else logdir / 'none.wav'
    frames = scenes(args.noise)
    load_before = os.getloadavg()
    procs = start_graph(logdir, audio, wav, args.watch_threshold)
    rclpy.init()
    node = rclpy.create_node('bench_cameras_driver')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    estimates = {c: [] for c in CAMERAS}  # (receive wall time, latency ms)
    alerts = {c: [] for c in CAMERAS}  # latency ms
    measuring = {'on': False}

    def on_persons(msg):
        camera = msg.camera or msg.header.frame_id
        if measuring['on'] and camera in estimates:
            now = time.time()
            estimates[camera].append(
                (now, (now - conversions.stamp_to_sec(msg.header.stamp)) * 1e3))
        elif camera in estimates:
            estimates[camera].append((time.time(), float('nan')))

    alert_log = []
    other_alerts = []  # raised by audio evidence (stamped with the audio), or audio only

    def on_alert(msg):
        if not measuring['on']:
            return
        if msg.camera in alerts and msg.track_id != 0 and msg.header.frame_id == msg.camera:
            alerts[msg.camera].append(
                (time.time() - conversions.stamp_to_sec(msg.header.stamp)) * 1e3)
            alert_log.append(f'{time.time():.3f} {msg.camera} track {msg.track_id} level '
                             f'{msg.level} score {msg.score:.2f} latency '
                             f'{alerts[msg.camera][-1]:.0f} ms reasons {list(msg.reasons)}')
        else:
            other_alerts.append(msg.header.frame_id)

    node.create_subscription(PersonEmotionArray, 'persons', on_persons, 50)
    node.create_subscription(DistressAlert, 'distress_alerts', on_alert, 50)
    pubs = {c: node.create_publisher(Image, f'/{c}/image_raw', qos_profile_sensor_data)
            for c in CAMERAS}
    try:
        deadline = time.monotonic() + 120
        while not all(estimates[c] for c in CAMERAS):  # models loaded, graph connected
            for c in CAMERAS:
                pubs[c].publish(conversions.rgb_to_image(
                    frames[c][1][0], conversions.make_header(time.time(), c)))
            executor.spin_once(timeout_sec=0.1)
            if time.monotonic() > deadline:
                raise SystemExit(f'the perception nodes did not answer in 120 s; see {logdir}')
            dead = [n for n, p in procs if p.poll() is not None]
            if dead:
                raise SystemExit(f'{dead} exited; see {logdir}')
        for c in CAMERAS:
            estimates[c].clear()
        handles = [(n, psutil.Process(p.pid)) for n, p in procs]
        me = psutil.Process()
        cpu0 = {n: sum(h.cpu_times()[:2]) for n, h in handles + [('driver', me)]}
        measuring['on'] = True
        period = 1.0 / args.fps
        start = time.monotonic()
        wall0 = time.time()
        next_frame = start
        sent = 0
        while time.monotonic() - start < args.seconds:
            now = time.monotonic()
            if now >= next_frame:
                for k, c in enumerate(CAMERAS):
                    phase = (now - start + 0.25 * args.cycle * k) % args.cycle
                    people, empty = frames[c]
                    images = people if phase < 0.5 * args.cycle else empty
                    pubs[c].publish(conversions.rgb_to_image(
                        images[sent % 4], conversions.make_header(time.time(), c)))
                sent += 1
                next_frame += period
            executor.spin_once(timeout_sec=max(0.0, next_frame - time.monotonic()))
        elapsed = time.monotonic() - start
        measuring['on'] = False
        cpu = {n: (sum(h.cpu_times()[:2]) - cpu0[n]) / elapsed
               for n, h in handles + [('driver', me)]}
        load_after = os.getloadavg()
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(2)
        for _, proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    (logdir / 'alerts.txt').write_text('\n'.join(alert_log) + '\n')
    print(f'# two-camera benchmark on {platform.node()}: {os.cpu_count()} CPUs, '
          f'{platform.processor() or platform.machine()}, Python {platform.python_version()}')
    print(f'load average before {load_before[0]:.2f} {load_before[1]:.2f}, after '
          f'{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (1/5/15 min; the '
          'machine may be shared: then these numbers are pessimistic)')
    print(f'{len(CAMERAS)} cameras x {sent / elapsed:.1f} FPS, 640x480 rgb8, sensor noise '
          f'sigma {args.noise:g}, {elapsed:.0f} s measured, audio nodes: '
          f'{"on (looped speech)" if audio else "off"}, watch_threshold '
          f'{args.watch_threshold:g}; wall clock from {wall0:.0f}')
    print()
    print('| camera | processed Hz | estimates: p50 | p95 | frame-to-alert: n | p50 | p95 | max |')
    print('|---|---|---|---|---|---|---|---|')
    for c in CAMERAS:
        lat = [ms for _, ms in estimates[c]]
        print(f'| {c} | {len(lat) / elapsed:.2f} | {pct(lat, 50):.0f} ms | {pct(lat, 95):.0f} ms '
              f'| {len(alerts[c])} | {pct(alerts[c], 50):.0f} ms | {pct(alerts[c], 95):.0f} ms '
              f'| {max(alerts[c]) if alerts[c] else float("nan"):.0f} ms |')
    print(f'(frame-to-alert: alerts raised by a camera frame; {len(other_alerts)} more were '
          f'raised by audio evidence, frame ids {sorted(set(other_alerts))})')
    print()
    print('| process | CPU (cores busy) |')
    print('|---|---|')
    for name, value in cpu.items():
        print(f'| {name} | {value:.2f} |')
    nodes_cpu = sum(v for n, v in cpu.items() if n != 'driver')
    print(f'| emotion_ros nodes together | {nodes_cpu:.2f} |')


if __name__ == '__main__':
    main()
