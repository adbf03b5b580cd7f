"""The one strict weight loader (bundles' multimodal tensors, training checkpoints, init-from):
exact names and shapes, all or nothing, cast to the model's dtype, skips only what is asked."""

import pytest

torch = pytest.importorskip('torch')

from emotion_ros.errors import ModelLoadError  # noqa: E402
from emotion_ros.llm.weights import load_strict  # noqa: E402


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def _targets(model):
    return dict(model.named_parameters())


def test_a_fitting_state_is_copied_and_cast():
    """Every tensor is copied, cast to the target's dtype; nothing is left out."""
    model, other = _model(), torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = {n: p.detach().double() for n, p in other.named_parameters()}
    assert load_strict(_targets(model), state, 'checkpoint') == []
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32 and torch.equal(param, state[name].float())


@pytest.mark.parametrize('fault', ['missing', 'unexpected', 'shape'])
def test_a_state_that_does_not_fit_is_refused_and_loads_nothing(fault):
    """A missing, an unexpected or a mis-shaped tensor is a ModelLoadError naming it, and the
    model keeps all its values (no half-loaded model), whichever tensor is wrong."""
    for wrong in ('0.weight', '0.bias', '1.weight', '1.bias'):
        model = _model()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        state = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        if fault == 'missing':
            del state[wrong]
            match = f'missing .*{wrong}'
        elif fault == 'unexpected':
            state['2.' + wrong[2:]] = torch.zeros(1)
            match = 'unexpected .*2\\.'
        else:
            state[wrong] = torch.zeros(7)
            match = f'checkpoint tensor {wrong} has shape \\(7,\\)'
        with pytest.raises(ModelLoadError, match=match):
            load_strict(_targets(model), state, 'checkpoint')
        for name, param in model.named_parameters():
            assert torch.equal(param, before[name])


def test_skipped_prefixes_are_neither_required_nor_loaded():
    """Tensors under a skipped prefix keep their fresh values, are reported, and may be absent
    or of another shape in the state (a head of another label set)."""
    model = _model()
    fresh = model[1].weight.detach().clone()
    state = {'0.weight': torch.ones(3, 4), '0.bias': torch.ones(3), '1.weight': torch.ones(9)}
    assert load_strict(_targets(model), state, 'weights', ('1.',)) == ['1.bias', '1.weight']
    assert torch.equal(model[0].weight, torch.ones(3, 4)) and torch.equal(model[1].weight, fresh)
