"""Bad input reaches running nodes through real topics: clear log, a diagnostics counter, and
the node keeps processing the next good input. Invalid parameters are rejected by name."""

import math
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from emotion_ros_msgs.msg import AudioCues, AudioFrame, PersonEmotionArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage, Image

from conftest import wait_until
from emotion_ros.perception.image_codec import encode_jpeg
from emotion_ros.ros import conversions
from rosgraph import params, sample_frame


def latest_values(diags, name):
    """Key/values of the newest diagnostics status called ``name`` from a node in the root
    namespace (a namespaced graph on the same domain, e.g. the soak benchmark, is ignored)."""
    for array in reversed(diags):
        for status in array.status:
            if status.name == name and status.hardware_id.count('/') == 1:
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_perception_node_survives_bad_images(start_node, ros_node):
    """Wrong encoding, size mismatch, zero size and corrupt JPEG are counted; good frames flow."""
    raw = start_node('perception_node', *params('autostart:=true', 'diagnostics_period_s:=0.5'))
    comp = start_node('perception_node', *params(
        'autostart:=true', 'image_transport:=compressed', 'diagnostics_period_s:=0.5'),
        '-r', '__node:=perception_compressed', '-r', 'persons:=persons_c',
        '-r', 'image:=image_c')
    node = ros_node('bad_images')
    out, out_c, diags = [], [], []
    node.create_subscription(PersonEmotionArray, 'persons', out.append, 10)
    node.create_subscription(PersonEmotionArray, 'persons_c', out_c.append, 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 100)
    pub = node.create_publisher(Image, 'image', 10)
    pub_c = node.create_publisher(CompressedImage, 'image_c', 10)
    rgb = sample_frame('zidane', (320, 240))
    header = lambda: conversions.make_header(time.time(), 'camera')  # noqa: E731
    good = lambda: conversions.rgb_to_image(rgb, header())  # noqa: E731
    good_c = lambda: CompressedImage(header=header(), format='jpeg',  # noqa: E731
                                     data=encode_jpeg(rgb))
    assert wait_until(lambda: pub.get_subscription_count() and pub_c.get_subscription_count(),
                      60, ros_node.spin)
    deadline = time.monotonic() + 90
    while (not out or not out_c) and time.monotonic() < deadline:
        pub.publish(good())
        pub_c.publish(good_c())
        ros_node.spin(0.2)
    assert out and out_c, raw.output()[-3000:] + comp.output()[-3000:]

    def counted(name, kind):
        return int(latest_values(diags, f'emotion_ros: {name}').get(f'bad_input.{kind}', 0))

    def send_until_counted(publisher, make_msg, name, kind):
        # The node keeps only the latest frame, so a frame may be replaced before it is
        # processed; resend until the node has counted one of this kind.
        for _ in range(5):
            publisher.publish(make_msg())
            if wait_until(lambda: counted(name, kind) >= 1, 3, ros_node.spin):
                return
        raise AssertionError(f'{name} never counted {kind}: {diags[-1] if diags else None}')

    data = rgb.tobytes()
    send_until_counted(pub, lambda: Image(header=header(), height=240, width=320,
                                          encoding='yuv_fancy', step=960, data=data),
                       'perception_node', 'image_encoding')
    send_until_counted(pub, lambda: Image(header=header(), height=240, width=320,
                                          encoding='rgb8', step=960, data=data[:1000]),
                       'perception_node', 'image_size')
    send_until_counted(pub, lambda: Image(header=header(), height=0, width=0, encoding='rgb8',
                                          step=0, data=b''),
                       'perception_node', 'image_empty')
    send_until_counted(pub_c, lambda: CompressedImage(header=header(), format='jpeg',
                                                      data=b'\xff\xd8 not a jpeg'),
                       'perception_compressed', 'image_corrupt')
    truncated = encode_jpeg(rgb)[:200]
    out.clear()
    out_c.clear()
    assert wait_until(lambda: (pub.publish(good()), pub_c.publish(good_c()),
                               ros_node.spin(0.2)) and out and out_c, 30), \
        'node stopped processing after bad input'
    before = counted('perception_compressed', 'image_corrupt')
    for _ in range(5):
        pub_c.publish(CompressedImage(header=header(), format='jpeg', data=truncated))
        if wait_until(lambda: counted('perception_compressed', 'image_corrupt') > before, 3,
                      ros_node.spin):
            break
    assert counted('perception_compressed', 'image_corrupt') > before, 'truncated JPEG'
    log = raw.output()
    assert 'yuv_fancy' in log and 'bad input (image_encoding' in log
    assert raw.alive() and comp.alive()


def test_audio_node_survives_bad_audio(start_node, ros_node):
    """NaN/inf samples, a wrong sample format, empty and truncated frames are counted; good
    audio still gives cues."""
    proc = start_node('audio_node', *params('diagnostics_period_s:=0.5'))
    node = ros_node('bad_audio')
    cues, diags = [], []
    node.create_subscription(AudioCues, 'audio_cues', cues.append, 50)
    node.create_subscription(DiagnosticArray, '/diagnostics', diags.append, 100)
    pub = node.create_publisher(AudioFrame, 'audio', 50)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 60, ros_node.spin)

    def frame(samples, fmt='F32LE', data=None, rate=16000):
        msg = conversions.samples_to_audio_frame(
            samples, rate, fmt, conversions.make_header(time.time(), 'mic'))
        if data is not None:
            msg.data = data
        return msg
    tone = (0.1 * np.sin(np.arange(1600) * 2 * math.pi * 220 / 16000)).astype(np.float32)
    nan = tone.copy()
    nan[10] = np.nan
    inf = tone.copy()
    inf[5] = np.inf
    bad = [frame(tone, data=nan.astype('<f4').tobytes()),
           frame(tone, data=inf.astype('<f4').tobytes()),
           frame(tone, 'S16LE', data=b'\x01\x02\x03'),
           frame(tone, 'S16LE', data=b'')]
    wrong_format = frame(tone, 'S16LE')
    wrong_format.sample_format = 'U8'
    bad.append(wrong_format)
    for msg in bad:
        pub.publish(msg)
        ros_node.spin(0.05)
    for _ in range(40):  # 4 s of good audio
        pub.publish(frame(tone, 'S16LE'))
        ros_node.spin(0.1)
    assert wait_until(lambda: len(cues) >= 3, 20, ros_node.spin), proc.output()[-3000:]
    wait_until(lambda: int(latest_values(diags, 'emotion_ros: audio_node').get(
        'bad_inputs_total', 0)) >= 5, 10, ros_node.spin)
    values = latest_values(diags, 'emotion_ros: audio_node')
    assert int(values['bad_input.audio_nonfinite']) == 2, values
    assert int(values['bad_input.audio_size']) == 1, values
    assert int(values['bad_input.audio_empty']) == 1, values
    assert int(values['bad_input.audio_format']) == 1, values
    assert "'U8'" in proc.output() or 'U8' in proc.output()
    assert proc.alive()


def set_parameter(ros_node, node_name, name, value):
    """Call <node>/set_parameters for one string/double parameter; return the result."""
    client = ros_node('param_client').create_client(SetParameters, f'/{node_name}/set_parameters')
    assert wait_until(client.service_is_ready, 30, ros_node.spin)
    pv = (ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
          if isinstance(value, float) else
          ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name=name,
                                                                           value=pv)]))
    assert wait_until(future.done, 30, ros_node.spin)
    return future.result().results[0]


def test_invalid_parameters_are_rejected_by_name(start_node, ros_node):
    """Run-time changes to invalid values are refused with a reason naming the parameter; an
    invalid start-up value stops a plain node with a clear message and leaves the managed
    perception node alive but unconfigured."""
    distress = start_node('distress_node', *params())
    result = set_parameter(ros_node, 'distress_node', 'watch_threshold', 1.5)
    assert not result.successful and 'watch_threshold' in result.reason
    assert distress.alive()

    bad_audio = start_node('audio_node', *params('hop_s:=-1.0'))
    assert wait_until(lambda: not bad_audio.alive(), 60)
    assert bad_audio.proc.returncode == 2
    assert 'hop_s' in bad_audio.output()

    perception = start_node('perception_node', *params('autostart:=true',
                                                       'detector.type:=magic'))
    assert wait_until(lambda: 'detector.type' in perception.output(), 60), \
        perception.output()[-2000:]
    time.sleep(1.0)
    assert perception.alive()


def test_microphone_node_names_missing_device(start_node):
    """A capture device that does not exist stops microphone_node with a message that names it
    and lists the available devices (CI machines have none)."""
    mic = start_node('microphone_node', *params('device:=usb_mic_42'))
    assert wait_until(lambda: not mic.alive(), 60)
    assert mic.proc.returncode == 2
    out = mic.output()
    assert 'usb_mic_42' in out and 'available input devices' in out
