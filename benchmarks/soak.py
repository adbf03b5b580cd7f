"""Soak benchmark: the node graph for a long time, sampling memory, rates and help calls.

Starts perception_node (autostart), audio_node, distress_node and microphone_node
(playing a WAV loop with a spoken call for help every ``--help-period-s``) as
separate processes with ``config/robot.yaml``; a driver publishes a 640x480
camera stream at ``--fps`` in which people (ultralytics' bus.jpg) are visible
for two thirds of every ``--scene-s`` cycle and the scene is empty otherwise (so
tracks are created and forgotten all the time). Every ``--sample-s`` it samples
each node's resident memory (RSS), the estimate, audio-cue and alert rates and
the help calls heard, and finally prints a table, writes ``soak.json`` (every
sample, written as it goes, so a run cut short keeps its data) and
``soak.png``. A help call counts as detected when an AudioCues message with
``help_detected`` is stamped within 8 s after it was spoken.

Memory growth is judged after ``--warmup-min``: the mean RSS of the last
``--window-min`` minutes against the first ``--window-min`` after warm-up, and
the slope of a least-squares line (MB per hour).

    . tools/env.sh && nice -n 10 python benchmarks/soak.py --minutes 60 --out build/soak

``--src DIR`` runs the nodes from another checkout (e.g. a clone of main made
for the run) instead of this working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emotion_ros.audio.pcm import SAMPLE_RATE  # noqa: E402  (after the path)

NODES = ('perception_node', 'audio_node', 'distress_node', 'microphone_node')
SIZE = (640, 480)
AUDIO_RATE = SAMPLE_RATE
CALL_OFFSET_S = 5.0  # where the call for help starts in each loop of the WAV
HELP_TEXT = 'Help! Somebody help me!'
MIC_DELAY_S = 15.0  # the driver listens before the first audio frame (it defines call times)
DETECT_WINDOW_S = 8.0  # a detection stamped up to this long after the call's start counts
DELIVERY_MARGIN_S = 7.0  # a call is judged this long after its window (cues still in flight)


def build_help_wav(path: Path, period_s: float, seed: int = 0) -> float:
    """A ``period_s`` WAV: quiet room noise with a call for help at CALL_OFFSET_S.

    Returns:
        The call's length in seconds.
    """
    from emotion_ros.audio.features import resample
    from emotion_ros.audio.pcm import read_wav, write_wav
    if shutil.which('espeak-ng') is None:
        sys.exit('espeak-ng is missing: run make setup (it installs it with apt)')
    raw = path.with_suffix('.speech.wav')
    subprocess.run(['espeak-ng', '-s', '140', '-w', str(raw), HELP_TEXT], check=True)
    samples, rate = read_wav(raw)
    speech = samples.mean(axis=1) if samples.ndim == 2 else samples
    speech = resample(speech, rate, AUDIO_RATE)
    rng = np.random.default_rng(seed)
    track = (0.003 * rng.standard_normal(int(period_s * AUDIO_RATE))).astype(np.float32)
    start = int(CALL_OFFSET_S * AUDIO_RATE)
    if start + speech.size > track.size:
        sys.exit(f'--help-period-s {period_s} is too short for the call ({speech.size / 16e3:.1f}'
                 f' s from {CALL_OFFSET_S} s)')
    track[start:start + speech.size] += 0.8 * speech / max(1e-6, float(np.abs(speech).max()))
    write_wav(path, track, AUDIO_RATE)
    return speech.size / AUDIO_RATE


def camera_frames() -> Dict[str, np.ndarray]:
    """The people frame (bus.jpg) and an empty frame, RGB 640x480."""
    import cv2

    from emotion_ros.sample_media import sample_images
    bgr = cv2.resize(cv2.imread(str(sample_images()['bus'])), SIZE)
    people = np.ascontiguousarray(bgr[:, :, ::-1])
    return {'people': people, 'empty': np.full_like(people, 60)}


class Graph:
    """The node processes (from ``src``), with their logs under ``out``."""

    def __init__(self, src: Path, out: Path, wav: Path, namespace: str) -> None:
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join([str(src), env.get('PYTHONPATH', '')])
        env['EMOTION_ROS_ROOT'] = str(src)
        params = ['--ros-args', '--params-file', str(src / 'config' / 'robot.yaml'),
                  '-r', f'__ns:={namespace}']
        extra = {'perception_node': ['-p', 'autostart:=true'],
                 'microphone_node': ['-p', 'source:=wav', '-p', f'wav_path:={wav}',
                                     '-p', 'wav_loop:=true',
                                     '-p', f'wav_start_delay_s:={MIC_DELAY_S}']}
        self.procs: Dict[str, subprocess.Popen] = {}
        self.logs: Dict[str, Path] = {}
        for name in NODES:
            self.logs[name] = out / f'{name}.log'
            self.procs[name] = subprocess.Popen(
                [sys.executable, '-m', f'emotion_ros.ros.{name}', *params,
                 *extra.get(name, [])],
                stdout=open(self.logs[name], 'w'), stderr=subprocess.STDOUT, env=env,
                cwd=str(src), start_new_session=True)

    def rss_mb(self) -> Dict[str, Optional[float]]:
        """Resident memory of each node process in MB (None once it has exited)."""
        import psutil
        out: Dict[str, Optional[float]] = {}
        for name, proc in self.procs.items():
            try:
                out[name] = psutil.Process(proc.pid).memory_info().rss / 1e6 \
                    if proc.poll() is None else None
            except psutil.Error:
                out[name] = None
        return out

    def dead(self) -> List[str]:
        """Nodes whose process has exited."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        """SIGINT every node, then SIGKILL what is left after 10 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class Driver:
    """Publishes the camera stream and records what the graph answers."""

    def __init__(self, namespace: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from emotion_ros_msgs.msg import (AudioCues, AudioFrame, DistressAlert,
                                          PersonEmotionArray)
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from rclpy.signals import SignalHandlerOptions
        # Our own SIGINT/SIGTERM handlers end the run cleanly (graph stopped, results written).
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('soak_driver', namespace=namespace)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.counts = {'estimates': 0, 'persons': 0, 'cues': 0, 'alerts': 0,
                       'help_alerts': 0, 'frames_sent': 0}
        self.help_stamps: List[float] = []
        # (arrival wall time, stamp) of help cues and of alerts naming help: the live delay.
        self.help_cue_arrivals: List[Tuple[float, float]] = []
        self.help_alert_arrivals: List[Tuple[float, float]] = []
        # (stamp, arrival wall time) of every audio message: when a call's end was heard.
        self.audio_arrivals: List[Tuple[float, float]] = []
        self.first_audio_stamp: Optional[float] = None
        self.audio_starts: List[float] = []
        self.last_audio_stamp = -1.0
        self.diagnostics: Dict[str, Dict[str, str]] = {}
        self.levels: Dict[str, int] = {}
        node = self.node
        node.create_subscription(PersonEmotionArray, 'persons', self._on_persons, 20)
        node.create_subscription(AudioCues, 'audio_cues', self._on_cues, 50)
        node.create_subscription(DistressAlert, 'distress_alerts', self._on_alert, 50)
        node.create_subscription(AudioFrame, 'audio', self._on_audio, 50)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 50)
        self.pub = node.create_publisher(Image, 'image', qos_profile_sensor_data)

    @staticmethod
    def _stamp(msg) -> float:
        return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def _on_persons(self, msg) -> None:
        self.counts['estimates'] += 1
        self.counts['persons'] += len(msg.persons)

    def _on_cues(self, msg) -> None:
        self.counts['cues'] += 1
        if msg.help_detected:
            self.help_stamps.append(self._stamp(msg))
            self.help_cue_arrivals.append((time.time(), self._stamp(msg)))

    def _on_alert(self, msg) -> None:
        self.counts['alerts'] += 1
        if any('help' in reason.lower() for reason in msg.reasons):
            self.counts['help_alerts'] += 1
            self.help_alert_arrivals.append((time.time(), self._stamp(msg)))

    def _on_audio(self, msg) -> None:
        stamp = self._stamp(msg)
        self.audio_arrivals.append((stamp, time.time()))
        # The microphone starts after a delay, once we listen: the first frame is the start
        # of the file. A stamp going back or jumping ahead means its source was restarted
        # (the file starts over): calls are then counted from the new start.
        if (self.first_audio_stamp is None or stamp < self.last_audio_stamp
                or stamp > self.last_audio_stamp + 2.0):
            self.audio_starts.append(stamp)
            self.first_audio_stamp = stamp
        self.last_audio_stamp = stamp

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            name = status.name.replace('emotion_ros: ', '').rsplit('/', 1)[-1]
            self.diagnostics[name] = {kv.key: kv.value for kv in status.values}
            self.levels[name] = int.from_bytes(status.level, 'little') \
                if isinstance(status.level, bytes) else int(status.level)

    def publish(self, rgb: np.ndarray) -> None:
        """Publish one camera frame stamped now."""
        from emotion_ros.ros import conversions
        self.pub.publish(conversions.rgb_to_image(
            rgb, conversions.make_header(time.time(), 'camera')))
        self.counts['frames_sent'] += 1

    def spin(self, timeout: float) -> None:
        """Handle incoming messages for at most ``timeout`` seconds."""
        self.executor.spin_once(timeout_sec=max(0.0, timeout))

    def help_calls(self, period_s: float, until: float, since: float = 0.0) -> Dict[str, int]:
        """Calls spoken so far (whose detection window ended before ``until``, with a margin
        for delivery) and how many of them were detected.

        ``until`` and ``since`` are this machine's wall clock; the calls and cues carry the
        microphone's stamps, which need not follow it (a WAV source stamps by its samples),
        so both are moved into the stamps' time by the offset of the latest audio message
        (its stamp against its arrival here).
        """
        if self.audio_arrivals:
            stamp, arrived = self.audio_arrivals[-1]
            until, since = until - (arrived - stamp), since - (arrived - stamp)
        calls: List[float] = []
        starts = self.audio_starts + [float('inf')]
        for start, end in zip(starts, starts[1:]):
            t = start + CALL_OFFSET_S
            while t < min(end, until - DETECT_WINDOW_S - DELIVERY_MARGIN_S):
                if t >= since:  # calls before the graph was ready are not counted
                    calls.append(t)
                t += period_s
        heard = np.asarray(self.help_stamps)
        detected = sum(1 for t in calls if heard.size and np.any(
            (heard >= t - 1.0) & (heard <= t + DETECT_WINDOW_S)))
        self.call_times = calls
        return {'calls': len(calls), 'detected': int(detected)}

    def call_delays(self, call_s: float) -> Dict[str, Any]:
        """Seconds from the end of each counted call to the arrival of its first help cue
        and of the first alert naming help, with p50/p95.

        The end of a call is when the audio message holding its last sample arrived here
        (the microphone source's stamps need not follow this machine's wall clock), so the
        delay is the graph's: decoding, queues, fusion and transport.
        """
        import bisect
        stamps = [stamp for stamp, _ in self.audio_arrivals]
        out: Dict[str, Any] = {}
        for name, arrivals in (('cue', self.help_cue_arrivals),
                               ('alert', self.help_alert_arrivals)):
            delays = []
            for t in getattr(self, 'call_times', []):
                late = [wall for wall, stamp in arrivals
                        if t - 1.0 <= stamp <= t + DETECT_WINDOW_S]
                k = bisect.bisect_right(stamps, t + call_s) - 1  # the message with the end
                if late and k >= 0:
                    delays.append(min(late) - self.audio_arrivals[k][1])
            out[name] = {'n': len(delays), 'delays_s': delays}
            if delays:
                out[name].update(p50=float(np.percentile(delays, 50)),
                                 p95=float(np.percentile(delays, 95)))
        return out

    def close(self) -> None:
        """Destroy the driver node."""
        import rclpy
        self.node.destroy_node()
        rclpy.try_shutdown()


def growth(samples: List[dict], node: str, warmup_s: float, window_s: float) -> dict:
    """RSS growth of ``node`` after warm-up: first vs last window, and the fitted slope."""
    points = [(s['t'], s['rss_mb'][node]) for s in samples
              if s['t'] >= warmup_s and s['rss_mb'].get(node) is not None]
    if len(points) < 3:
        return {'n': len(points)}
    t = np.array([p[0] for p in points])
    rss = np.array([p[1] for p in points])
    first = rss[t <= t[0] + window_s].mean()
    last = rss[t >= t[-1] - window_s].mean()
    slope = np.polyfit(t / 3600.0, rss, 1)[0] if t[-1] > t[0] else 0.0
    return {'n': len(points), 'first_mb': float(first), 'last_mb': float(last),
            'growth_pct': float(100 * (last - first) / first), 'slope_mb_per_h': float(slope),
            'min_mb': float(rss.min()), 'max_mb': float(rss.max())}


def plot(path: Path, result: dict) -> None:
    """RSS per node, rates and help calls over time."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    samples = result['samples']
    t = np.array([s['t'] for s in samples]) / 60.0
    fig, axes = plt.subplots(4, 1, figsize=(10, 13), sharex=True)
    warmup = result['config']['warmup_min']
    for node in NODES:
        rss = np.array([s['rss_mb'].get(node) or np.nan for s in samples], float)
        axes[0].plot(t, rss, label=node)
        after = rss[t >= warmup]
        base = after[np.isfinite(after)][:1]
        if base.size:
            axes[1].plot(t, 100 * (rss / base[0] - 1), label=node)
    for ax in axes[:2]:
        ax.axvline(warmup, color='grey', ls='--', lw=0.8)
        ax.legend(fontsize=8)
    axes[0].set_ylabel('RSS (MB)')
    axes[1].set_ylabel('RSS vs first sample\nafter warm-up (%)')
    axes[1].axhline(5, color='red', ls=':', lw=0.8)
    axes[0].set_title(f'soak: {result["elapsed_min"]:.0f} min on {result["machine"]["host"]} '
                      f'({result["machine"]["cpus"]} CPUs), nodes at {result["commit"]}')
    axes = axes[1:]
    for key, label in (('estimate_hz', 'estimates/s'), ('cue_hz', 'audio cues/s'),
                       ('fps_sent', 'camera FPS sent'), ('alert_per_min', 'alerts/min')):
        axes[1].plot(t, [s[key] for s in samples], label=label)
    axes[1].set_ylabel('rate')
    axes[1].legend(fontsize=8)
    axes[2].plot(t, [s['help']['calls'] for s in samples], label='help calls spoken')
    axes[2].plot(t, [s['help']['detected'] for s in samples], label='help calls detected')
    axes[2].plot(t, [s['help_alerts'] for s in samples], label='alerts naming help')
    axes[2].set_ylabel('cumulative')
    axes[2].set_xlabel('minutes')
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    """Run the soak and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=60.0, help='how long to run')
    parser.add_argument('--fps', type=float, default=15.0, help='camera frame rate')
    parser.add_argument('--help-period-s', type=float, default=30.0,
                        help='a call for help every this many seconds (WAV loop length)')
    parser.add_argument('--scene-s', type=float, default=30.0,
                        help='people visible for 2/3 of each cycle of this length')
    parser.add_argument('--sample-s', type=float, default=30.0, help='sampling period')
    parser.add_argument('--warmup-min', type=float, default=5.0,
                        help='minutes excluded from the growth judgement')
    parser.add_argument('--window-min', type=float, default=5.0,
                        help='minutes averaged at each end for the growth')
    parser.add_argument('--out', default=str(ROOT / 'build' / 'soak'), help='output folder')
    parser.add_argument('--src', default=str(ROOT), help='checkout to run the nodes from')
    parser.add_argument('--replot', metavar='SOAK_JSON',
                        help='only draw the plot of an earlier run (next to its JSON)')
    parser.add_argument('--namespace', default='/soak',
                        help='namespace of the graph (keeps tests on the same domain apart)')
    args = parser.parse_args(argv)
    if args.replot:
        path = Path(args.replot)
        plot(path.with_suffix('.png'), json.loads(path.read_text()))
        return 0
    for var in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', 'ROS_LOG_DIR'):
        if var not in os.environ:
            sys.exit(f'{var} is not set: source tools/env.sh first')
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.src).resolve()
    wav = out / 'help_loop.wav'
    args.call_s = build_help_wav(wav, args.help_period_s)
    frames = camera_frames()
    stop = {'now': False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    machine = {'host': platform.node(), 'cpus': os.cpu_count(),
               'cpu': platform.processor() or platform.machine(),
               'python': platform.python_version(),
               'load_at_start': os.getloadavg()}
    try:
        import psutil
        machine['ram_gb'] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        sys.exit('psutil is missing: pip install psutil')
    try:
        commit = subprocess.run(['git', '-C', str(src), 'rev-parse', '--short', 'HEAD'],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ''
    graph = Graph(src, out, wav, args.namespace)
    try:
        driver = Driver(args.namespace)
        return _run(args, out, src, commit, machine, graph, driver, stop, frames)
    finally:
        graph.stop()


def _run(args, out: Path, src: Path, commit: str, machine: dict, graph: Graph, driver: Driver,
         stop: dict, frames: Dict[str, np.ndarray]) -> int:
    keys = ('minutes', 'fps', 'help_period_s', 'scene_s', 'sample_s', 'warmup_min',
            'window_min')
    config = {k: getattr(args, k) for k in keys}
    result = {'config': config, 'machine': machine, 'src': str(src), 'commit': commit,
              'samples': [], 'elapsed_min': 0.0}
    print(f'# soak: {args.minutes:.0f} min, {args.fps} FPS, a call for help every '
          f'{args.help_period_s:.0f} s; nodes from {src} ({commit}); output in {out}',
          flush=True)
    # Wait for the graph: estimates and audio cues flowing.
    deadline = time.monotonic() + 180 + MIC_DELAY_S
    while not (driver.counts['estimates'] and driver.counts['cues']):
        driver.publish(frames['empty'])
        driver.spin(0.1)
        if time.monotonic() > deadline or graph.dead() or stop['now']:
            print(f'the graph did not start (dead: {graph.dead()}); logs in {out}')
            return 1
    print(f'| min | {" | ".join(n.replace("_node", "") + " MB" for n in NODES)} | est/s | '
          'cues/s | FPS sent | alerts/min | help heard/spoken | errors |', flush=True)
    print('|---' * (len(NODES) + 7) + '|', flush=True)
    start = time.monotonic()
    ready_wall = time.time()
    period = 1.0 / args.fps
    next_frame = start
    next_sample = start + args.sample_s
    last = dict(driver.counts, t=start)
    while not stop['now'] and time.monotonic() - start < args.minutes * 60:
        now = time.monotonic()
        if now >= next_frame:
            phase = (now - start) % args.scene_s
            driver.publish(frames['people'] if phase < args.scene_s * 2 / 3 else frames['empty'])
            next_frame += period
            if next_frame < now - 1.0:  # fell behind (machine busy): do not burst
                next_frame = now + period
        if now >= next_sample:
            dt = now - last['t']
            counts = driver.counts
            sample = {
                't': now - start, 'rss_mb': graph.rss_mb(),
                'estimate_hz': (counts['estimates'] - last['estimates']) / dt,
                'cue_hz': (counts['cues'] - last['cues']) / dt,
                'fps_sent': (counts['frames_sent'] - last['frames_sent']) / dt,
                'alert_per_min': 60 * (counts['alerts'] - last['alerts']) / dt,
                'help_alerts': counts['help_alerts'],
                'help': driver.help_calls(args.help_period_s, time.time(), ready_wall),
                'errors': {n: driver.diagnostics.get(n, {}).get('errors_total', '0')
                           for n in NODES},
                'dead': graph.dead(), 'load': os.getloadavg()[0]}
            result['samples'].append(sample)
            result['elapsed_min'] = sample['t'] / 60
            last = dict(counts, t=now)
            rss = ' | '.join(f'{v:.0f}' if v is not None else 'dead'
                             for v in sample['rss_mb'].values())
            print(f'| {sample["t"] / 60:.1f} | {rss} | {sample["estimate_hz"]:.2f} | '
                  f'{sample["cue_hz"]:.2f} | {sample["fps_sent"]:.1f} | '
                  f'{sample["alert_per_min"]:.1f} | {sample["help"]["detected"]}/'
                  f'{sample["help"]["calls"]} | '
                  f'{sum(int(v or 0) for v in sample["errors"].values())} |', flush=True)
            (out / 'soak.json').write_text(json.dumps(result, indent=1))
            next_sample += args.sample_s
        driver.spin(min(next_frame, next_sample) - time.monotonic())
    graph.stop()
    result['diagnostics_at_end'] = driver.diagnostics
    result['help_call_stamps'] = getattr(driver, 'call_times', [])
    result['help_detected_stamps'] = driver.help_stamps
    result['call_delays'] = driver.call_delays(args.call_s)
    result['audio_starts'] = driver.audio_starts
    # How far the microphone's stamps are behind this machine's clock (arrival - stamp).
    result['audio_stamp_lag_s'] = [round(arrived - stamp, 3) for stamp, arrived in
                                   driver.audio_arrivals[::max(1, len(driver.audio_arrivals)
                                                               // 20)]]
    result['levels_at_end'] = driver.levels
    driver.close()
    samples = result['samples']
    warmup_s, window_s = args.warmup_min * 60, args.window_min * 60
    result['growth'] = {n: growth(samples, n, warmup_s, window_s) for n in NODES}
    after = [s for s in samples if s['t'] >= warmup_s] or samples
    result['rates_after_warmup'] = {}
    for key in ('estimate_hz', 'cue_hz', 'fps_sent', 'alert_per_min'):
        values = [s[key] for s in after]
        if values:
            result['rates_after_warmup'][key] = {
                'mean': float(np.mean(values)), 'min': float(np.min(values)),
                'max': float(np.max(values))}
    result['help_final'] = samples[-1]['help'] if samples else {}
    (out / 'soak.json').write_text(json.dumps(result, indent=1))
    if samples:
        plot(out / 'soak.png', result)
    print(f'\n## after {result["elapsed_min"]:.1f} min (warm-up {args.warmup_min:.0f} min)')
    print('| node | RSS first window | RSS last window | growth | slope | min-max |')
    print('|---|---|---|---|---|---|')
    for node, g in result['growth'].items():
        if 'growth_pct' in g:
            print(f'| {node} | {g["first_mb"]:.0f} MB | {g["last_mb"]:.0f} MB | '
                  f'{g["growth_pct"]:+.1f} % | {g["slope_mb_per_h"]:+.1f} MB/h | '
                  f'{g["min_mb"]:.0f}-{g["max_mb"]:.0f} MB |')
        else:
            print(f'| {node} | too few samples after warm-up ({g["n"]}) |||||')
    for key, r in result['rates_after_warmup'].items():
        print(f'{key}: mean {r["mean"]:.2f}, min {r["min"]:.2f}, max {r["max"]:.2f}')
    help_final = result['help_final']
    print(f'help calls detected: {help_final.get("detected")}/{help_final.get("calls")}; '
          f'alerts naming help: {samples[-1]["help_alerts"] if samples else 0}')
    for name, d in result['call_delays'].items():
        if d['n']:
            print(f'end of call -> first {name} naming help (arrival, wall clock): '
                  f'p50 {d["p50"]:.2f} s, p95 {d["p95"]:.2f} s over {d["n"]} calls')
    print(f'wrote {out / "soak.json"} and {out / "soak.png"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
