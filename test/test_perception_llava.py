"""The perception node runs the llava backend from a weights bundle (tiny LLaVA built from a
config here), publishes per-person estimates through real topics, explains on request, and
refuses a bundle trained for another base model."""

import json
import time
from pathlib import Path

import pytest
from emotion_ros_msgs.msg import PersonEmotionArray
from emotion_ros_msgs.srv import ExplainPerson
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from sensor_msgs.msg import Image

from conftest import wait_until
from emotion_ros.ros import conversions
from rosgraph import params, sample_frame

pytest.importorskip('transformers')
pytest.importorskip('peft')


@pytest.fixture(scope='module')
def tiny_bundle(tmp_path_factory):
    """A tiny LLaVA base model folder and a bundle (random adapter + head) trained on it."""
    from training.core.tiny import save_tiny_llava, write_random_bundle
    root = tmp_path_factory.mktemp('llava')
    base = save_tiny_llava(str(root / 'base'))
    bundle = write_random_bundle(base, str(root / 'bundle'))
    other = save_tiny_llava(str(root / 'other_base'), seed=1, text_hidden=48)
    return base, bundle, other


def call(ros_node, client, request, timeout=60):
    """Call a service and wait for the answer."""
    assert wait_until(client.service_is_ready, 60, ros_node.spin)
    future = client.call_async(request)
    assert wait_until(future.done, timeout, ros_node.spin)
    return future.result()


def test_llava_backend_in_perception_node(start_node, ros_node, tiny_bundle):
    """Estimates come from the bundle's model through real topics; explain and cleanup work."""
    _, bundle, _ = tiny_bundle
    proc = start_node('perception_node', *params(
        'autostart:=true', 'emotion.backend:=llava', f'emotion.llava.bundle_path:={bundle}',
        'emotion.llava.device:=cpu'))
    node = ros_node('llava_driver')
    persons = []
    node.create_subscription(PersonEmotionArray, 'persons', persons.append, 10)
    pub = node.create_publisher(Image, 'image', 5)
    rgb = sample_frame('zidane', (320, 240))
    deadline = time.monotonic() + 120
    while not any(m.persons for m in persons) and time.monotonic() < deadline:
        pub.publish(conversions.rgb_to_image(rgb, conversions.make_header(time.time(), 'cam')))
        ros_node.spin(0.3)
    tracked = [m for m in persons if m.persons]
    assert tracked, proc.output()[-4000:]
    person = tracked[-1].persons[0]
    assert person.model_id.startswith('llava'), person.model_id
    assert len(person.category_scores) == 26
    assert all(0.0 <= s <= 1.0 for s in person.category_scores)
    assert len(set(round(s, 5) for s in person.category_scores)) > 1  # continuous, not constant
    assert 1.0 <= person.valence <= 10.0 and 1.0 <= person.arousal <= 10.0

    explain = node.create_client(ExplainPerson, 'explain_person')
    request = ExplainPerson.Request(track_id=person.track_id, max_new_tokens=8)
    answer = call(ros_node, explain, request)
    assert answer.success, answer.message
    assert answer.explanation.strip(), answer  # generated words, not an empty field
    missing = call(ros_node, explain, ExplainPerson.Request(track_id=9999))
    assert not missing.success and '9999' in missing.message

    change = node.create_client(ChangeState, '/perception_node/change_state')
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        result = call(ros_node, change, ChangeState.Request(
            transition=Transition(id=transition)))
        assert result.success, proc.output()[-3000:]
    assert proc.alive()


def test_mismatched_bundle_is_refused_by_name(start_node, tiny_bundle):
    """A bundle for another base model: configure fails naming both models; the node lives."""
    base, bundle, other = tiny_bundle
    manifest = json.loads((Path(bundle) / 'manifest.json').read_text())
    assert manifest['contract_version']
    proc = start_node('perception_node', *params(
        'autostart:=true', 'emotion.backend:=llava', f'emotion.llava.bundle_path:={bundle}',
        f'emotion.llava.base_model:={other}', 'emotion.llava.device:=cpu'))
    assert wait_until(lambda: 'configure failed' in proc.output(), 120), proc.output()[-3000:]
    out = proc.output()
    assert 'other_base' in out and 'base' in out
    time.sleep(0.5)
    assert proc.alive()
