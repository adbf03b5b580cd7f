"""The audio_visual backend on the robot side: whose voice it is (one person: theirs; several:
the nearest; nobody: an audio-only estimate), per-track crop buffers, stale audio unused, and
the perception pipeline selecting `emotion.backend: audio_visual` with real frames."""

import numpy as np
import pytest

from emotion_ros.errors import ConfigError, InputError

pytest.importorskip('torch')


def test_voice_goes_to_the_only_person_or_the_nearest_of_several():
    """Over many random scenes: 1 person -> theirs; n -> exactly the largest box; none -> []."""
    from emotion_ros.perception.av_context import attribute_voice
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(5, 200, (n, 2))
        boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(xy, wh)]
        given = attribute_voice(boxes)
        assert len(given) == n
        if n == 1:
            assert given == [True]
        elif n > 1:
            assert sum(given) == 1
            assert given.index(True) == int(np.argmax(wh[:, 0] * wh[:, 1]))
        assert attribute_voice(boxes, 'all') == [True] * n
        assert attribute_voice(boxes, 'none') == [False] * n
    with pytest.raises(ConfigError, match='loudest'):
        attribute_voice([], 'loudest')


def test_context_buffers_crops_per_track_and_drops_stale_voice():
    """Crop buffers are bounded and per track; old audio/words and gone tracks are not used."""
    from emotion_ros.perception.av_context import PersonAVContext
    ctx = PersonAVContext(frames=4, crop_px=32, audio_window_s=1.0, max_age_s=2.0)
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    tracks = [(1, (10, 10, 60, 110)), (2, (80, 20, 150, 100))]
    for k in range(10):
        ctx.add_frame(rgb, tracks, stamp=k * 0.2)
    ctx.feed_audio(np.ones(8000, np.float32) * 0.1, end_stamp=1.8)
    ctx.feed_audio(np.ones(16000, np.float32) * 0.2, end_stamp=1.8)
    ctx.feed_transcript('help me', stamp=1.8)
    got = ctx.inputs_for(tracks, stamp=1.8)
    assert [len(g.frames) for g in got] == [4, 4]  # bounded buffer
    assert all(max(f.shape[:2]) <= 32 for f in got[0].frames)
    assert got[1].audio is not None and got[0].audio is None  # track 2's box is larger
    assert len(got[1].audio) == 16000 and got[1].transcript == 'help me'
    later = ctx.inputs_for(tracks, stamp=5.0)
    assert all(g.audio is None and g.transcript is None and g.frames is None for g in later)
    assert ctx.audio_only(5.0) is None
    assert ctx.audio_only(1.9).present() == ('audio', 'transcript')
    ctx.add_frame(rgb, [(1, (10, 10, 60, 110))], stamp=9.0)  # track 2 gone for > 2 s
    assert set(ctx._crops) == {1}
    with pytest.raises(InputError):
        ctx.feed_audio(np.array([np.nan], np.float32), 9.0)


@pytest.fixture(scope='module')
def av_pipeline(tmp_path_factory):
    """A perception pipeline with emotion.backend audio_visual (tiny random bundle)."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from emotion_ros.backends.audio_visual import AudioVisualOptions
    from emotion_ros.config.schema import from_mapping
    from emotion_ros.perception.pipeline import PerceptionConfig, PerceptionPipeline
    from training.av.tiny import write_random_av_bundle
    from training.core.tiny import save_tiny_audio_encoder, save_tiny_llava
    root = tmp_path_factory.mktemp('avrobot')
    bundle = write_random_av_bundle(save_tiny_llava(str(root / 'base')),
                                    save_tiny_audio_encoder(str(root / 'hubert')),
                                    str(root / 'bundle'), seed=4)
    config = from_mapping(PerceptionConfig, {
        'detector.type': 'face', 'thumbnails': False, 'emotion.backend': 'audio_visual',
        'emotion.audio_visual.bundle_path': bundle, 'emotion.audio_visual.device': 'cpu'})
    assert isinstance(config.emotion.options(), AudioVisualOptions)
    pipeline = PerceptionPipeline(config)
    pipeline.load()
    yield pipeline
    pipeline.close()


def test_pipeline_gives_the_voice_to_the_nearest_person(av_pipeline):
    """Real frames: audio changes the nearest person's estimate only; nobody: audio-only."""
    from rosgraph import sample_frame
    frame = sample_frame('bus', (640, 480))
    first = av_pipeline.process(frame, stamp=1.0)
    if len(first.persons) < 2:
        frame = sample_frame('zidane', (640, 480))
        first = av_pipeline.process(frame, stamp=1.0)
    assert len(first.persons) >= 2, 'the sample photo should show several faces'
    assert av_pipeline.model_id.startswith('audio_visual:')
    silent = av_pipeline.process(frame, stamp=1.2)
    t = np.arange(16000) / 16000
    av_pipeline.feed_audio((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 1.3)
    heard = av_pipeline.process(frame, stamp=1.4)
    areas = [(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) for p in heard.persons]
    nearest = int(np.argmax(areas))
    by_id = {p.track_id: p for p in silent.persons}
    for k, person in enumerate(heard.persons):
        before = by_id[person.track_id].emotion.scores
        changed = not np.allclose(before, person.emotion.scores, atol=1e-4)
        assert changed == (k == nearest), (k, nearest)
    empty = np.full((480, 640, 3), 90, np.uint8)
    av_pipeline.feed_audio((0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 1.5)
    alone = av_pipeline.process(empty, stamp=1.6)
    assert not alone.persons
    estimate = av_pipeline.audio_only_estimate
    assert estimate is not None and not estimate.face_visible
    assert estimate.scores.shape == (26,) and 1.0 <= estimate.vad[0] <= 10.0
    # The frame result carries it for the fusion (perception_node: voice_emotions).
    assert alone.voice is not None and alone.voice.emotion is estimate
    assert alone.voice.track_id == 0 and alone.voice.box == (0.0, 0.0, 0.0, 0.0)
    assert alone.voice.evidence_weight == av_pipeline.backend.visual_evidence_weight
    assert heard.voice is None and silent.voice is None  # persons in view: no audio-only


def test_perception_node_hears_the_nearest_person_through_topics(
        start_node, ros_node, tmp_path):
    """perception_node with audio_visual: AudioFrame + Transcript topics change the nearest
    person's estimate only (real frames, real messages between processes)."""
    import time
    from emotion_ros_msgs.msg import PersonEmotionArray, Transcript
    from sensor_msgs.msg import Image
    from conftest import wait_until
    from emotion_ros.ros import conversions
    from rosgraph import params, sample_frame
    from training.av.tiny import write_random_av_bundle
    from training.core.tiny import save_tiny_audio_encoder, save_tiny_llava
    bundle = write_random_av_bundle(save_tiny_llava(str(tmp_path / 'base')),
                                    save_tiny_audio_encoder(str(tmp_path / 'hubert')),
                                    str(tmp_path / 'bundle'), seed=6)
    proc = start_node('perception_node', *params(
        'autostart:=true', 'emotion.backend:=audio_visual', 'detector.type:=face',
        f'emotion.audio_visual.bundle_path:={bundle}', 'emotion.audio_visual.device:=cpu',
        'emotion.audio_visual.use_video:=false'))
    node = ros_node('av_driver')
    received = []
    node.create_subscription(PersonEmotionArray, 'persons', received.append, 10)
    images = node.create_publisher(Image, 'image', 5)
    audio = node.create_publisher(conversions.AudioFrame, 'audio', 50)
    words = node.create_publisher(Transcript, 'transcripts', 10)
    rgb = sample_frame('zidane', (640, 480))
    tone = (0.4 * np.sin(2 * np.pi * 250 * np.arange(1600) / 16000)).astype(np.float32)

    def scores_by_track(msg):
        # Keyed by box, not track id: the same image gives the same boxes, while a tracker
        # that lost its tracks during a stall on a loaded machine starts new ids.
        return {(round(p.x_min), round(p.y_min), round(p.x_max), round(p.y_max)):
                (np.array(p.category_scores), (p.x_max - p.x_min) * (p.y_max - p.y_min))
                for p in msg.persons}

    def run(with_audio, seconds):
        received.clear()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = time.time()
            if with_audio:
                for k in range(3):  # 0.3 s of audio per image
                    header = conversions.make_header(now - 0.3 + 0.1 * k, 'mic')
                    audio.publish(conversions.samples_to_audio_frame(tone, 16000, 'S16LE',
                                                                     header))
                words.publish(Transcript(text='help me please', end=conversions.make_header(
                    now, 'mic').stamp))
            images.publish(conversions.rgb_to_image(rgb, conversions.make_header(now, 'cam')))
            ros_node.spin(0.3)
        return [m for m in received if len(m.persons) >= 2]

    assert wait_until(lambda: bool(run(False, 3)), 180, lambda: None), proc.output()[-3000:]
    silent = run(False, 4)[-1]
    heard = run(True, 8)
    assert heard, proc.output()[-3000:]
    before, after = scores_by_track(silent), scores_by_track(heard[-1])
    assert before.keys() == after.keys() and len(before) >= 2
    nearest = max(after, key=lambda t: after[t][1])
    for track, (scores, _area) in after.items():
        changed = not np.allclose(before[track][0], scores, atol=1e-4)
        assert changed == (track == nearest), (track, nearest)
    assert heard[-1].persons[0].model_id.startswith('audio_visual:')
    # Nobody in view, a voice heard: the audio-only estimate comes on voice_emotions.
    voices = []
    node.create_subscription(PersonEmotionArray, 'voice_emotions', voices.append, 10)
    empty = np.full((480, 640, 3), 90, np.uint8)

    def nobody_heard():
        now = time.time()
        for k in range(3):
            header = conversions.make_header(now - 0.3 + 0.1 * k, 'mic')
            audio.publish(conversions.samples_to_audio_frame(tone, 16000, 'S16LE', header))
        images.publish(conversions.rgb_to_image(empty, conversions.make_header(now, 'cam')))
        ros_node.spin(0.3)
        return bool(voices)
    assert wait_until(nobody_heard, 60, lambda: None), proc.output()[-3000:]
    [alone] = voices[-1].persons
    assert not alone.face_visible and alone.track_id == 0 and alone.x_max == 0
    assert alone.model_id.startswith('audio_visual:') and len(alone.category_scores) == 26
    assert proc.alive()


def test_bag_evaluation_pipeline_feeds_audio_to_the_audio_visual_backend(av_pipeline):
    """OfflinePipeline.on_audio (what the bag evaluation drives) reaches the backend's voice."""
    import dataclasses
    from emotion_ros.pipeline import OfflinePipeline
    from emotion_ros.config.robot import load_robot_config
    from rosgraph import sample_frame
    robot = load_robot_config('config/robot.yaml')
    offline = OfflinePipeline(dataclasses.replace(robot, perception=av_pipeline.config))
    offline.perception = av_pipeline  # already loaded: share it
    offline.audio.load()
    frame = sample_frame('zidane', (640, 480))
    av_pipeline.process(frame, stamp=20.0)
    before = av_pipeline.process(frame, stamp=20.3)  # two crops buffered: temporal tokens on
    t = np.arange(8000) / 16000
    offline.on_audio((0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32), 16000, 20.1)
    after = av_pipeline.process(frame, stamp=20.7)
    assert before.persons and len(before.persons) == len(after.persons)
    changed = [not np.allclose(a.emotion.scores, b.emotion.scores, atol=1e-4)
               for a, b in zip(before.persons, after.persons)]
    assert sum(changed) == 1  # only the nearest person hears it
    offline.audio.close()


def test_bag_evaluation_feeds_transcripts_and_fuses_the_audio_only_estimate(av_pipeline):
    """OfflinePipeline (the bag evaluation) gives the backend every decoded utterance's
    text, as perception_node does from audio_node's transcripts, and with nobody in view
    folds the audio-only estimate into the fusion, as distress_node does from
    voice_emotions."""
    import dataclasses
    from emotion_ros.audio.synth import build_stream, set_rms_dbfs, speak
    from emotion_ros.pipeline import OfflinePipeline
    from emotion_ros.config.robot import load_robot_config
    robot = load_robot_config('config/robot.yaml')
    offline = OfflinePipeline(dataclasses.replace(robot, perception=av_pipeline.config))
    offline.perception = av_pipeline
    offline.audio.load()
    clip = set_rms_dbfs(speak('Help! Somebody help me!', 'en'), -20.0)
    audio, _ = build_stream([(clip, 'call', 'x')] * 3, [1.0, 1.0, 1.0])
    t0 = 40.0
    for i in range(0, audio.size, 1600):
        offline.on_audio(audio[i:i + 1600], 16000, t0 + i / 16000)
    offline.audio.flush()
    heard = [u for u in offline.transcripts if u.status == 'ok' and u.text]
    assert heard, 'the detector should decode some words of three calls'
    _t, text = av_pipeline.av_context._transcript
    assert text == ' '.join(heard[-1].text.split())
    seen = []
    original = offline.fusion.update_voice
    offline.fusion.update_voice = lambda *a, **k: seen.append(a) or original(*a, **k)
    empty = np.full((480, 640, 3), 90, np.uint8)
    end = t0 + audio.size / 16000
    result, _alerts = offline.on_image(empty, end)
    offline.finish()  # fusion inputs wait fusion.input_hold_s: fuse what is held
    assert result is not None and not result.persons and result.voice is not None
    assert seen and seen[0][0] is result.voice and seen[0][1] == end
    offline.audio.close()


def test_discrete_classes_travel_in_person_emotion():
    """class_names/class_scores survive PersonEmotion both ways; a length mismatch is named;
    backends without a discrete head leave them empty."""
    from emotion_ros.ros import conversions
    from emotion_ros.types import EmotionOutput, PersonEstimate
    rng = np.random.default_rng(3)
    for n in range(0, 9):
        probs = rng.dirichlet(np.ones(n)).astype(np.float32) if n else None
        names = tuple(f'class{i}' for i in range(n))
        emotion = EmotionOutput(scores=rng.uniform(0, 1, 26), vad=(5.0, 5.0, 5.0),
                                class_names=names, class_scores=probs)
        person = PersonEstimate(track_id=1, box=(0, 0, 4, 4), detection_confidence=1.0,
                                emotion=emotion, model_id='m')
        msg = conversions.person_to_msg(person, conversions.make_header(1.0, 'cam'))
        assert tuple(msg.class_names) == names and len(msg.class_scores) == n
        back = conversions.msg_to_person(msg).emotion
        assert back.class_names == names
        if n:
            assert np.allclose(back.class_scores, probs)
    msg.class_scores = [0.5]
    with pytest.raises(InputError, match='class names'):
        conversions.msg_to_person(msg)
    with pytest.raises(ValueError, match='class names'):
        EmotionOutput(scores=np.zeros(26), vad=(5.0, 5.0, 5.0), class_names=('a', 'b'),
                      class_scores=[1.0])


def test_scoring_waits_briefly_for_the_audio_of_a_frame():
    """wait_for_audio: true once audio reaching the stamp is fed (from another thread); false
    after the timeout while it does not come; no wait at all without a live microphone."""
    import threading
    import time
    from emotion_ros.perception.av_context import PersonAVContext
    ctx = PersonAVContext(audio_window_s=4.0, max_age_s=3.0)
    begun = time.monotonic()
    assert not ctx.wait_for_audio(5.0, 30.0)  # no microphone: returns at once
    assert time.monotonic() - begun < 30.0 and not ctx.audio_live()
    chunk = np.zeros(1600, np.float32)
    for delay in (0.0, 0.05, 0.2):
        for k in range(5):
            ctx.feed_audio(chunk, end_stamp=10.0 * delay + 0.1 * (k + 1))
        assert ctx.audio_live()
        late = threading.Timer(delay, ctx.feed_audio, (chunk, 10.0 * delay + 0.6))
        late.start()
        assert ctx.wait_for_audio(10.0 * delay + 0.6, 60.0), delay
        late.join()
    begun = time.monotonic()
    assert not ctx.wait_for_audio(100.0, 0.3)  # live, but audio reaching 100 s never comes
    assert time.monotonic() - begun >= 0.3
