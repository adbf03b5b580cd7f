"""``python -m training <command>``: the training module's command line.

Each command lives in its own module, imported only when that command runs
(so ``stats`` never pays for importing torch). To add a command, add one line
to ``COMMANDS``: name -> (module, function adding its arguments, function
running it and returning the exit status, one-line help).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Sequence, Tuple

COMMANDS: Dict[str, Tuple[str, str, str, str]] = {
    'stats': ('training.commands', 'add_stats_arguments', 'run_stats',
              'check a dataset download: images, persons, categories, VAD, skips per split'),
    'make-synthetic': ('training.emotic.synthetic', 'add_arguments', 'run',
                       'write a synthetic dataset in the EMOTIC CSV layout'),
    'make-synthetic-av': ('training.av.synthetic', 'add_arguments', 'run',
                          'write the synthetic audio-visual task (label needs image AND tone)'),
    'make-tiny': ('training.core.tiny', 'add_make_tiny_arguments', 'run_make_tiny',
                  'write a tiny random LLaVA or speech encoder (offline demos and tests)'),
    'train': ('training.commands', 'add_train_arguments', 'run_train',
              'fine-tune LLaVA + LoRA + score head (or the audio_visual model); bundle'),
    'evaluate': ('training.commands', 'add_evaluate_arguments', 'run_evaluate',
                 'mAP, AP, VAD MAE, thresholds; audio_visual: accuracy, weighted F1, UAR, '
                 'WAR per modality ablation; report with plots'),
    'export': ('training.commands', 'add_export_arguments', 'run_export',
               'write a bundle from a run, or merge the adapter of a bundle'),
}


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS) + 2
    listing = '\n'.join(f'  {name.ljust(width)}{spec[3]}' for name, spec in COMMANDS.items())
    return argparse.ArgumentParser(
        prog='python -m training', usage='python -m training <command> [options]',
        description='Train and evaluate the emotion models offline (LLaVA + LoRA on EMOTIC; '
                    'the audio-visual model on RAVDESS, CREMA-D, DFEW, MER2023, MERR).',
        epilog=f'commands:\n{listing}\n\n'
               "run 'python -m training <command> --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the command line, run the command, return its exit status."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not args or args[0] in ('-h', '--help'):
        top.print_help()
        return 0 if args else 2
    name = args[0]
    if name not in COMMANDS:
        top.print_usage(sys.stderr)
        print(f'python -m training: error: unknown command {name!r} '
              f'(choose from {", ".join(COMMANDS)})', file=sys.stderr)
        return 2
    module_name, add_arguments, run, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f'python -m training {name}', description=help_text)
    getattr(module, add_arguments)(parser)
    options = parser.parse_args(args[1:])
    from emotion_ros.errors import EmotionRosError
    try:
        return int(getattr(module, run)(options) or 0)
    except EmotionRosError as exc:
        print(f'python -m training {name}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'python -m training {name}: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
