"""The audio-visual model end to end on CPU: a tiny LLaVA + tiny HuBERT built from configs
learn a synthetic task whose label needs BOTH the image and the tone; ablations through the
robot's backend stay near what one modality allows; the evaluation command reproduces the
training validation; stage 2 starts from stage 1's weights; missing modalities get no tokens;
and training and serving build the same inputs."""

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
    from training.synthetic_av import make_synthetic_av
    from training.tiny import save_tiny_audio_encoder, save_tiny_llava
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


def test_evaluation_command_reproduces_the_training_validation(trained):
    """Scoring val through the robot backend gives the weighted F1 training measured."""
    manifest = json.loads(Path(trained['bundle'], 'manifest.json').read_text())
    out = str(trained['root'] / 'eval_val')
    assert _main(['evaluate', '--bundle', trained['bundle'], '--data-root', trained['data'],
                  '--split', 'val', '--out', out, '--device', 'cpu', '--no-progress',
                  '--ablations', 'all']) == 0
    report = json.loads(Path(out, 'report.json').read_text())
    assert report['weighted_f1'] == pytest.approx(manifest['metrics']['weighted_f1'], abs=1e-6)
    assert report['accuracy'] == pytest.approx(manifest['metrics']['accuracy'], abs=1e-6)
    assert manifest['model_kind'] == 'audio_visual' and manifest['label_set'] == 'mer2023'
    assert manifest['modalities']['audio_tokens'] == 4


def test_stage2_starts_from_stage1_weights(trained, tmp_path):
    """--init-from loads every trained tensor of stage 1; after 2 steps it is still accurate."""
    from safetensors.torch import load_file
    from training.av_model import build_av_model, init_from_stage1
    from training.config import parse_train_args
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
