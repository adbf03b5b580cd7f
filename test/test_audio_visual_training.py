"""The audio-visual model end to end on CPU: a tiny LLaVA + tiny HuBERT built from configs
learn a synthetic task whose label needs BOTH the image and the tone; ablations through the
robot's backend stay near what one modality allows; the evaluation command reproduces the
training validation, and so does a perception node fed the clips through real topics, clip by
clip; stage 2 starts from stage 1's weights; missing modalities get no tokens; and training and
serving build the same inputs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('peft')

# Settings that let the tiny random model learn the task in a few CPU minutes.
SIZES = {'train': 400, 'val': 100, 'test': 200}
TRAIN_ARGS = ['--model-kind', 'audio_visual', '--prompt-id', 'av_emotions_v1',
              '--label-set', 'mer2023', '--view', 'crop', '--lora-r', '8', '--lora-alpha', '16',
              '--lora-target-modules', 'q_proj', 'v_proj', '--head-hidden', '64',
              '--learning-rate', '1e-3', '--projector-lr', '3e-3', '--head-lr', '3e-3',
              '--lm-loss-weight', '0.2', '--lr-scheduler', 'constant',
              '--per-device-train-batch-size', '16', '--per-device-eval-batch-size', '50',
              '--no-gradient-checkpointing', '--num-workers', '0', '--no-progress',
              '--save-steps', '1000']
EPOCHS = 6


def _main(argv):
    from training.__main__ import main
    return main(argv)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Tiny base models, the synthetic task and one training run (a few CPU minutes)."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from training.av.synthetic import make_synthetic_av
    from training.core.tiny import save_tiny_audio_encoder, save_tiny_llava
    root = tmp_path_factory.mktemp('av')
    data = str(root / 'data')
    make_synthetic_av(data, SIZES, seed=0)
    base = save_tiny_llava(str(root / 'base'))
    encoder = save_tiny_audio_encoder(str(root / 'hubert'), 'hubert')
    run = str(root / 'run')
    argv = ['train', '--base-model', base, '--audio-encoder', encoder, '--data-root', data,
            '--output-dir', run, '--num-epochs', str(EPOCHS), *TRAIN_ARGS]
    assert _main(argv) == 0
    return {'root': root, 'data': data, 'base': base, 'encoder': encoder, 'run': run,
            'bundle': os.path.join(run, 'bundle')}


@pytest.fixture(scope='module')
def test_report(trained):
    """The evaluation command on the test split, all ablations, through the robot backend."""
    out = str(trained['root'] / 'eval_test')
    assert _main(['evaluate', '--bundle', trained['bundle'], '--data-root', trained['data'],
                  '--split', 'test', '--out', out, '--device', 'cpu', '--no-progress',
                  '--batch-size', '50']) == 0
    return json.loads(Path(out, 'report.json').read_text())


def test_both_modalities_learn_the_task_that_needs_both(test_report):
    """With image and tone the test accuracy is >= 0.9; one modality alone stays near 0.5."""
    cond = test_report['conditions']
    assert cond['all']['scored'] == SIZES['test']
    assert cond['all']['accuracy'] >= 0.9, cond['all']
    assert cond['all']['weighted_f1'] >= 0.9
    # Seeing only the top (or hearing only the tone) leaves two classes equally likely.
    for name in ('vision_only', 'audio_only'):
        assert 0.3 <= cond[name]['accuracy'] <= 0.62, (name, cond[name]['accuracy'])
    # The synthetic clips have no transcript: removing it changes nothing.
    assert cond['no_transcript']['accuracy'] == cond['all']['accuracy']
    print('\naudio-visual synthetic test accuracy: ' + ', '.join(
        f'{k} {v["accuracy"]:.3f}' for k, v in cond.items()))


def test_report_has_mer_metrics_and_confusion_plots(trained, test_report):
    """The report holds accuracy, weighted F1, UAR, WAR per condition and confusion plots."""
    out = trained['root'] / 'eval_test'
    for name, entry in test_report['conditions'].items():
        if entry['scored']:
            assert {'accuracy', 'weighted_f1', 'uar', 'war', 'confusion'} <= set(entry)
            assert os.path.getsize(out / f'confusion_{name}.png') > 1000
    assert np.asarray(test_report['conditions']['all']['confusion']).sum() == SIZES['test']
    assert '| audio_only |' in (out / 'report.md').read_text()


@pytest.fixture(scope='module')
def val_eval(trained):
    """The evaluation command on the validation split (all modalities): report + predictions."""
    out = trained['root'] / 'eval_val'
    assert _main(['evaluate', '--bundle', trained['bundle'], '--data-root', trained['data'],
                  '--split', 'val', '--out', str(out), '--device', 'cpu', '--no-progress',
                  '--ablations', 'all']) == 0
    return {'report': json.loads((out / 'report.json').read_text()),
            'predictions': dict(np.load(out / 'predictions.npz'))}


def test_evaluation_command_reproduces_the_training_validation(trained, val_eval):
    """Scoring val through the robot backend gives the weighted F1 training measured."""
    manifest = json.loads(Path(trained['bundle'], 'manifest.json').read_text())
    report = val_eval['report']
    assert report['weighted_f1'] == pytest.approx(manifest['metrics']['weighted_f1'], abs=1e-6)
    assert report['accuracy'] == pytest.approx(manifest['metrics']['accuracy'], abs=1e-6)
    assert manifest['model_kind'] == 'audio_visual' and manifest['label_set'] == 'mer2023'
    assert manifest['modalities']['audio_tokens'] == 4


def test_perception_node_reproduces_the_validation_per_clip(trained, val_eval, start_node,
                                                            ros_node):
    """perception_node, fed each val clip as real Image + AudioFrame (+ Transcript) messages,
    predicts the class the evaluation predicted for every clip, so the training accuracy."""
    import time
    import wave
    from emotion_ros_msgs.msg import AudioFrame, PersonEmotionArray, Transcript
    from sensor_msgs.msg import Image
    from conftest import wait_until
    from emotion_ros.llm.labels import label_set
    from emotion_ros.ros import conversions
    from rosgraph import params
    from training.av.data import load_av_records
    from training.core.images import load_image_rgb
    started = time.monotonic()
    manifest = json.loads(Path(trained['bundle'], 'manifest.json').read_text())
    pred = val_eval['predictions']
    records = load_av_records(trained['data'], 'val')
    assert [r.clip_id for r in records] == list(pred['clip_ids'])
    assert list(pred['all.rows']) == list(range(len(records))) == list(range(SIZES['val']))
    classes = label_set(manifest['label_set'])
    # The synthetic clips are person images (the figure fills the frame, training's box is the
    # whole image): detector.type frame gives the node that box. Everything else is robot.yaml
    # (thumbnails off and 20 frames/s only to save time; the longest audio wait because a loaded
    # CI machine can run the audio callbacks late: the wait ends as soon as the audio is in).
    proc = start_node('perception_node', *params(
        'autostart:=true', 'emotion.backend:=audio_visual', 'detector.type:=frame',
        f'emotion.audio_visual.bundle_path:={trained["bundle"]}',
        'emotion.audio_visual.device:=cpu', 'thumbnails:=false', 'max_rate_hz:=20.0',
        'emotion.audio_visual.audio_sync_s:=2.0'))
    node = ros_node('av_val_driver')
    results = {}

    def on_persons(msg):
        results.setdefault(round(conversions.stamp_to_sec(msg.header.stamp), 3), msg)

    node.create_subscription(PersonEmotionArray, 'persons', on_persons, 50)
    images = node.create_publisher(Image, 'image', 5)
    audio = node.create_publisher(AudioFrame, 'audio', 50)
    words = node.create_publisher(Transcript, 'transcripts', 10)
    assert wait_until(lambda: audio.get_subscription_count() and images.get_subscription_count(),
                      180, ros_node.spin), proc.output()[-3000:]
    wavs = []
    for record in records:
        with wave.open(record.audio_path, 'rb') as f:
            assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
            wavs.append(f.readframes(f.getnframes()))

    def node_answer(k, slot):
        """Publish clip k as messages in its own time slot; the node's person for it."""
        # The slot lives at t = 1000 + 10 slot s: the clip's audio (its WAV's PCM in 100 ms
        # frames) ends when its image is taken; the 10 s gap to the next slot (> the 4 s audio
        # window and the 3 s context age) keeps the previous clip's voice and crops out, as
        # each clip stands alone in training.
        t, record, pcm = 1000.0 + 10.0 * slot, records[k], wavs[k]
        chunk = 2 * 1600
        for i in range(0, len(pcm), chunk):
            header = conversions.make_header(t - (len(pcm) - i) / 2 / 16000, 'mic')
            audio.publish(AudioFrame(header=header, sample_rate=16000, channels=1,
                                     sample_format='S16LE', data=pcm[i:i + chunk]))
        if record.transcript:
            words.publish(Transcript(text=record.transcript,
                                     end=conversions.make_header(t).stamp))
        rgb = load_image_rgb(record.image_path)
        key = round(t, 3)
        # Images are best effort (sensor QoS): send again if one was lost on the way.
        for _attempt in range(5):
            images.publish(conversions.rgb_to_image(rgb, conversions.make_header(t, 'cam')))
            if wait_until(lambda: key in results, 60, ros_node.spin):
                break
        assert key in results, (record.clip_id, proc.output()[-3000:])
        persons = results[key].persons
        assert len(persons) == 1, (record.clip_id, len(persons))
        person = persons[0]
        assert (person.x_min, person.y_min, person.x_max, person.y_max) == \
            (0.0, 0.0, rgb.shape[1], rgb.shape[0])
        assert person.model_id.startswith('audio_visual:')
        assert tuple(person.class_names) == classes
        return person

    worst = {'class': 0.0, 'category': 0.0}

    def differs(person, k):
        probs, want = np.asarray(person.class_scores), pred['all.discrete'][k]
        worst['class'] = max(worst['class'], float(np.abs(probs - want).max()))
        worst['category'] = max(worst['category'], float(np.abs(
            np.asarray(person.category_scores) - pred['all.scores'][k]).max()))
        if int(probs.argmax()) != int(want.argmax()) or not np.allclose(probs, want, atol=1e-4) \
                or not np.allclose(person.category_scores, pred['all.scores'][k], atol=1e-4):
            return (records[k].clip_id, classes[int(probs.argmax())],
                    classes[int(want.argmax())], float(np.abs(probs - want).max()))
        return None

    # A first clip makes the microphone live (the node waits for a frame's audio only while
    # audio arrives, as on a robot); its answer is checked again below in its own slot.
    node_answer(0, 0)
    mismatches, node_pred = [], []
    for k in range(len(records)):
        person = node_answer(k, k + 1)
        node_pred.append(int(np.argmax(person.class_scores)))
        if differs(person, k) is not None:
            mismatches.append(differs(person, k))
    assert not mismatches, mismatches
    truth = pred['truth']
    accuracy = float(np.mean(np.asarray(node_pred) == truth))
    assert accuracy == pytest.approx(manifest['metrics']['accuracy'], abs=1e-9)
    assert accuracy == pytest.approx(val_eval['report']['accuracy'], abs=1e-9)
    assert proc.alive()
    print(f'\nperception node on {len(records)} val clips: accuracy {accuracy:.3f} (training '
          f'{manifest["metrics"]["accuracy"]:.3f}), largest difference to the evaluation: '
          f'class probability {worst["class"]:.1e}, category score {worst["category"]:.1e}; '
          f'{time.monotonic() - started:.1f} s')


def test_stage2_starts_from_stage1_weights(trained, tmp_path):
    """--init-from loads every trained tensor of stage 1; after 2 steps it is still accurate."""
    from safetensors.torch import load_file
    from training.av.model import build_av_model, init_from_stage1
    from training.core.config import parse_train_args
    argv = ['--base-model', trained['base'], '--audio-encoder', trained['encoder'],
            '--data-root', trained['data'], '--output-dir', str(tmp_path / 'stage2'),
            *TRAIN_ARGS]
    cfg = parse_train_args(argv)
    stage1 = load_file(os.path.join(trained['run'], 'best', 'trainable.safetensors'))
    fresh, _ = build_av_model(cfg)
    differs = [n for n, t in fresh.trainable_state_dict().items()
               if not torch.equal(t, stage1[n])]
    assert differs  # a fresh model is not stage 1 ...
    loaded = init_from_stage1(fresh, trained['run'], 'mer2023')
    assert loaded['loaded'] == len(stage1) and not loaded['fresh']
    for name, tensor in fresh.trainable_state_dict().items():
        assert torch.equal(tensor, stage1[name]), name  # ... until initialised from it
    # The real stage-2 run: two steps at a tiny learning rate keep stage 1's accuracy.
    out = str(tmp_path / 'stage2_run')
    assert _main(['train', '--base-model', trained['base'], '--audio-encoder',
                  trained['encoder'], '--data-root', trained['data'], '--output-dir', out,
                  '--init-from', trained['run'], '--num-epochs', '1', '--max-steps', '2',
                  *TRAIN_ARGS, '--learning-rate', '1e-6', '--projector-lr', '1e-6',
                  '--head-lr', '1e-6']) == 0
    record = json.loads(Path(out, 'init_from.json').read_text())
    assert record['loaded'] == len(stage1)
    history = json.loads(Path(out, 'bundle', 'manifest.json').read_text())['metrics']
    assert history['accuracy'] >= 0.85  # a model from scratch is near 0.25 after 2 steps
