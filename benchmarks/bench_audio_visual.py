"""Benchmark the audio_visual backend: per-person latency with each input combination.

Part 1 (always, CPU): the tiny LLaVA + tiny HuBERT built from configs
(training/core/tiny.py) with a random audio_visual bundle, loaded by the robot's
backend. For 1 and 8 persons it times ``score_inputs`` with

  - the person view only (what the llava backend sees);
  - view + 4 s of audio;
  - view + 8 crops (temporal tokens) + 4 s of audio + a transcript (everything);
  - audio only (nobody visible);

and a 32-token explanation.

Part 2 (``--large``, needs a CUDA GPU): a LLaVA-1.5-7B-sized LLM (CLIP
ViT-L/14-336 + a 7B Llama) and a HuBERT-large-sized speech encoder (24
layers, 1024 wide), randomly initialised in bf16 (no weights can be
downloaded here), through the same backend code. It reports the same table,
peak GPU memory and the GPU's name. Without CUDA, ``--large`` exits with
status 2 and says so; ``--large-config small --device cpu`` runs the large
code path on a small model to check it.

    . tools/env.sh && python benchmarks/bench_audio_visual.py [--repeats 10] [--large]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from timing import ms_stats, timings  # noqa: E402

CONDITIONS = ('view', 'view+audio', 'everything', 'audio_only')


def _inputs(condition: str, n: int, view_px: int) -> List[Any]:
    import numpy as np
    from emotion_ros.llm.multimodal import AVInputs
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        view = rng.integers(0, 255, (view_px, view_px, 3), dtype=np.uint8)
        audio = (0.1 * rng.standard_normal(4 * 16000)).astype(np.float32)
        frames = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(8)]
        if condition == 'view':
            out.append(AVInputs(image=view))
        elif condition == 'view+audio':
            out.append(AVInputs(image=view, audio=audio))
        elif condition == 'everything':
            out.append(AVInputs(image=view, audio=audio, frames=frames,
                                transcript='Please help me, I cannot move my leg.'))
        else:
            out.append(AVInputs(audio=audio))
    return out


def _measure(backend: Any, repeats: int, view_px: int, sync: Callable[[], None]
             ) -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    for condition in CONDITIONS:
        for n in (1, 8):
            inputs = _inputs(condition, n, view_px)
            times = timings(lambda: backend.score_inputs(inputs), repeats, sync=sync)
            entry = ms_stats(times)
            entry['per_person_ms'] = entry['median_ms'] / n
            results[f'{condition}/{n}'] = entry
    one = _inputs('everything', 1, view_px)[0]
    results['explain_32_tokens'] = ms_stats(timings(
        lambda: backend.explain_inputs(one, 32), max(2, repeats // 4), sync=sync))
    return results


def tiny_part(repeats: int) -> Dict[str, Any]:
    """Part 1: tiny models from configs, CPU, through a bundle and the backend's load()."""
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from emotion_ros.backends.audio_visual import AudioVisualBackend, AudioVisualOptions
    from training.av.tiny import write_random_av_bundle
    from training.core.tiny import save_tiny_audio_encoder, save_tiny_llava
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_random_av_bundle(save_tiny_llava(os.path.join(tmp, 'base')),
                                        save_tiny_audio_encoder(os.path.join(tmp, 'hubert')),
                                        os.path.join(tmp, 'bundle'))
        backend = AudioVisualBackend(AudioVisualOptions(bundle_path=bundle, device='cpu',
                                                        max_batch=8))
        t0 = time.perf_counter()
        backend.load()
        load_s = time.perf_counter() - t0
        results = {'model': 'tiny LLaVA (2-layer Llama 192) + tiny HuBERT (1 layer, 32)',
                   'device': 'cpu', 'threads': torch.get_num_threads(), 'load_s': load_s}
        results.update(_measure(backend, repeats, 64, lambda: None))
        backend.close()
    return results


def large_configs(size: str) -> Any:
    """(LlavaConfig, HubertConfig) of the real sizes, or small stand-ins of the same layout."""
    from transformers import HubertConfig
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    from bench_llava import llava15_7b_config
    from training.core.tiny import build_tiny_tokenizer, tiny_audio_encoder_config
    tokenizer = build_tiny_tokenizer()
    llava = llava15_7b_config(tokenizer.convert_tokens_to_ids('<image>'), size)
    if size == 'llava-1.5-7b':
        # HuBERT-large (facebook/hubert-large-ll60k): 24 layers, 1024 wide, stable layer norm.
        audio = HubertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=4096, feat_extract_norm='layer',
                             do_stable_layer_norm=True, conv_bias=True)
    else:
        audio = tiny_audio_encoder_config('hubert', 64)
    return tokenizer, llava, audio


def large_part(repeats: int, size: str, device: str) -> Dict[str, Any]:
    """Part 2: 7B-sized LLaVA + HuBERT-large-sized encoder, random bf16 weights."""
    import torch
    from transformers import AutoModel, CLIPImageProcessor, LlavaForConditionalGeneration
    from emotion_ros.backends.audio_visual import AudioVisualBackend, AudioVisualOptions
    from emotion_ros.llm.encoding import image_token_count
    from emotion_ros.llm.multimodal import AudioVisualModel, ModalityLayout
    from training.core.model import assemble_processor
    cuda = device.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    tokenizer, llava_config, audio_config = large_configs(size)
    processor = assemble_processor(tokenizer, CLIPImageProcessor(
        size={'shortest_edge': 336}, crop_size={'height': 336, 'width': 336}), llava_config)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        llava = LlavaForConditionalGeneration._from_config(llava_config, dtype=dtype)
        encoder = AutoModel.from_config(audio_config, dtype=dtype)
    llava.generation_config.pad_token_id = tokenizer.pad_token_id
    layout = ModalityLayout(image_tokens=image_token_count(processor),
                            audio_encoder_type='hubert',
                            audio_hidden=int(audio_config.hidden_size))
    model = AudioVisualModel(llava, encoder.eval(), layout, 1024, 'merr').to(device)
    for module in (model.audio_projector, model.video_projector, model.head,
                   model.discrete_head):
        module.to(dtype)
    model.audio_position.data = model.audio_position.data.to(dtype)
    model.video_position.data = model.video_position.data.to(dtype)
    init_s = time.perf_counter() - t0
    backend = AudioVisualBackend(AudioVisualOptions(bundle_path='(random weights)',
                                                    device=device, max_batch=8))
    backend.attach(model, processor, {'prompt_id': 'av_emotions_v1', 'chat_template':
                                      'llava-1.5', 'view': 'crop', 'label_set': 'merr'})
    results: Dict[str, Any] = {
        'model': (f'LLaVA-1.5-7B-sized LLM + HuBERT-large-sized encoder (random init, {dtype})'
                  if size == 'llava-1.5-7b' else
                  f'small stand-ins of the large layout (random init, {dtype})'),
        'device': device, 'init_s': init_s,
        'parameters_b': sum(p.numel() for p in model.parameters()) / 1e9}
    if cuda:
        results['gpu'] = torch.cuda.get_device_name()
        torch.cuda.reset_peak_memory_stats()
    results.update(_measure(backend, repeats, 336, sync))
    if cuda:
        results['peak_memory_gb'] = torch.cuda.max_memory_allocated() / 1e9
    return results


def markdown(results: Dict[str, Any]) -> str:
    """Tables for docs/benchmarks.md."""
    lines = []
    for key in ('tiny', 'large'):
        part = results.get(key)
        if not part:
            continue
        lines += [f'### {part["model"]} on {part.get("gpu", part["device"])}', '',
                  '| inputs per person | 1 person | 8 persons (per person) |', '|---|---|---|']
        for condition in CONDITIONS:
            one, eight = part[f'{condition}/1'], part[f'{condition}/8']
            lines.append(f'| {condition} | {one["median_ms"]:.1f} ms | '
                         f'{eight["median_ms"]:.1f} ms ({eight["per_person_ms"]:.1f} ms) |')
        lines += ['', f'32-token explanation (everything): '
                  f'{part["explain_32_tokens"]["median_ms"]:.1f} ms (median).']
        if 'peak_memory_gb' in part:
            lines.append(f'Peak GPU memory: {part["peak_memory_gb"]:.1f} GB.')
        lines.append('')
    return '\n'.join(lines)


def main(argv: List[str] = None) -> int:
    """Run the benchmark; print JSON and Markdown tables (exit 2: --large without a GPU)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=10, help='timed repetitions (default 10)')
    parser.add_argument('--large', action='store_true',
                        help='also run the 7B LLaVA + HuBERT-large-sized model (needs CUDA)')
    parser.add_argument('--large-config', default='llava-1.5-7b',
                        choices=('llava-1.5-7b', 'small'),
                        help="'small' checks the large-model code path on any device")
    parser.add_argument('--device', default='cuda', help='device of the large part')
    parser.add_argument('--skip-tiny', action='store_true', help='only the large part')
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args(argv)
    import torch
    if args.large and args.device.startswith('cuda') and not torch.cuda.is_available():
        print('bench_audio_visual: --large needs a CUDA GPU and none is usable here (use '
              '--large-config small --device cpu to check the code path)', file=sys.stderr)
        return 2
    results: Dict[str, Any] = {'machine': {'python': platform.python_version(),
                                           'cpu': platform.processor() or platform.machine(),
                                           'cpu_count': os.cpu_count(),
                                           'torch': torch.__version__}}
    if not args.skip_tiny:
        results['tiny'] = tiny_part(args.repeats)
    if args.large:
        results['large'] = large_part(args.repeats, args.large_config, args.device)
    print(json.dumps(results, indent=2))
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
