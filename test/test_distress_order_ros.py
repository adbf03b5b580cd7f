"""distress_node fuses its inputs in stamp order: real topics, messages published out of order.

The test publishes the same scenarios (people in view, then a call for help: a transcript,
the audio cue windows and the person estimates of the same moments) to distress_node
processes: in stamp order, and with each scenario's messages of those moments published
in reverse order or in a random order (the reordering is made here, within the nodes'
hold time), and requires the same alerts. Nodes with ``input_hold_s`` 0 (each input fused
on arrival) get the same publications: there the reversed order changes the alerts, so
the hold is what makes them equal.
"""

from __future__ import annotations

import time
from typing import Dict, List, Tuple

import numpy as np
from emotion_ros_msgs.msg import AudioCues, DistressAlert, PersonEmotionArray, Transcript

from conftest import wait_until
from emotion_ros.llm.contract import CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.ros import conversions
from emotion_ros.types import (AudioCueResult, EmotionOutput, FrameResult, PersonEstimate,
                               Transcript as TranscriptResult)
from rosgraph import params

#: Scenarios, each on its own camera and microphone, SPACING_S apart in message time (less
#: than max_future_s: the nodes judge stamps against the newest one, use_node_clock false).
SCENARIOS = 8
SPACING_S = 6.0
T0 = 1000.0
#: The hold time of the ordering nodes: far longer than one scenario's reordered messages
#: take to publish (about 0.3 s), so a loaded machine does not spread them beyond it.
HOLD_S = 2.0
#: Pause between two publications (s): each message arrives on its own, not in a batch the
#: executor would hand out in subscription order.
GAP_S = 0.02

BOXES = {1: (100, 50, 160, 250), 2: (400, 50, 460, 250)}

#: One message to publish: (stamp, kind, value).
Message = Tuple[float, str, object]


def estimate(track_id: int, fear: float) -> PersonEstimate:
    """A person estimate: the fear score, valence low with fear."""
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[CATEGORY_INDEX['Fear']] = fear
    scores[CATEGORY_INDEX['Happiness']] = 0.8 if fear < 0.3 else 0.0
    valence = 6.5 - 5.0 * fear
    return PersonEstimate(track_id=track_id, box=BOXES[track_id], detection_confidence=0.9,
                          emotion=EmotionOutput(scores=scores, vad=(valence, 6.0, 4.0)),
                          model_id='test', evidence_weight=1.0)


def scenario(k: int) -> Tuple[List[Message], List[Message]]:
    """Scenario ``k``: (the lead-in, in stamp order; the moments of the call, in stamp order).

    Person 1 is in view from the start, person 2 from the start or from a moment during the
    call; either may be calm or frightened. During the call (a window of 0.4 to 1.2 s) the
    frames go on at 5 Hz, one to three cue windows (keyword hit, scream score, both or
    neither) and one transcript with a call for help arrive, at random moments of it.
    """
    rng = np.random.default_rng(100 + k)
    camera, mic = f'cam{k}', f'mic{k}'
    t0 = T0 + SPACING_S * k
    fear = {1: float(rng.choice([0.0, rng.uniform(0.3, 0.95)])),
            2: float(rng.choice([0.0, rng.uniform(0.3, 0.95)]))}
    call = t0 + 1.6
    span = float(rng.uniform(0.4, 1.2))
    enters = call + float(rng.uniform(-2.0, span))  # person 2 appears (before the lead-in)

    def frame(stamp):
        persons = [estimate(1, fear[1])] + ([estimate(2, fear[2])] if stamp >= enters else [])
        result = FrameResult(stamp=stamp, frame_id=camera, width=640, height=480,
                             persons=persons, timings_ms={})
        return stamp, 'frame', result

    lead_in = [frame(t0 + 0.2 * i) for i in range(8)]
    moments = [frame(call + 0.2 * i) for i in range(int(span / 0.2) + 1)]
    for _ in range(int(rng.integers(1, 4))):
        stamp = call + float(rng.uniform(0, span))
        heard = bool(rng.integers(2))
        cues = AudioCueResult(stamp=stamp, window_s=0.5, speech_probability=0.9,
                              voice_active=True, help_detected=heard,
                              keywords=['help'] if heard else [],
                              keyword_confidence=0.9 if heard else 0.0,
                              scream_score=float(rng.uniform(0, 1)), loudness_dbfs=-20.0,
                              pitch_hz=200.0, spectral_centroid_hz=900.0, vocal_arousal=6.0)
        moments.append((stamp, 'cues', cues))
    end = call + float(rng.uniform(0, span))
    words = str(rng.choice(['help me', 'please help', 'somebody help me']))
    moments.append((end, 'transcript', TranscriptResult(
        stamp=end - 1.0, end=end, frame_id=mic, text=f'{words} now', help_detected=True,
        help_phrase=words, confidence=0.9)))
    moments.sort(key=lambda m: m[0])
    return lead_in, [(stamp, kind, (value, mic)) if kind == 'cues' else (stamp, kind, value)
                     for stamp, kind, value in moments]


#: The distress_node processes: namespace -> (input_hold_s, the order of publication).
NODES = {'held_in_order': (HOLD_S, 'in_order'), 'held_reversed': (HOLD_S, 'reversed'),
         'held_shuffled': (HOLD_S, 'shuffled'),
         'unheld_in_order': (0.0, 'in_order'), 'unheld_reversed': (0.0, 'reversed')}
TOPICS = {'frame': (PersonEmotionArray, 'persons'), 'cues': (AudioCues, 'audio_cues'),
          'transcript': (Transcript, 'transcripts')}
COUNTERS = {'frame': 'person_frames_total', 'cues': 'audio_cues_total',
            'transcript': 'transcripts_total'}


def to_msg(kind: str, value):
    """The ROS message of one scenario message."""
    if kind == 'frame':
        return conversions.frame_to_msg(value, 1.0)
    if kind == 'cues':
        return conversions.cues_to_msg(*value)
    return conversions.transcript_to_msg(value)


class Graph:
    """The test's side: publishers to each node's namespace, its alerts and counters."""

    def __init__(self, ros_node):
        self.spin = ros_node.spin
        node = ros_node('order_driver')
        self.pubs = {ns: {kind: node.create_publisher(t, f'/{ns}/{name}', 50)
                          for kind, (t, name) in TOPICS.items()} for ns in NODES}
        self.alerts: Dict[str, List[DistressAlert]] = {ns: [] for ns in NODES}
        for ns in NODES:
            node.create_subscription(DistressAlert, f'/{ns}/distress_alerts',
                                     self.alerts[ns].append, 200)
        self.status: Dict[str, Dict[str, str]] = {ns: {} for ns in NODES}
        from diagnostic_msgs.msg import DiagnosticArray
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)
        self.sent = {ns: dict.fromkeys(TOPICS, 0) for ns in NODES}

    def _on_diagnostics(self, array) -> None:
        for status in array.status:
            ns = status.name.rpartition(': ')[2].partition('/')[0]
            if ns in self.status and status.name.endswith('/distress_node'):
                self.status[ns] = {kv.key: kv.value for kv in status.values}

    def publish(self, ns: str, kind: str, value) -> None:
        """Publish one message to the node in ``ns``."""
        self.pubs[ns][kind].publish(to_msg(kind, value))
        self.sent[ns][kind] += 1

    def counted(self, ns: str) -> Dict[str, int]:
        """Messages of each kind the node in ``ns`` reported received (/diagnostics)."""
        return {kind: int(self.status[ns].get(key, -1)) for kind, key in COUNTERS.items()}

    def all_counted(self) -> bool:
        """Every node reported receiving every message sent to it."""
        return all(self.counted(ns) == self.sent[ns] for ns in NODES)

    def connect(self, nodes) -> None:
        """Until every node counted a message of each kind (the whole path is up): a person
        frame with nobody in it, calm cues and a transcript without a call, on their own
        camera and microphone, before the scenarios' time line. Counts from then on."""
        stamps = iter(T0 - 5.0 + 0.001 * n for n in range(4000))

        def ready():
            for ns in NODES:
                for kind, have in self.counted(ns).items():
                    if have < 1:
                        self.publish(ns, kind, sync_message(kind, next(stamps)))
            wait_until(lambda: False, 0.3, self.spin)
            return all(min(self.counted(ns).values()) >= 1 for ns in NODES)
        assert wait_until(ready, 90), \
            {ns: (self.counted(ns), p.output()[-1500:]) for ns, p in nodes.items()}
        # Messages sent before a topic matched may never arrive: count from here on.
        wait_until(lambda: False, 1.0, self.spin)
        self.sent = {ns: self.counted(ns) for ns in NODES}


def sync_message(kind: str, stamp: float):
    """A message that gives the fusion no evidence (connection check)."""
    if kind == 'frame':
        return FrameResult(stamp=stamp, frame_id='sync_cam', width=640, height=480,
                           persons=[], timings_ms={})
    if kind == 'cues':
        return (AudioCueResult(stamp=stamp, window_s=0.5, speech_probability=0.0,
                               voice_active=False, help_detected=False, keywords=[],
                               keyword_confidence=0.0, scream_score=0.0, loudness_dbfs=-60.0,
                               pitch_hz=0.0, spectral_centroid_hz=0.0, vocal_arousal=0.0),
                'sync_mic')
    return TranscriptResult(stamp=stamp - 0.5, end=stamp, frame_id='sync_mic', text='')


def shuffled(moments: List[Message], k: int) -> List[Message]:
    """``moments`` in a random order of scenario ``k`` other than stamp order."""
    rng = np.random.default_rng(200 + k)
    while True:
        order = rng.permutation(len(moments))
        if list(order) != sorted(order):
            return [moments[i] for i in order]


def alert_key(alert: DistressAlert):
    """What must not depend on the publication order: level, reasons, track and the rest."""
    return (round(conversions.stamp_to_sec(alert.header.stamp), 3), alert.header.frame_id,
            alert.incident_id, alert.level, tuple(alert.reasons), alert.track_id, alert.camera)


def by_scenario(alerts: List[DistressAlert]) -> List[list]:
    """Alert keys per scenario (by their stamps)."""
    out: List[list] = [[] for _ in range(SCENARIOS)]
    for alert in alerts:
        k = int((conversions.stamp_to_sec(alert.header.stamp) - T0) // SPACING_S)
        assert 0 <= k < SCENARIOS, f'an alert outside the scenarios: {alert_key(alert)}'
        out[k].append(alert_key(alert))
    return out


def test_alerts_do_not_depend_on_the_order_messages_are_published_in(start_node, ros_node):
    """Eight scenarios, each a call for help (transcript, cue windows) with one or two people
    in view: the messages of the call's moments published in reverse stamp order, or in a
    random order (a 2 s hold), give the same alerts (level, reasons, track, incident,
    stamp) as published in stamp order, scenario by scenario; every node counted every
    message; with no hold (each input fused on arrival) the reversed publication changes
    the alerts of some scenario."""
    nodes = {ns: start_node('distress_node', *params(
        'use_node_clock:=false', 'expect_audio:=false', 'diagnostics_period_s:=0.3',
        'publish_markers:=false', f'input_hold_s:={hold}'), '-r', f'__ns:=/{ns}')
        for ns, (hold, _) in NODES.items()}
    graph = Graph(ros_node)
    graph.connect(nodes)
    for k in range(SCENARIOS):
        lead_in, moments = scenario(k)
        for _, kind, value in lead_in:
            for ns in NODES:
                graph.publish(ns, kind, value)
            graph.spin(GAP_S)
        orders = {'in_order': moments, 'reversed': moments[::-1],
                  'shuffled': shuffled(moments, k)}
        start = time.monotonic()
        for i in range(len(moments)):
            for ns, (_, order) in NODES.items():
                _, kind, value = orders[order][i]
                graph.publish(ns, kind, value)
            graph.spin(GAP_S)
        took = time.monotonic() - start
        assert took < HOLD_S / 2, f'scenario {k}: publishing took {took:.2f} s'
    assert wait_until(graph.all_counted, 60, graph.spin), \
        {ns: (graph.counted(ns), graph.sent[ns]) for ns in NODES}
    settle = time.monotonic() + HOLD_S + 1.0  # the held inputs are fused
    wait_until(lambda: time.monotonic() > settle, HOLD_S + 5, graph.spin)
    held = {ns: by_scenario(graph.alerts[ns]) for ns in NODES if ns.startswith('held')}
    for k in range(SCENARIOS):
        assert held['held_in_order'][k], f'scenario {k} raised no alert'
        for ns in ('held_reversed', 'held_shuffled'):
            assert held[ns][k] == held['held_in_order'][k], (ns, k)
    for ns in ('held_reversed', 'held_shuffled'):
        assert [alert_key(a) for a in graph.alerts[ns]] == \
            [alert_key(a) for a in graph.alerts['held_in_order']], ns
    assert any('spoken call for help' in r for a in graph.alerts['held_in_order']
               for r in a.reasons)
    assert {a.track_id for a in graph.alerts['held_in_order']} == {1, 2}
    unheld = [by_scenario(graph.alerts[ns]) for ns in ('unheld_in_order', 'unheld_reversed')]
    differ = [k for k in range(SCENARIOS) if unheld[0][k] != unheld[1][k]]
    print(f'without the hold, the reversed publication changed scenarios {differ}')
    assert differ
