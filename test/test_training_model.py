"""The fine-tuning model: tiny LLaVA from configs, LoRA placement, answer-only loss, the hard
failure when answers cannot be located, single-pass scoring equal to training, and config."""

import dataclasses

import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('peft')

from emotion_ros.llm import contract, encoding, head, scoring, templates  # noqa: E402
from emotion_ros.errors import ConfigError, ModelLoadError  # noqa: E402
from training.core import config as config_mod  # noqa: E402
from training.core.collate import AnswerTokensError, EmotionCollator, encode_example  # noqa: E402
from training.core.collate import IGNORE_INDEX  # noqa: E402


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny base model folder, a small synthetic dataset and its samples."""
    import transformers
    transformers.utils.logging.disable_progress_bar()
    from training.emotic.dataset import load_dataset
    from training.emotic.samples import SampleSet
    from training.emotic.synthetic import make_synthetic
    from training.core.tiny import save_tiny_llava
    root = tmp_path_factory.mktemp('model')
    base = save_tiny_llava(str(root / 'base'))
    make_synthetic(str(root / 'data'), 8, 0, 0, seed=3)
    records, _ = load_dataset(str(root / 'data'), 'train')
    samples = list(SampleSet(records, 'crop', 'emotic_vad_v1'))
    return base, samples


def _cfg(base, **changes):
    values = {'base_model': base, 'lora_r': 4, 'lora_alpha': 8, 'head_hidden': 32,
              'gradient_checkpointing': False, 'view': 'crop', 'lora_dropout': 0.0,
              'head_dropout': 0.0}
    values.update(changes)
    return config_mod.config_from_mapping(values)


def test_tiny_llava_loads_like_a_hub_model(setup):
    """The saved tiny model and processor load with from_pretrained and expand <image> right."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    base, samples = setup
    model = LlavaForConditionalGeneration.from_pretrained(base)
    processor = AutoProcessor.from_pretrained(base)
    config = model.config
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    assert encoding.image_token_count(processor) == patches
    ids = processor.tokenizer('USER: hi')['input_ids']
    assert ids[0] == processor.tokenizer.bos_token_id
    pixels = encoding.pixel_values_for(processor, [samples[0].image])
    assert tuple(pixels.shape[-2:]) == (config.vision_config.image_size,) * 2
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_lora_sits_only_in_the_language_model(setup):
    """LoRA wraps language-model layers only; vision frozen; projector and head train."""
    from training.core.model import build_model
    base, _ = setup
    cfg = _cfg(base)
    model, _ = build_model(cfg)
    names = [n for n, _ in model.named_parameters()]
    lora = [n for n in names if 'lora_' in n]
    assert lora and all('language_model' in n for n in lora)
    assert not any('vision_tower' in n and 'lora_' in n for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any('vision_tower' in n for n in trainable)
    assert any('multi_modal_projector' in n for n in trainable)
    assert any(n.startswith('head.') for n in trainable)
    assert not any('embed_tokens' in n or 'lm_head' in n for n in trainable)
    groups = {g['name']: g['lr'] for g in model.parameter_groups(cfg)}
    assert groups == {'lora': cfg.learning_rate, 'projector': cfg.projector_lr,
                      'head': cfg.head_lr}
    frozen_projector, _ = build_model(_cfg(base, train_projector=False))
    assert not any('multi_modal_projector' in n for n, p in frozen_projector.named_parameters()
                   if p.requires_grad)


def test_loss_only_on_answer_tokens_and_head_reads_after_the_primer(setup):
    """Labels mask prompt and image tokens; the labelled tokens are exactly answer + EOS."""
    from training.core.model import load_base
    base, samples = setup
    _, processor = load_base(base)
    tokenizer = processor.tokenizer
    collator = EmotionCollator(processor, 'llava-1.5', 1024)
    batch = collator(samples[:3])
    image_id = tokenizer.convert_tokens_to_ids('<image>')
    for row, sample in enumerate(samples[:3]):
        ids = batch['input_ids'][row]
        labels = batch['labels'][row]
        supervised = labels != IGNORE_INDEX
        assert not (supervised & (ids == image_id)).any()
        assert labels[supervised].tolist()[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(labels[supervised][:-1]).strip() == sample.answer
        index = int(batch['score_index'][row])
        upto = tokenizer.decode(ids[1:index + 1]).rstrip()
        assert upto.endswith('ASSISTANT: ' + contract.SCORE_PRIMER)
        assert not supervised[:index].any() or int(supervised.nonzero()[0]) <= index
    assert batch['category_targets'].shape == (3, 26)
    assert torch.equal(batch['category_targets'][0], torch.from_numpy(samples[0].labels_26))


def test_unlocatable_answer_tokens_fail_hard(setup, monkeypatch):
    """A merge across the prompt/answer boundary, a cut answer or a label-free batch all raise."""
    from training.core.model import build_model
    base, samples = setup
    model, processor = build_model(_cfg(base))
    count = encoding.image_token_count(processor)
    sample = samples[0]
    # A template ending in a space: the space merges into the answer's first token.
    monkeypatch.setitem(templates.CHAT_TEMPLATES, 'trailing-space', templates.ChatTemplate(
        'trailing-space', 'USER: <image>\n{question} ASSISTANT: ', ''))
    with pytest.raises(AnswerTokensError, match='cannot be located'):
        encode_example(processor, 'trailing-space', sample.prompt, sample.answer, count, 1024)
    with pytest.raises(AnswerTokensError, match='max-seq-len'):
        encode_example(processor, 'llava-1.5', sample.prompt, sample.answer, count, 100)
    with pytest.raises(AnswerTokensError, match='does not start'):
        encode_example(processor, 'llava-1.5', sample.prompt, 'Happy.', count, 1024)
    batch = EmotionCollator(processor, 'llava-1.5', 1024)(samples[:2])
    batch['labels'][:] = IGNORE_INDEX
    with pytest.raises(AnswerTokensError, match='no answer tokens'):
        model(**batch)


def test_single_pass_serving_scores_equal_the_training_forward(setup):
    """Scoring the prompt alone (robot, left-padded batch) equals the head inside training."""
    from training.core.model import build_model
    base, samples = setup
    model, processor = build_model(_cfg(base))
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, p in model.named_parameters():
            if 'lora_B' in name:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    batch = EmotionCollator(processor, 'llava-1.5', 1024)(samples[:4])
    with torch.no_grad():
        trained = model(**batch)
        count = encoding.image_token_count(processor)
        prompt = templates.scoring_prompt('llava-1.5', samples[0].prompt)
        ids, mask = encoding.left_pad([encoding.encode_prompt(processor, prompt, count)] * 4,
                                      processor.tokenizer.pad_token_id)
        pixels = encoding.pixel_values_for(processor, [s.image for s in samples[:4]])
        hidden = scoring.prompt_hidden(model.llava, ids, mask, pixels)[:, -1]
        logits, vad = head.apply_head(model.head, hidden)
        # Mixed lengths in one left-padded batch: padding must not change anything.
        short = encoding.encode_prompt(processor, templates.scoring_prompt(
            'llava-1.5', 'How do they feel?'), count)
        ids2, mask2 = encoding.left_pad([short, ids[0].tolist()], 0)
        hidden2 = scoring.prompt_hidden(model.llava, ids2, mask2, pixels[:2])[1, -1]
    assert torch.allclose(logits, trained['category_logits'], atol=1e-4)
    assert torch.allclose(vad, trained['vad'], atol=1e-4)
    assert torch.allclose(hidden2, hidden[1], atol=1e-4)
    assert float((logits[0] - logits[1]).abs().max()) > 1e-4  # the image matters


def test_zero_shot_log_probs_with_a_shared_cache_match_full_sequences(setup):
    """Scoring 26 names over one cached prefix equals scoring each full sequence alone."""
    from training.core.model import load_base
    base, samples = setup
    model, processor = load_base(base)
    model.eval()
    count = encoding.image_token_count(processor)
    prefix = encoding.encode_prompt(processor, templates.scoring_prompt(
        'llava-1.5', samples[0].prompt), count)
    candidates = scoring.category_candidates(processor.tokenizer)[:5]
    pad = processor.tokenizer.pad_token_id
    pixels = encoding.pixel_values_for(processor, [s.image for s in samples[:2]])
    ids, mask = encoding.left_pad([prefix[3:], prefix], pad)  # two prefix lengths
    with torch.no_grad():
        fast = scoring.candidate_log_probs(model, ids, mask, pixels, candidates, pad)
        for row, seq in enumerate([prefix[3:], prefix]):
            for k, cand in enumerate(candidates):
                full = torch.tensor([seq + cand])
                out = model(input_ids=full, pixel_values=pixels[row:row + 1],
                            attention_mask=torch.ones_like(full))
                logp = torch.log_softmax(out.logits[0, len(seq) - 1:-1].float(), -1)
                slow = float(logp[torch.arange(len(cand)), torch.tensor(cand)].sum())
                assert abs(float(fast[row, k]) - slow) < 1e-3


def test_gradient_checkpointing_keeps_loss_and_gradients(setup):
    """Recomputing activations in backward gives the same loss and gradients."""
    from training.core.model import build_model
    base, samples = setup
    results = []
    for checkpointing in (False, True):
        model, processor = build_model(_cfg(base, gradient_checkpointing=checkpointing))
        model.train()
        batch = EmotionCollator(processor, 'llava-1.5', 1024)(samples[:2])
        out = model(**batch)
        out['loss'].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.requires_grad and p.grad is not None}
        results.append((out['loss'].item(), grads))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        assert torch.allclose(grad, results[1][1][name], atol=1e-5), name


def test_trainable_weights_round_trip_and_refuse_other_shapes(setup):
    """Saved trainable weights restore the same outputs; weights of another config are refused."""
    from training.core.model import build_model
    base, samples = setup
    model, processor = build_model(_cfg(base))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    batch = EmotionCollator(processor, 'llava-1.5', 1024)(samples[:2])
    state = model.trainable_state_dict()
    fresh, _ = build_model(_cfg(base))
    fresh.load_trainable_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch)['category_logits'],
                              fresh(**batch)['category_logits'], atol=1e-6)
    wider, _ = build_model(_cfg(base, lora_r=8, lora_alpha=16))
    with pytest.raises(ModelLoadError, match='shape'):
        wider.load_trainable_state_dict(state)


def test_config_defaults_follow_the_llava_lora_recipe():
    """Defaults are the LLaVA-1.5 LoRA recipe with the poster's task."""
    cfg = config_mod.TrainConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate) == (128, 256, 2e-4)
    assert (cfg.lr_scheduler, cfg.warmup_ratio, cfg.projector_lr) == ('cosine', 0.03, 2e-5)
    assert cfg.gradient_checkpointing and cfg.train_projector and cfg.precision == 'auto'
    assert cfg.prompt_id == 'emotic_vad_v1' and cfg.view == 'box' and cfg.with_vad
    for f in dataclasses.fields(config_mod.TrainConfig):
        assert f.metadata.get('description'), f.name


def test_yaml_file_then_flags(tmp_path):
    """A YAML file sets options, flags override it, sections only group names."""
    path = tmp_path / 'run.yaml'
    path.write_text('base_model: /models/llava\nlora:\n  lora_r: 16\n  lora_alpha: 32\n'
                    'num_epochs: 3\nlora_target_modules: [q_proj, v_proj]\n')
    cfg = config_mod.parse_train_args(['--config', str(path), '--num-epochs', '6',
                                       '--no-gradient-checkpointing', '--lora_dropout', '0.1'])
    assert (cfg.base_model, cfg.lora_r, cfg.lora_alpha) == ('/models/llava', 16, 32)
    assert cfg.num_epochs == 6 and not cfg.gradient_checkpointing and cfg.lora_dropout == 0.1
    assert cfg.lora_target_modules == ('q_proj', 'v_proj')
    assert config_mod.config_from_mapping(cfg.to_dict()) == cfg


@pytest.mark.parametrize('argv, flag', [
    (['--lora-r', '0'], '--lora-r'),
    (['--eval-split', 'train'], '--eval-split'),
    (['--view', 'face'], '--view'),
    (['--prompt-id', 'explain_v1'], '--prompt-id'),
    (['--warmup-ratio', '0.9'], '--warmup-ratio'),
    (['--lm-loss-weight', '0', '--score-loss-weight', '0'], '--lm-loss-weight'),
    (['--load-in-4bit', '--cpu'], '--load-in-4bit'),
    (['--resume', '/no/such/checkpoint'], '--resume'),
])
def test_bad_values_raise_config_errors_naming_the_flag(argv, flag):
    """Each invalid setting is refused with a ConfigError that names its flag."""
    with pytest.raises(ConfigError) as err:
        config_mod.parse_train_args(argv)
    assert flag in str(err.value)


def test_unknown_yaml_keys_are_refused(tmp_path):
    """A typo in the YAML file is an error, not silently ignored."""
    path = tmp_path / 'run.yaml'
    path.write_text('lora_rank: 16\n')
    with pytest.raises(ConfigError, match='lora_rank'):
        config_mod.parse_train_args(['--config', str(path)])


def test_lora_pattern_never_matches_the_vision_tower():
    """The target regex matches language-model projections and not CLIP's."""
    import re
    from training.core.model import lora_target_pattern
    pattern = re.compile(lora_target_pattern(['q_proj', 'v_proj']))
    assert pattern.fullmatch('model.language_model.layers.0.self_attn.q_proj')
    assert not pattern.fullmatch('model.vision_tower.vision_model.encoder.layers.0.self_attn.'
                                 'q_proj')
    assert not pattern.fullmatch('model.language_model.layers.0.self_attn.k_proj')
