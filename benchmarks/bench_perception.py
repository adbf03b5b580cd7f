"""Benchmark the perception path: per-stage time and frame-to-alert latency.

Part 1 (in process, the perception node's code path): for 640x480 frames of
real photos, time decode (sensor_msgs/Image -> RGB), detect, track, emotion
(face search and expression model of the light backend), persons (thumbnails,
appearance, positions) and publish (estimate -> message -> CDR bytes) and the
process CPU time per frame, with every frame detected and scored and with the
shipped defaults (detect on change, emotion reuse), in one run; ``--profile``
adds a cProfile table of a full frame, ``--threads`` the light backend with 2
interpreter threads and without mirror averaging.

Part 2 (the real node graph as separate processes, config/robot.yaml): a
driver publishes a 15 FPS 640x480 camera stream in which a group of people
(ultralytics' bus.jpg; the light backend rates one of them sad, so the
default fusion alerts on them) appears for 3 s and leaves for 3 s, repeatedly.
It measures, with wall-clock stamps:
  - estimate latency: camera stamp -> PersonEmotionArray received;
  - alert latency: stamp of the frame that raised the alert -> alert received;
  - time to alert: first frame showing the people -> alert received (includes
    the fusion's deliberate smoothing).

    . tools/env.sh && python benchmarks/bench_perception.py [--frames 60] [--cycles 6]
        [--skip-graph] [--profile] [--threads]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values, q):
    """The q-th percentile (0-100) of values."""
    return float(np.percentile(np.asarray(values, float), q)) if values else float('nan')


def frames_640x480():
    """RGB 640x480 frames of the real photos installed packages ship."""
    import cv2

    from emotion_ros.sample_media import sample_images
    return {name: np.ascontiguousarray(cv2.resize(cv2.imread(str(p)), (640, 480))[:, :, ::-1])
            for name, p in sample_images().items()}


def _robot(every_frame: bool, **light):
    """config/robot.yaml; ``every_frame``: detection and emotion on every processed frame."""
    import dataclasses

    from emotion_ros.config.robot import load_robot_config
    robot = load_robot_config(str(ROOT / 'config' / 'robot.yaml'))
    perception = robot.perception
    if every_frame:
        perception = dataclasses.replace(perception, reuse=dataclasses.replace(
            perception.reuse, detect_on_change=False, reuse_emotion=False))
    if light:
        emotion = dataclasses.replace(perception.emotion, light=dataclasses.replace(
            perception.emotion.light, **light))
        perception = dataclasses.replace(perception, emotion=emotion)
    return dataclasses.replace(robot, perception=perception)


def _camera_frames(rgb, n, sigma, seed=0):
    """``n`` frames of one still scene as a camera gives them: Gaussian sensor noise."""
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0.0, sigma, rgb.shape).astype(np.float32) for _ in range(4)]
    return [np.clip(rgb + noise[i % 4], 0, 255).astype(np.uint8) for i in range(n)]


STAGE_KEYS = ('decode', 'detect', 'track', 'emotion', 'face search', 'expression', 'persons',
              'publish', 'total', 'CPU')


def bench_stages(n_frames: int, sigma: float, profile: bool, threads: bool) -> None:
    """Part 1: per-stage times of the perception node's processing of one frame.

    Two configurations in one run: every processed frame detected and scored (the reuse
    rules off: what a frame costs when the scene changes) and the shipped defaults (detect
    on change, emotion reuse) on a still camera with sensor noise; frames 0.2 s apart (the
    5 Hz processing rate).
    """
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    from emotion_ros.perception.image_codec import encode_jpeg
    from emotion_ros.perception.pipeline import PerceptionPipeline
    from emotion_ros.ros import conversions

    photos = frames_640x480()
    print(f'\n## Part 1: per-stage time, 640x480, {n_frames} frames per photo 0.2 s apart, '
          f'sensor noise sigma {sigma:g}; median ms per processed frame (mean in brackets '
          'where it differs by more than 20 %)')
    print('| config | photo | persons | ' + ' | '.join(STAGE_KEYS) + ' | detector runs | '
          'persons scored / reused | decode if JPEG |')
    print('|---|---|---|' + '---|' * len(STAGE_KEYS) + '---|---|---|')
    configs = [('every frame', _robot(True)), ('defaults', _robot(False))]
    if threads:
        configs.append(('every frame, light.threads 2', _robot(True, threads=2)))
        configs.append(('every frame, flip_average off', _robot(True, flip_average=False)))
    for label, robot in configs:
        pipeline = PerceptionPipeline(robot.perception)
        pipeline.load()
        if label == 'every frame':
            print(f'<!-- models: {pipeline.model_id} -->')
        t_base = 0.0
        for name, rgb in photos.items():
            times = {k: [] for k in STAGE_KEYS}
            persons = 0
            runs0, scored0, reused0 = (pipeline.gate.runs, pipeline.emotions.scored,
                                       pipeline.emotions.reused)
            frames = _camera_frames(rgb, n_frames + 3, sigma)
            for i, frame in enumerate(frames):
                stamp = t_base + 0.2 * i
                msg = conversions.rgb_to_image(frame, conversions.make_header(stamp, 'camera'))
                c0 = time.process_time()
                t0 = time.perf_counter()
                decoded = conversions.image_to_rgb(msg)
                t1 = time.perf_counter()
                result = pipeline.process(decoded, stamp, 'camera')
                t2 = time.perf_counter()
                serialize_message(conversions.frame_to_msg(result, 0.0))
                t3 = time.perf_counter()
                c1 = time.process_time()
                if i < 3:
                    continue  # warm-up
                times['decode'].append((t1 - t0) * 1e3)
                for k in ('detect', 'track', 'emotion', 'persons'):
                    times[k].append(result.timings_ms[k])
                light = getattr(pipeline.backend, 'last_timings_ms', {})
                scored = result.timings_ms['emotion'] > 1.0
                times['face search'].append(light.get('face_search', 0.0) if scored else 0.0)
                times['expression'].append(light.get('expression', 0.0) if scored else 0.0)
                times['publish'].append((t3 - t2) * 1e3)
                times['total'].append((t3 - t0) * 1e3)
                times['CPU'].append((c1 - c0) * 1e3)
                persons = len(result.persons)
            t_base += 100.0
            jpeg = CompressedImage(format='jpeg', data=encode_jpeg(rgb, 90))
            jpeg_ms = []
            for _ in range(20):
                t0 = time.perf_counter()
                conversions.compressed_to_rgb(jpeg)
                jpeg_ms.append((time.perf_counter() - t0) * 1e3)

            def cell(values):
                med, mean = statistics.median(values), statistics.fmean(values)
                if abs(mean - med) > 0.2 * max(med, 0.5):
                    return f'{med:.1f} ({mean:.1f})'
                return f'{med:.1f}'
            print(f'| {label} | {name} | {persons} | '
                  + ' | '.join(cell(times[k]) for k in STAGE_KEYS)
                  + f' | {pipeline.gate.runs - runs0} / {len(frames)} | '
                  f'{pipeline.emotions.scored - scored0} / {pipeline.emotions.reused - reused0} '
                  f'| {statistics.median(jpeg_ms):.1f} |')
        pipeline.close()
    if profile:
        _profile(photos['zidane'], n_frames)


def _profile(rgb, n_frames: int) -> None:
    """cProfile of the every-frame pipeline on one photo: where a full frame's time goes."""
    import cProfile
    import pstats

    from emotion_ros.perception.pipeline import PerceptionPipeline
    pipeline = PerceptionPipeline(_robot(True).perception)
    pipeline.load()
    frames = _camera_frames(rgb, n_frames + 3, 2.0)
    for i in range(3):
        pipeline.process(frames[i], 0.2 * i)
    prof = cProfile.Profile()
    wall = time.perf_counter()
    prof.enable()
    for i, frame in enumerate(frames[3:]):
        pipeline.process(frame, 1.0 + 0.2 * i)
    prof.disable()
    wall = (time.perf_counter() - wall) * 1e3 / n_frames
    pipeline.close()
    stats = pstats.Stats(prof)
    rows = sorted(((tt, nc, func) for func, (cc, nc, tt, ct, callers) in stats.stats.items()),
                  reverse=True)[:12]
    print(f'\n## Profile: every-frame pipeline on zidane.jpg, {n_frames} frames, '
          f'{wall:.1f} ms per frame (wall, profiled)')
    print('| function (own time) | calls per frame | ms per frame | share |')
    print('|---|---|---|---|')
    for tt, nc, (path, line, func) in rows:
        where = f'{Path(path).name}:{line} {func}' if path != '~' else func
        print(f'| `{where}` | {nc / n_frames:.1f} | {tt * 1e3 / n_frames:.1f} | '
              f'{100 * tt * 1e3 / n_frames / wall:.0f} % |')


def bench_graph(cycles: int) -> None:
    """Part 2: frame-to-alert latency through the running node graph."""
    import rclpy
    from emotion_ros_msgs.msg import DistressAlert, PersonEmotionArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from emotion_ros.ros import conversions

    env = dict(os.environ)
    exe = Path(sys.executable).parent
    params = ['--ros-args', '--params-file', str(ROOT / 'config' / 'robot.yaml')]
    logdir = ROOT / 'build' / 'bench_logs'
    logdir.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([str(exe / 'perception_node'), *params, '-p', 'autostart:=true'],
                              stdout=open(logdir / 'perception.log', 'w'),
                              stderr=subprocess.STDOUT, env=env),
             subprocess.Popen([str(exe / 'distress_node'), *params],
                              stdout=open(logdir / 'distress.log', 'w'),
                              stderr=subprocess.STDOUT, env=env)]
    rclpy.init()
    node = rclpy.create_node('bench_driver')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    est_latency, alert_latency, time_to_alert = [], [], []
    onset = {'t': None, 'alerted': False}

    def on_persons(msg):
        est_latency.append((time.time() - conversions.stamp_to_sec(msg.header.stamp)) * 1e3)

    def on_alert(msg):
        now = time.time()
        alert_latency.append((now - conversions.stamp_to_sec(msg.header.stamp)) * 1e3)
        if onset['t'] is not None and not onset['alerted']:
            time_to_alert.append((now - onset['t']) * 1e3)
            onset['alerted'] = True

    node.create_subscription(PersonEmotionArray, 'persons', on_persons, 10)
    node.create_subscription(DistressAlert, 'distress_alerts', on_alert, 50)
    pub = node.create_publisher(Image, 'image', 5)
    photos = frames_640x480()
    people = photos['bus']
    empty = np.full_like(people, 60)
    deadline = time.monotonic() + 120
    while not est_latency:  # wait for models to load and the graph to connect
        pub.publish(conversions.rgb_to_image(empty, conversions.make_header(time.time())))
        executor.spin_once(timeout_sec=0.1)
        if time.monotonic() > deadline:
            raise RuntimeError(f'perception_node did not answer; see {logdir}')
    est_latency.clear()
    period = 1 / 15
    start = time.monotonic()
    next_frame = start
    sent = 0
    while time.monotonic() - start < cycles * 6.0:
        phase = (time.monotonic() - start) % 6.0
        visible = phase < 3.0
        if visible and onset['t'] is None:
            onset.update(t=time.time(), alerted=False)
        if not visible:
            onset['t'] = None
        now = time.monotonic()
        if now >= next_frame:
            pub.publish(conversions.rgb_to_image(people if visible else empty,
                                                 conversions.make_header(time.time(), 'cam')))
            sent += 1
            next_frame += period
        executor.spin_once(timeout_sec=max(0.0, next_frame - time.monotonic()))
    elapsed = time.monotonic() - start
    for proc in procs:
        proc.send_signal(2)
        proc.wait(10)
    node.destroy_node()
    rclpy.shutdown()
    print(f'\n## Part 2: node graph, 640x480 at {sent / elapsed:.1f} FPS for {elapsed:.0f} s, '
          f'{cycles} appearances')
    print(f'estimates: {len(est_latency)} ({len(est_latency) / elapsed:.1f} Hz)')
    print('| latency | n | p50 | p95 | max |')
    print('|---|---|---|---|---|')
    for name, values in (('camera stamp -> estimates received', est_latency),
                         ('triggering frame -> alert received', alert_latency),
                         ('people appear -> first alert received', time_to_alert)):
        print(f'| {name} | {len(values)} | {pct(values, 50):.0f} ms | {pct(values, 95):.0f} ms '
              f'| {max(values) if values else float("nan"):.0f} ms |')


def main() -> None:
    """Run both parts and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--frames', type=int, default=40, help='frames per photo in part 1')
    parser.add_argument('--noise', type=float, default=2.0,
                        help='sensor noise (grey levels) of the still frames in part 1')
    parser.add_argument('--profile', action='store_true', help='also print a cProfile table')
    parser.add_argument('--threads', action='store_true',
                        help='also time light.threads 2 and flip_average off')
    parser.add_argument('--cycles', type=int, default=6, help='appearances in part 2')
    parser.add_argument('--skip-graph', action='store_true', help='only run part 1')
    args = parser.parse_args()
    for var in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', 'ROS_LOG_DIR'):
        if var not in os.environ:
            sys.exit(f'{var} is not set: source tools/env.sh first')
    print(f'# perception benchmark on {platform.node()}: {os.cpu_count()} CPUs, '
          f'{platform.processor() or platform.machine()}, Python {platform.python_version()}')
    print(f'load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} '
          f'{os.getloadavg()[2]:.2f} (the machine may be shared)')
    bench_stages(args.frames, args.noise, args.profile, args.threads)
    if not args.skip_graph:
        bench_graph(args.cycles)


if __name__ == '__main__':
    main()
