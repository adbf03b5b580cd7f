"""Data-parallel training really runs as 2 processes on CPU (torchrun, gloo) and the
example Accelerate configs are valid."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip('torch')
pytest.importorskip('accelerate')

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'training' / 'configs'


def test_two_cpu_processes_train_one_model(tmp_path):
    """torchrun starts 2 gloo ranks that split each epoch; one set of logs and one bundle."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from emotion_ros.llm.bundle import verify_bundle
    from training.emotic.synthetic import make_synthetic
    from training.core.tiny import save_tiny_llava
    data = str(tmp_path / 'data')
    make_synthetic(data, 64, 32, 0, seed=5)
    base = save_tiny_llava(str(tmp_path / 'base'))
    out = str(tmp_path / 'run')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nnodes', '1',
           '--nproc_per_node', '2', '-m', 'training', 'train', '--cpu',
           '--base-model', base, '--data-root', data, '--output-dir', out, '--view', 'crop',
           '--num-epochs', '2', '--per-device-train-batch-size', '4',
           '--per-device-eval-batch-size', '8', '--lora-r', '4', '--lora-alpha', '8',
           '--head-hidden', '32', '--learning-rate', '1e-3', '--logging-steps', '1',
           '--no-gradient-checkpointing', '--num-workers', '0', '--no-progress']
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert '2 processes' in output, output[-3000:]
    with open(os.path.join(out, 'train_log.csv'), newline='') as f:
        steps = [int(r['step']) for r in csv.DictReader(f)]
    # 64 persons, 4 per process per step, 2 processes: 8 steps per epoch (one process
    # alone would need 16), logged once (by the main process only).
    assert steps == list(range(1, 17))
    with open(os.path.join(out, 'eval_log.csv'), newline='') as f:
        evals = list(csv.DictReader(f))
    assert [float(r['epoch']) for r in evals] == [1, 2]
    manifest = verify_bundle(os.path.join(out, 'bundle'), expected_base_model=base)
    assert manifest['metrics']['persons'] == 32  # evaluation gathered from both ranks


@pytest.mark.parametrize('name', sorted(p.name for p in CONFIGS.glob('accelerate_*.yaml')))
def test_accelerate_configs_are_complete(name):
    """Each example Accelerate config parses and names a consistent multi-process setup."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    assert config['distributed_type'] in ('NO', 'MULTI_GPU')
    assert config['num_processes'] >= 1 and config['num_machines'] >= 1
    if config['num_machines'] > 1:
        assert config['main_process_ip'] and config['main_process_port']
        assert config['num_processes'] % config['num_machines'] == 0
    assert config['mixed_precision'] in ('no', 'bf16', 'fp16')


def test_training_recipe_configs_load(tmp_path):
    """The YAML recipes in training/configs load into a valid TrainConfig."""
    from training.core.config import parse_train_args
    recipes = sorted(CONFIGS.glob('*.yaml'))
    recipes = [p for p in recipes if not p.name.startswith('accelerate_')]
    assert recipes
    for path in recipes:
        cfg = parse_train_args(['--config', str(path)])
        assert cfg.base_model
