"""End to end on CPU: a tiny LLaVA built from configs is fine-tuned on the synthetic EMOTIC
set, its loss falls, validation mAP ends far above chance, the best epoch becomes a bundle
that the robot's backend loads, the evaluation command reports on it, and a killed run
resumes where its last checkpoint left it."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('peft')

ROOT = Path(__file__).resolve().parents[1]

# Fast-learning settings for the tiny model: constant learning rate (a cosine
# schedule decays before a 2M-parameter random model finds the categories).
TRAIN_ARGS = ['--view', 'crop', '--lora-r', '8', '--lora-alpha', '16', '--head-hidden', '64',
              '--learning-rate', '1e-3', '--projector-lr', '3e-3', '--head-lr', '3e-3',
              '--lr-scheduler', 'constant', '--no-gradient-checkpointing', '--num-workers', '0',
              '--no-progress', '--per-device-eval-batch-size', '64']


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _main(argv):
    from training.__main__ import main
    return main(argv)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Synthetic data, a tiny base model and one 6-epoch training run (about a minute)."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from training.emotic.synthetic import make_synthetic
    from training.core.tiny import save_tiny_llava
    root = tmp_path_factory.mktemp('e2e')
    data = str(root / 'data')
    make_synthetic(data, 1200, 200, 100, seed=0)
    base = save_tiny_llava(str(root / 'base'))
    out = str(root / 'run')
    argv = ['train', '--base-model', base, '--data-root', data, '--output-dir', out,
            '--num-epochs', '6', '--per-device-train-batch-size', '16', '--logging-steps', '10',
            '--save-steps', '1000', *TRAIN_ARGS]
    assert _main(argv) == 0
    return {'root': root, 'data': data, 'base': base, 'run': out,
            'bundle': os.path.join(out, 'bundle')}


def test_training_loss_falls(trained):
    """The joint loss, the answer-text loss and the category loss all fall during training."""
    rows = _rows(os.path.join(trained['run'], 'train_log.csv'))
    assert len(rows) >= 20
    first, last = rows[:3], rows[-3:]
    for key in ('loss', 'lm_loss', 'cls_loss'):
        start = np.mean([float(r[key]) for r in first])
        end = np.mean([float(r[key]) for r in last])
        assert end < start * (0.5 if key != 'cls_loss' else 0.9), (key, start, end)
    assert int(rows[-1]['step']) == 6 * 75  # 1200 persons / 16 per step, 6 epochs


def test_validation_map_far_above_chance(trained):
    """Best validation mAP is several times the mAP of random scores on the same split."""
    from training.emotic.dataset import load_dataset
    from training.emotic.records import label_matrix
    evals = _rows(os.path.join(trained['run'], 'eval_log.csv'))
    assert [float(r['epoch']) for r in evals] == [1, 2, 3, 4, 5, 6]
    best = max(float(r['val_map']) for r in evals)
    records, _ = load_dataset(trained['data'], 'val')
    chance = float(label_matrix(records).mean(0).mean())  # expected AP of random scores
    assert best > 2.5 * chance and best > chance + 0.15, (best, chance)
    assert best > float(evals[0]['val_map']) + 0.05  # learnt over the epochs
    # VAD from the head is far better than predicting the mean.
    vads = [float(r['val_vad_mae']) for r in evals]
    assert min(vads) < 0.8


def test_best_epoch_becomes_the_bundle(trained):
    """The bundle holds the epoch with the best validation mAP and records how it was made."""
    from emotion_ros.llm.bundle import verify_bundle
    from emotion_ros.llm.contract import CONTRACT_VERSION
    evals = _rows(os.path.join(trained['run'], 'eval_log.csv'))
    best = max(evals, key=lambda r: float(r['val_map']))
    manifest = verify_bundle(trained['bundle'], expected_base_model=trained['base'])
    assert manifest['contract_version'] == CONTRACT_VERSION
    assert manifest['metrics']['epoch'] == pytest.approx(float(best['epoch']))
    assert manifest['metrics']['map'] == pytest.approx(float(best['val_map']), abs=1e-5)
    assert [int(r['is_best']) for r in evals].count(1) >= 1
    assert manifest['view'] == 'crop' and manifest['prompt_id'] == 'emotic_vad_v1'
    assert len(manifest['thresholds']) >= 20
    with open(os.path.join(trained['run'], 'config.json')) as f:
        assert manifest['training_config'] == json.load(f)
    assert os.path.getsize(os.path.join(trained['run'], 'curves.png')) > 1000


def test_evaluation_command_reproduces_the_training_validation(trained):
    """The evaluate command, through the robot's backend, gives the mAP training measured."""
    out = str(trained['root'] / 'eval_val')
    assert _main(['evaluate', '--data-root', trained['data'], '--bundle', trained['bundle'],
                  '--split', 'val', '--val-split', '', '--out', out, '--device', 'cpu',
                  '--no-progress']) == 0
    report = json.loads(Path(out, 'report.json').read_text())
    with open(os.path.join(trained['bundle'], 'manifest.json')) as f:
        manifest = json.load(f)
    assert report['map'] == pytest.approx(manifest['metrics']['map'], abs=2e-3)
    assert report['persons'] == 200 and report['scores'] == 'head'


def test_evaluation_report_on_test_with_validation_thresholds(trained):
    """The test report has mAP, per-category AP, VAD MAE, val thresholds, Markdown and plots."""
    from emotion_ros.llm.contract import CATEGORIES
    from emotion_ros.evaluation.metrics import mean_average_precision
    out = trained['root'] / 'eval_test'
    assert _main(['evaluate', '--data-root', trained['data'], '--bundle', trained['bundle'],
                  '--out', str(out), '--device', 'cpu', '--no-progress',
                  '--label', 'tiny e2e']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert set(report['per_category_ap']) == set(CATEGORIES)
    assert report['split'] == 'test' and report['val_split'] == 'val'
    assert report['thresholds'] and set(report['at_thresholds']) == set(report['thresholds'])
    assert report['vad_mae']['mean'] < 1.5
    predictions = np.load(out / 'predictions.npz')
    assert mean_average_precision(predictions['labels'], predictions['scores'])[0] == \
        pytest.approx(report['map'])
    markdown = (out / 'report.md').read_text()
    assert 'tiny e2e' in markdown and '40.60' in markdown and 'Yearning' in markdown
    for name in ('ap_per_category.png', 'pr_curves.png', 'vad_scatter.png'):
        assert (out / name).stat().st_size > 1000
    # The same folder is not overwritten silently.
    assert _main(['evaluate', '--data-root', trained['data'], '--bundle', trained['bundle'],
                  '--out', str(out), '--device', 'cpu', '--no-progress']) == 2


def test_zero_shot_text_baseline_runs_through_the_same_command(trained):
    """Zero-shot LLaVA is evaluated by parsing generated answers (binary scores)."""
    out = trained['root'] / 'eval_zero'
    assert _main(['evaluate', '--data-root', trained['data'], '--zero-shot', '--base-model',
                  trained['base'], '--max-samples', '16', '--max-new-tokens', '6',
                  '--val-split', '', '--out', str(out), '--device', 'cpu',
                  '--no-progress']) == 0
    report = json.loads((out / 'report.json').read_text())
    assert report['scores'] == 'text' and 0.0 <= report['answers_complete'] <= 1.0
    scores = np.load(out / 'predictions.npz')['scores']
    assert set(np.unique(scores)) <= {0.0, 1.0}
    assert len((out / 'answers.jsonl').read_text().splitlines()) == 16


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL mid-epoch, run again: training continues, no step is logged twice, bundle made;
    a finished run is left alone and a changed model setting is refused."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from training.emotic.synthetic import make_synthetic
    from training.core.tiny import save_tiny_llava
    from training.core.train import list_checkpoints
    data = str(tmp_path / 'data')
    make_synthetic(data, 96, 32, 0, seed=4)
    base = save_tiny_llava(str(tmp_path / 'base'))
    out = str(tmp_path / 'run')
    argv = ['train', '--base-model', base, '--data-root', data, '--output-dir', out,
            '--num-epochs', '3', '--per-device-train-batch-size', '8', '--logging-steps', '1',
            '--save-steps', '4', *TRAIN_ARGS]
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    with open(tmp_path / 'first.log', 'w') as log:
        proc = subprocess.Popen([sys.executable, '-m', 'training', *argv], cwd=str(ROOT),
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if any(step >= 8 for step, _ in list_checkpoints(out)):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / 'first.log').read_text()[-3000:]
    killed_at = max(step for step, _ in list_checkpoints(out))
    assert 8 <= killed_at < 36 and not os.path.exists(os.path.join(out, 'bundle'))
    assert _main(argv) == 0
    steps = [int(r['step']) for r in _rows(os.path.join(out, 'train_log.csv'))]
    assert steps == list(range(1, 37))  # 96 persons / 8 = 12 steps per epoch, 3 epochs
    assert [float(r['epoch']) for r in _rows(os.path.join(out, 'eval_log.csv'))] == [1, 2, 3]
    events = [json.loads(line) for line in open(os.path.join(out, 'metrics.jsonl'))]
    train_steps = [e['step'] for e in events if e['event'] == 'train']
    assert len(train_steps) == len(set(train_steps)) == 36
    assert os.path.isfile(os.path.join(out, 'bundle', 'manifest.json'))
    # Running the finished command again does nothing and keeps the bundle.
    before = os.path.getmtime(os.path.join(out, 'bundle', 'manifest.json'))
    assert _main(argv) == 0
    assert os.path.getmtime(os.path.join(out, 'bundle', 'manifest.json')) == before
    # Resuming with settings that change the model is refused (exit status 2).
    changed = list(argv)
    changed[changed.index('--lora-alpha') + 1] = '32'
    assert _main(changed) == 2


def test_training_into_a_folder_with_a_bundle_refuses_and_deletes_nothing(trained, capsys):
    """train into a folder holding bundle/ exits 2 naming it, without --overwrite; files stay."""
    import hashlib
    import shutil
    out = trained['root'] / 'kept'
    shutil.copytree(trained['bundle'], out / 'bundle')
    (out / 'notes.txt').write_text('mine')

    def digest():
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob('*')) if p.is_file()}

    before = digest()
    argv = ['train', '--base-model', trained['base'], '--data-root', trained['data'],
            '--output-dir', str(out), '--num-epochs', '1', *TRAIN_ARGS]
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert 'bundle' in err and '--overwrite' in err and str(out) in err
    assert digest() == before  # nothing deleted, nothing added
