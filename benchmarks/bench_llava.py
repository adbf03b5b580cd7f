"""Benchmark the llava backend: single-pass scoring against generating the answer.

Part 1 (always, CPU): the tiny LLaVA built from configs (training/core/tiny.py) with a
random bundle, loaded by the robot's backend. For 1 and 8 persons of one
640x480 frame it times

  - scoring: ``LlavaBackend.estimate`` (one forward pass, the score head);
  - generating the full answer the poster's model produces (emotions + VAD as
    words, forced to its full token length) for the same persons;
  - a 32-token explanation,

and reports the ratio scoring / generation.

Part 2 (``--large``, needs a CUDA GPU): a LLaVA-1.5-7B-sized model (CLIP
ViT-L/14-336 + a 7B Llama, bf16) randomly initialised from its config, since
weights cannot be downloaded here. It reports per-person scoring latency at
batch 1 and 8, the latency of a 32-token explanation, peak GPU memory, and
LoRA (r 128, gradient checkpointing) training samples/s, with the GPU named.
``--large-config small --device cpu`` runs the same code on a small model to
check it without a GPU.

    . tools/env.sh && python benchmarks/bench_llava.py [--repeats 20] [--large] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from timing import ms_stats, timings  # noqa: E402

# A typical EMOTIC answer (three emotions + VAD words): what generation must produce.
ANSWER_CATEGORIES = ('Engagement', 'Excitement', 'Happiness')
ANSWER_VAD = (7.0, 6.0, 7.0)


def _frame_and_boxes(n: int):
    import numpy as np
    rng = np.random.default_rng(0)
    image = (rng.random((480, 640, 3)) * 255).astype(np.uint8)
    boxes = []
    for i in range(n):
        x = 10 + (i % 4) * 155
        y = 10 + (i // 4) * 235
        boxes.append((x, y, x + 140, y + 220))
    return image, boxes


def _answer_tokens(processor: Any) -> int:
    from emotion_ros.llm.contract import format_answer
    answer = ' ' + format_answer(ANSWER_CATEGORIES, ANSWER_VAD)
    return len(processor.tokenizer(answer, add_special_tokens=False)['input_ids']) + 1  # + EOS


def _score_vs_generate(backend: Any, repeats: int, sync: Callable[[], None]) -> Dict[str, Any]:
    n_answer = _answer_tokens(backend._processor)
    results: Dict[str, Any] = {'answer_tokens': n_answer, 'prompt_tokens': len(
        backend._prompt_ids)}
    for batch in (1, 8):
        image, boxes = _frame_and_boxes(batch)
        views = backend.render_views(image, boxes)
        score = timings(lambda: backend.estimate(image, boxes), repeats, warmup=2, sync=sync)
        gen = timings(lambda: backend.generate(views, backend.prompt_id, n_answer,
                                               min_new_tokens=n_answer),
                      max(3, repeats // 4), warmup=2, sync=sync)
        results[f'batch{batch}'] = {
            'score': ms_stats(score),
            'score_per_person_ms': 1000 * statistics.median(score) / batch,
            'generate_answer': ms_stats(gen),
            'ratio_score_to_generate': statistics.median(score) / statistics.median(gen),
        }
    image, boxes = _frame_and_boxes(1)
    views = backend.render_views(image, boxes)
    explain = timings(lambda: backend.generate(views, backend.options.explain_prompt_id, 32,
                                               use_adapter=False, min_new_tokens=32),
                      max(3, repeats // 4), warmup=2, sync=sync)
    results['explain_32_tokens'] = ms_stats(explain)
    return results


def tiny_part(repeats: int) -> Dict[str, Any]:
    """Part 1: the tiny model on CPU through the robot's backend."""
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from emotion_ros.backends.llava import LlavaBackend, LlavaOptions
    from training.core.tiny import save_tiny_llava, write_random_bundle
    with tempfile.TemporaryDirectory() as tmp:
        base = save_tiny_llava(os.path.join(tmp, 'base'))
        bundle = write_random_bundle(base, os.path.join(tmp, 'bundle'), view='box')
        backend = LlavaBackend(LlavaOptions(bundle_path=bundle, device='cpu'))
        backend.load()
        params = sum(p.numel() for p in backend._model.parameters())
        results = _score_vs_generate(backend, repeats, sync=lambda: None)
        backend.close()
    results.update({'model': f'tiny LLaVA ({params / 1e6:.1f} M parameters)', 'device': 'cpu',
                    'torch_threads': torch.get_num_threads()})
    return results


def llava15_7b_config(image_token_id: int, size: str = 'llava-1.5-7b') -> Any:
    """The LLaVA-1.5-7B architecture (or a small stand-in with the same layout)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    if size == 'llava-1.5-7b':
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14,
                                  projection_dim=768)
        text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                           num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                           max_position_embeddings=4096, rms_norm_eps=1e-5)
    else:
        vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=336, patch_size=14)
        text = LlamaConfig(vocab_size=32064, hidden_size=128, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token_id,
                       vision_feature_layer=-2, vision_feature_select_strategy='default',
                       image_seq_length=576, projector_hidden_act='gelu')


def large_part(repeats: int, size: str, device: str, train_steps: int,
               train_batch: int) -> Dict[str, Any]:
    """Part 2: a LLaVA-1.5-7B-sized random model, inference and LoRA training."""
    import numpy as np
    import torch
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration
    from emotion_ros.backends.llava import LlavaBackend, LlavaOptions
    from emotion_ros.llm.head import build_score_head
    from emotion_ros.llm.contract import format_answer, PROMPTS
    from training.core.tiny import build_tiny_tokenizer
    from training.core.model import assemble_processor
    cuda = device.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    tokenizer = build_tiny_tokenizer()  # ids fit in the 32k vocabulary; content is irrelevant
    config = llava15_7b_config(tokenizer.convert_tokens_to_ids('<image>'), size)
    image_processor = CLIPImageProcessor(size={'shortest_edge': 336},
                                         crop_size={'height': 336, 'width': 336})
    processor = assemble_processor(tokenizer, image_processor, config)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    init_s = time.perf_counter() - t0
    head = build_score_head(config.text_config.hidden_size, 1024)
    manifest = {'view': 'box', 'prompt_id': 'emotic_vad_v1', 'chat_template': 'llava-1.5',
                'head': {'with_vad': True}}
    backend = LlavaBackend(LlavaOptions(base_model=f'random {size}', device=device))
    backend.attach(model, processor, head, manifest)
    results: Dict[str, Any] = {'model': f'{size} (random init, {dtype})', 'init_s': init_s,
                               'device': device,
                               'parameters_b': sum(p.numel() for p in model.parameters()) / 1e9}
    if cuda:
        results['gpu'] = torch.cuda.get_device_name()
        torch.cuda.reset_peak_memory_stats()
    results.update(_score_vs_generate(backend, repeats, sync))
    if cuda:
        results['peak_memory_inference_gb'] = torch.cuda.max_memory_allocated() / 1e9

    # LoRA training throughput, the recipe's settings (r 128, alpha 256, checkpointing).
    from peft import LoraConfig, get_peft_model
    from training.core.collate import EmotionCollator
    from training.core.model import EmotionLlava, lora_target_pattern
    from training.core.config import TrainConfig
    from training.emotic.samples import Sample
    backend.close()
    del backend
    recipe = TrainConfig()
    peft_model = get_peft_model(model, LoraConfig(
        r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        target_modules=lora_target_pattern(recipe.lora_target_modules),
        modules_to_save=['multi_modal_projector']))
    peft_model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={'use_reentrant': False})
    emotion = EmotionLlava(peft_model, build_score_head(config.text_config.hidden_size,
                                                        recipe.head_hidden).to(device),
                           with_vad=True).to(device)
    emotion.train()
    optimizer = torch.optim.AdamW(emotion.parameter_groups(recipe))
    rng = np.random.default_rng(0)
    question = PROMPTS['emotic_vad_v1'].question
    samples = [Sample(image=(rng.random((336, 336, 3)) * 255).astype(np.uint8),
                      prompt=question, answer=format_answer(ANSWER_CATEGORIES, ANSWER_VAD),
                      labels_26=np.eye(26, dtype=np.float32)[i % 26],
                      vad=ANSWER_VAD) for i in range(train_batch)]
    batch = EmotionCollator(processor, 'llava-1.5', 2048)(samples)
    batch = {k: v.to(device) for k, v in batch.items()}
    batch['pixel_values'] = batch['pixel_values'].to(dtype)

    def step() -> None:
        """One LoRA training step."""
        with torch.autocast(device_type='cuda' if cuda else 'cpu', dtype=torch.bfloat16,
                            enabled=cuda):
            out = emotion(**batch)
        out['loss'].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = timings(step, train_steps, warmup=2, sync=sync)
    results['lora_training'] = {
        'batch': train_batch, 'sequence_tokens': int(batch['input_ids'].shape[1]),
        'step': ms_stats(times), 'samples_per_s': train_batch / statistics.median(times),
        'trainable_parameters_m': sum(p.numel() for p in emotion.parameters()
                                      if p.requires_grad) / 1e6}
    if cuda:
        results['lora_training']['peak_memory_gb'] = torch.cuda.max_memory_allocated() / 1e9
    return results


def markdown(results: Dict[str, Any]) -> str:
    """Tables for docs/benchmarks.md."""
    lines = []
    for key in ('tiny', 'large'):
        part = results.get(key)
        if not part:
            continue
        where = part.get('gpu', part.get('device', ''))
        lines += [f'### {part["model"]} on {where}', '',
                  f'Prompt {part["prompt_tokens"]} tokens (image tokens included); full answer '
                  f'{part["answer_tokens"]} tokens.', '',
                  '| persons | scoring (one pass) | generating the full answer | ratio |',
                  '|---|---|---|---|']
        for batch in (1, 8):
            b = part[f'batch{batch}']
            lines.append(f'| {batch} | {b["score"]["median_ms"]:.1f} ms '
                         f'({b["score_per_person_ms"]:.1f} ms/person) | '
                         f'{b["generate_answer"]["median_ms"]:.1f} ms | '
                         f'{b["ratio_score_to_generate"]:.3f} |')
        lines += ['', f'32-token explanation: {part["explain_32_tokens"]["median_ms"]:.1f} ms '
                  '(median).']
        if 'peak_memory_inference_gb' in part:
            lines.append(f'Peak GPU memory (inference): {part["peak_memory_inference_gb"]:.1f} '
                         'GB.')
        if 'lora_training' in part:
            t = part['lora_training']
            lines.append(f'LoRA training (r 128, checkpointing, batch {t["batch"]} x '
                         f'{t["sequence_tokens"]} tokens): {t["samples_per_s"]:.2f} samples/s'
                         + (f', peak {t["peak_memory_gb"]:.1f} GB' if 'peak_memory_gb' in t
                            else '') + '.')
        lines.append('')
    return '\n'.join(lines)


def main(argv: List[str] = None) -> int:
    """Run the benchmark and print a JSON summary and Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=20, help='timed repetitions (default 20)')
    parser.add_argument('--large', action='store_true',
                        help='also run the LLaVA-1.5-7B-sized model (needs a CUDA GPU)')
    parser.add_argument('--large-config', default='llava-1.5-7b',
                        choices=('llava-1.5-7b', 'small'),
                        help="'small' checks the large-model code path on any device")
    parser.add_argument('--device', default='cuda', help='device of the large part')
    parser.add_argument('--train-steps', type=int, default=10, help='timed LoRA steps')
    parser.add_argument('--train-batch', type=int, default=8, help='LoRA training batch')
    parser.add_argument('--out', help='write the results as JSON here')
    args = parser.parse_args(argv)
    import torch
    results: Dict[str, Any] = {'machine': {'python': platform.python_version(),
                                           'cpu': platform.processor() or platform.machine(),
                                           'cpu_count': os.cpu_count(),
                                           'torch': torch.__version__}}
    results['tiny'] = tiny_part(args.repeats)
    if args.large:
        if args.device.startswith('cuda') and not torch.cuda.is_available():
            print('--large needs a CUDA GPU (none found); skipping the large model',
                  file=sys.stderr)
        else:
            results['large'] = large_part(args.repeats, args.large_config, args.device,
                                          args.train_steps, args.train_batch)
    print(json.dumps(results, indent=2))
    print(markdown(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
