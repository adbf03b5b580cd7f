"""The incident lifecycle (ROS-free): every phase x command, allowed or refused, with history.

The expected table below is written out independently of
``emotion_ros.fusion.incidents.TRANSITIONS``: the code, this table and the one in
docs/integration.md must agree.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from emotion_ros.fusion import incidents as inc
from emotion_ros.fusion.distress import DistressFusion, FusionConfig
from emotion_ros.llm.contract import CATEGORY_INDEX, NUM_CATEGORIES
from emotion_ros.types import (EmotionOutput, FrameResult, LEVEL_EMERGENCY, LEVEL_WATCH,
                               PersonEstimate)

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ('acknowledge', 'confirm', 'reject', 'resolve')
# phase -> command -> the state an accepted command leads to, or None (refused).
EXPECTED = {
    'open': {'acknowledge': inc.ACKNOWLEDGED, 'confirm': inc.CONFIRMED,
             'reject': inc.REJECTED, 'resolve': inc.RESOLVED},
    'acknowledged': {'acknowledge': None, 'confirm': inc.CONFIRMED, 'reject': inc.REJECTED,
                     'resolve': inc.RESOLVED},
    'confirmed': {'acknowledge': None, 'confirm': None, 'reject': inc.REJECTED,
                  'resolve': inc.RESOLVED},
    'rejected': {'acknowledge': None, 'confirm': inc.CONFIRMED, 'reject': None,
                 'resolve': inc.RESOLVED},
    'resolved': {'acknowledge': None, 'confirm': None, 'reject': None, 'resolve': None},
}
CONFIG = FusionConfig(stale_after_s=5.0, expire_s=20.0, reject_hold_s=30.0,
                      closed_keep_s=1000.0)


def estimate(fear, valence):
    """One frightened (or not) person, track 1."""
    scores = np.zeros(NUM_CATEGORIES, np.float32)
    scores[CATEGORY_INDEX['Fear']] = fear
    return PersonEstimate(track_id=1, box=(100, 50, 160, 250), detection_confidence=0.9,
                          emotion=EmotionOutput(scores=scores, vad=(valence, 5.0, 5.0)),
                          model_id='test', evidence_weight=1.0)


class Scene:
    """One person in front of one camera, frames every 0.2 s of message time."""

    def __init__(self):
        self.fusion = DistressFusion(CONFIG)
        self.t = 100.0
        self.alerts = []

    def frames_until_alert(self, fear, valence, limit=100):
        """Frames until one raises an alert (then stop: the state is what the alert set)."""
        for _ in range(limit):
            self.t += 0.2
            got = self.fusion.update_frame(FrameResult(
                stamp=self.t, frame_id='cam', width=640, height=480, timings_ms={},
                persons=[estimate(fear, valence)]))
            self.alerts += got
            if got:
                return got
        raise AssertionError('no alert')

    def frames(self, n, fear=0.5, valence=4.5):
        """``n`` more frames."""
        for _ in range(n):
            self.t += 0.2
            self.alerts += self.fusion.update_frame(FrameResult(
                stamp=self.t, frame_id='cam', width=640, height=480, timings_ms={},
                persons=[estimate(fear, valence)]))

    @property
    def incident(self):
        """The scene's (first) incident."""
        return self.fusion.incidents()[0]

    def cmd(self, action, operator='op1', note='first note'):
        """A command that must be accepted while setting the scene up."""
        ok, message, _ = self.fusion.command(self.incident.id, action, note, operator)
        assert ok, message


def new():
    """First alert (WATCH): state NEW."""
    scene = Scene()
    scene.frames_until_alert(0.5, 4.5)  # WATCH
    return scene


def updated():
    """New evidence at the same level: UPDATED."""
    scene = new()
    scene.frames(3)
    return scene


def escalated():
    """The level rose: ESCALATED."""
    scene = updated()
    scene.frames_until_alert(0.95, 1.0)
    return scene


def expired():
    """No evidence for expire_s: closed automatically."""
    scene = updated()
    scene.fusion.idle(CONFIG.expire_s + 1.0)
    return scene


def stale():
    """No evidence for stale_after_s: STALE."""
    scene = updated()
    scene.fusion.idle(CONFIG.stale_after_s + 1.0)
    return scene


def commanded(*actions, then=None):
    """A builder: UPDATED, then these commands (accepted), then ``then(scene)``."""
    def build():
        scene = updated()
        for action in actions:
            scene.cmd(action)
        if then is not None:
            then(scene)
        return scene
    build.__name__ = '_'.join(actions) + (f'_{then.__name__}' if then else '')
    return build


def escalate(scene):
    """The level rises."""
    scene.frames_until_alert(0.95, 1.0)


def go_stale(scene):
    """No evidence for stale_after_s."""
    scene.fusion.idle(CONFIG.stale_after_s + 1.0)


def expire(scene):
    """No evidence for expire_s."""
    scene.fusion.idle(CONFIG.expire_s + 1.0)


def hold_over(scene):
    """reject_hold_s passes."""
    scene.fusion.idle(CONFIG.reject_hold_s + 1.0)


# (builder, phase, state): every state value and every phase, some phases reached in
# several ways (a verdict revised, evidence after a command, closed automatically).
SETUPS = [
    (new, 'open', inc.NEW),
    (updated, 'open', inc.UPDATED),
    (escalated, 'open', inc.ESCALATED),
    (stale, 'open', inc.STALE),
    (commanded('acknowledge'), 'acknowledged', inc.ACKNOWLEDGED),
    (commanded('acknowledge', then=escalate), 'acknowledged', inc.ESCALATED),
    (commanded('confirm'), 'confirmed', inc.CONFIRMED),
    (commanded('acknowledge', 'confirm', then=go_stale), 'confirmed', inc.STALE),
    (commanded('reject', 'confirm'), 'confirmed', inc.CONFIRMED),
    (commanded('reject'), 'rejected', inc.REJECTED),
    (commanded('confirm', 'reject'), 'rejected', inc.REJECTED),
    (commanded('resolve'), 'resolved', inc.RESOLVED),
    (commanded('reject', then=hold_over), 'resolved', inc.RESOLVED),
    (commanded('acknowledge', then=expire), 'resolved', inc.RESOLVED),
    (expired, 'resolved', inc.RESOLVED),
]
IDS = ['new', 'updated', 'escalated', 'stale', 'acknowledged', 'acknowledged_escalated',
       'confirmed', 'confirmed_stale', 'rejected_then_confirmed', 'rejected',
       'confirmed_then_rejected', 'resolved', 'rejected_hold_over', 'acknowledged_expired',
       'expired']


def test_setups_reach_every_state_and_phase():
    """The scenes below put an incident in every state value and every operator phase."""
    reached = set()
    for build, phase, state in SETUPS:
        incident = build().incident
        assert (incident.phase, incident.state) == (phase, state)
        reached.add((phase, state))
    assert {s for _, s in reached} == set(inc.STATE_NAMES)
    assert {p for p, _ in reached} == set(inc.PHASES) == set(EXPECTED)


def test_the_table_lists_every_pair_as_expected():
    """TRANSITIONS holds every phase x command pair, each as the expected table says."""
    assert set(inc.TRANSITIONS) == {(p, c) for p in inc.PHASES for c in COMMANDS}
    assert set(inc.COMMANDS) == set(COMMANDS)
    for (phase, command), rule in inc.TRANSITIONS.items():
        expected = EXPECTED[phase][command]
        if expected is None:
            assert rule.target is None, (phase, command)
        else:
            assert inc.COMMANDS[command] == expected
            assert rule.target == inc.COMMAND_PHASE[command], (phase, command)
        assert rule.why


@pytest.mark.parametrize('command', COMMANDS)
@pytest.mark.parametrize('setup', SETUPS, ids=IDS)
def test_every_state_and_command(setup, command):
    """Each command in each state: accepted or refused as the table says; an accepted one sets
    state, flags and note; a refused one changes nothing but the history (the earlier note
    stays); either way the history gains one entry (who, when, action, note, outcome, state)
    and keeps the earlier ones."""
    build, phase, _ = setup
    scene = build()
    incident = scene.incident
    before = (incident.state, incident.acknowledged, incident.confirmed, incident.rejected,
              incident.note, incident.resolution, incident.open)
    history = list(incident.history)
    ok, message, result = scene.fusion.command(incident.id, command, 'second note', 'op2',
                                               stamp=1234.5)
    assert result is incident
    expected = EXPECTED[phase][command]
    assert ok == (expected is not None), message
    assert incident.history[:-1] == history
    entry = incident.history[-1]
    assert (entry.operator_id, entry.action, entry.note, entry.stamp) == (
        'op2', command, 'second note', 1234.5)
    assert entry.accepted == ok and entry.message == message
    assert entry.state == incident.state
    if not ok:
        assert 'refused' in message and str(incident.id) in message
        assert inc.TRANSITIONS[(phase, command)].why in message
        assert (incident.state, incident.acknowledged, incident.confirmed, incident.rejected,
                incident.note, incident.resolution, incident.open) == before
        return
    assert incident.state == expected and incident.note == 'second note'
    assert incident.acknowledged
    if command == 'resolve':
        assert not incident.open and incident.resolution == 'resolved by operator'
        assert (incident.confirmed, incident.rejected) == before[2:4]
    else:
        assert incident.open
        assert incident.confirmed == (command == 'confirm') or (
            command == 'acknowledge' and incident.confirmed == before[2])
        assert incident.rejected == (command == 'reject')
    assert incident.phase == inc.COMMAND_PHASE[command]


def test_repeated_command_keeps_the_first_note_and_names_who():
    """A repeated acknowledge (another robot claiming the same incident) is refused, names who
    acknowledged first and leaves the first note; both commands are in the history."""
    scene = updated()
    incident = scene.incident
    assert scene.fusion.command(incident.id, 'acknowledge', 'robot 1 going', 'robot1')[0]
    ok, message, _ = scene.fusion.command(incident.id, 'acknowledge', 'robot 2 going',
                                          'robot2')
    assert not ok and 'already acknowledged by robot1' in message
    assert incident.note == 'robot 1 going'
    assert [(e.operator_id, e.accepted) for e in incident.history] == [('robot1', True),
                                                                       ('robot2', False)]


def test_confirm_after_reject_clears_the_rejection_and_alerts_resume():
    """Reject then confirm: rejected cleared, the incident is not closed at reject_hold_s, and
    a level rise alerts again; a reject after that suppresses alerts again."""
    scene = updated()
    incident = scene.incident
    scene.cmd('reject')
    scene.cmd('confirm', note='it is a real person')
    assert not incident.rejected and incident.confirmed and incident.reject_until_t is None
    scene.frames(int(CONFIG.reject_hold_s / 0.2) + 10)  # still WATCH, past the hold
    assert incident.open and incident.state != inc.REJECTED and incident.level == LEVEL_WATCH
    [alert] = scene.frames_until_alert(0.95, 1.0)
    assert alert.incident_id == incident.id and alert.level > LEVEL_WATCH
    scene.cmd('reject', note='no, a poster after all')
    assert incident.rejected and not incident.confirmed
    before = len(scene.alerts)
    scene.frames(30, fear=1.0, valence=1.0)
    assert len(scene.alerts) == before and incident.level == LEVEL_EMERGENCY
    assert scene.fusion.counters['suppressed_rejected'] >= 1
    assert [e.action for e in incident.history] == ['reject', 'confirm', 'reject']


@pytest.mark.parametrize('idle_s', [0.0, 1.7, 10.0])
@pytest.mark.parametrize('keep_s', [2.0, 30.0])
def test_closed_keep_counts_from_the_resolve(idle_s, keep_s):
    """Resolved idle_s after the last evidence (the node's clock ran on), the incident stays
    listed for closed_keep_s after the command and is gone after it."""
    fusion = DistressFusion(FusionConfig(closed_keep_s=keep_s, stale_after_s=50.0,
                                         expire_s=100.0))
    for k in range(15):
        fusion.update_frame(FrameResult(stamp=10 + 0.2 * k, frame_id='cam', width=640,
                                        height=480, timings_ms={},
                                        persons=[estimate(0.95, 1.0)]))
    [incident] = fusion.incidents()
    fusion.idle(idle_s)
    assert fusion.command(incident.id, 'resolve', '', 'op', idle_s=idle_s)[0]
    fusion.idle(idle_s + keep_s - 0.05)
    assert [i.id for i in fusion.incidents()] == [incident.id]
    fusion.idle(idle_s + keep_s + 0.05)
    assert fusion.incidents() == []


def test_closed_keep_holds_on_the_clock_when_message_time_runs_ahead():
    """Frames queued before a resolve arrive after it (message time jumps 5 s ahead of the
    receiver's clock): the resolved incident stays listed until closed_keep_s passed on the
    receiver's clock, then goes."""
    fusion = DistressFusion(FusionConfig(closed_keep_s=2.0, stale_after_s=50.0,
                                         expire_s=100.0))

    def frames(t0, n, track=1, box=(100, 50, 160, 250)):
        for k in range(n):
            person = estimate(0.95, 1.0)
            person.track_id, person.box = track, box
            fusion.update_frame(FrameResult(stamp=t0 + 0.2 * k, frame_id='cam', width=640,
                                            height=480, timings_ms={}, persons=[person]))
    frames(10.0, 15)
    [incident] = fusion.incidents()
    clock = 5000.0
    assert fusion.command(incident.id, 'resolve', '', 'op', stamp=clock)[0]
    frames(13.0, 25, track=2, box=(400, 50, 460, 250))  # someone else, 5 s of stamps at once
    fusion.idle(0.0, clock=clock + 1.9)
    assert incident.id in [i.id for i in fusion.incidents()]
    fusion.idle(0.0, clock=clock + 2.1)
    assert incident.id not in [i.id for i in fusion.incidents()]


@pytest.mark.parametrize('idle_s', [0.0, 5.0])
def test_reject_hold_counts_from_the_reject(idle_s):
    """A rejected incident closes reject_hold_s after the command (not after the last
    evidence), as 'rejected by operator', and is then kept closed_keep_s."""
    fusion = DistressFusion(FusionConfig(reject_hold_s=8.0, closed_keep_s=3.0,
                                         stale_after_s=50.0, expire_s=100.0))
    for k in range(15):
        fusion.update_frame(FrameResult(stamp=10 + 0.2 * k, frame_id='cam', width=640,
                                        height=480, timings_ms={},
                                        persons=[estimate(0.95, 1.0)]))
    [incident] = fusion.incidents()
    assert fusion.command(incident.id, 'reject', 'mannequin', 'op', idle_s=idle_s)[0]
    fusion.idle(idle_s + 7.9)
    assert incident.open and incident.rejected
    fusion.idle(idle_s + 8.1)
    assert not incident.open and incident.resolution == 'rejected by operator'
    fusion.idle(idle_s + 8.1 + 2.9)
    assert fusion.incidents() == [incident]
    fusion.idle(idle_s + 8.1 + 3.2)
    assert fusion.incidents() == []


def test_unknown_incident_and_action_are_refused_and_counted():
    """Unknown ids (also a level-0 candidate nobody was shown) and actions are refused with a
    reason, counted by kind; nothing is recorded."""
    scene = updated()
    ok, message, result = scene.fusion.command(99, 'confirm', '', 'op')
    assert not ok and 'no incident 99' in message and result is None
    ok, message, _ = scene.fusion.command(scene.incident.id, 'explode', '', 'op')
    assert not ok and 'explode' in message
    scene.fusion.command(scene.incident.id, 'acknowledge', '', 'op')
    scene.fusion.command(scene.incident.id, 'acknowledge', '', 'op')
    assert scene.fusion.refusals == {'unknown_incident': 1, 'unknown_action': 1,
                                     'transition': 1}
    assert scene.fusion.counters['commands_accepted'] == 1
    assert len(scene.incident.history) == 2


@pytest.mark.parametrize('operator, note, accepted, kind', [
    ('alice', 'on my way', (), None),
    ('alice', '', ('alice', 'bob'), None),
    ('', 'x', (), 'no_operator'),
    ('   ', 'x', ('alice',), 'no_operator'),
    ('a' * 65, '', (), 'bad_operator'),
    ('eve\n', '', (), 'bad_operator'),
    ('alice', 'x' * 501, (), 'bad_note'),
    ('alice', 'line\nbreak', (), 'bad_note'),
    ('mallory', '', ('alice', 'bob'), 'operator_not_accepted'),
    ('Alice', '', ('alice',), 'operator_not_accepted'),
])
def test_request_checks(operator, note, accepted, kind):
    """Every command names its operator (printable, <= 64 characters); notes are printable and
    <= 500 characters; with accepted ids set, only those (exact) may command."""
    refusal = inc.check_request(operator, note, accepted)
    if kind is None:
        assert refusal is None
    else:
        assert refusal[0] == kind and refusal[1]
        if kind == 'operator_not_accepted':
            assert repr(operator) in refusal[1] and str(list(accepted)) in refusal[1]


def test_history_is_bounded_refused_entries_go_first():
    """A flood of refused commands keeps the history at HISTORY_LIMIT entries; the accepted
    ones stay."""
    scene = updated()
    incident = scene.incident
    scene.cmd('acknowledge')
    for k in range(3 * inc.HISTORY_LIMIT):
        scene.fusion.command(incident.id, 'acknowledge', f'spam {k}', 'spammer')
    scene.cmd('confirm')
    assert len(incident.history) == inc.HISTORY_LIMIT
    assert [e.action for e in incident.history if e.accepted] == ['acknowledge', 'confirm']
    assert incident.history[-2].note == f'spam {3 * inc.HISTORY_LIMIT - 1}'


def test_docs_table_matches_the_code():
    """docs/integration.md's transition table says, cell by cell, what TRANSITIONS does."""
    text = (ROOT / 'docs' / 'integration.md').read_text()
    header = '| phase \\ command | ' + ' | '.join(f'`{c}`' for c in COMMANDS) + ' |'
    assert header in text
    rows = text.split(header, 1)[1].strip().splitlines()[1:1 + len(inc.PHASES)]
    seen = set()
    for row in rows:
        cells = [c.strip() for c in row.strip().strip('|').split('|')]
        phase = re.sub(r'[^a-z]', '', cells[0].split('(')[0].lower())
        seen.add(phase)
        for command, cell in zip(COMMANDS, cells[1:]):
            rule = inc.TRANSITIONS[(phase, command)]
            if rule.target is None:
                assert cell.startswith('refused'), (phase, command, cell)
            else:
                assert cell.startswith(f'**{rule.target.upper()}**'), (phase, command, cell)
    assert seen == set(inc.PHASES)


def test_sros2_policy_lets_only_the_operator_call_the_incident_services():
    """config/sros2/emotion_ros_policy.xml (docs/security.md): the incident services are
    answered only by distress_node's enclave and requested only by the operator enclave; each
    node's profile names the topics that node uses."""
    import xml.etree.ElementTree as ET
    root = ET.parse(ROOT / 'config' / 'sros2' / 'emotion_ros_policy.xml').getroot()
    assert root.tag == 'policy' and root.get('version') == '0.2.0'
    services = {f'{c}_incident' for c in COMMANDS} | {'list_incidents'}
    rules = {}
    topics = {}
    for enclave in root.iter('enclave'):
        for profile in enclave.iter('profile'):
            key = (enclave.get('path'), profile.get('node'))
            for group in profile.findall('services'):
                for kind in ('request', 'reply'):
                    if group.get(kind) == 'ALLOW':
                        rules.setdefault(kind, {})[key] = {s.text for s in group}
            for group in profile.findall('topics'):
                for kind in ('publish', 'subscribe'):
                    if group.get(kind) == 'ALLOW':
                        topics.setdefault(key, {})[kind] = {t.text for t in group}
    answering = {k for k, names in rules['reply'].items() if names & services}
    asking = {k for k, names in rules['request'].items() if names & services}
    assert answering == {('/emotion_ros/distress_node', 'distress_node')}
    assert rules['reply'][('/emotion_ros/distress_node', 'distress_node')] >= services
    assert asking == {('/emotion_ros/operator', 'alert_monitor_cli')}
    assert rules['request'][('/emotion_ros/operator', 'alert_monitor_cli')] == services
    distress = topics[('/emotion_ros/distress_node', 'distress_node')]
    assert distress['subscribe'] >= {'persons', 'voice_emotions', 'audio_cues', 'transcripts'}
    assert distress['publish'] >= {'incidents', 'distress_alerts', 'incident_markers',
                                   '/diagnostics'}
    assert topics[('/emotion_ros/operator', 'alert_monitor')]['subscribe'] >= {
        'incidents', 'distress_alerts'}
    assert topics[('/emotion_ros/perception_node', 'perception_node')]['publish'] >= {
        'persons', 'voice_emotions'}
    assert topics[('/emotion_ros/audio_node', 'audio_node')]['publish'] >= {
        'audio_cues', 'transcripts'}
    assert 'audio' in topics[('/emotion_ros/microphone_node', 'microphone_node')]['publish']
    doc = (ROOT / 'docs' / 'security.md').read_text()
    for enclave in {k[0] for k in topics}:
        assert enclave.rsplit('/', 1)[1] in doc
