"""One device resolver for YOLO and the model backends: the same answer and the same error
for the same request, naming the option."""

import pytest

from emotion_ros.devices import resolve_device
from emotion_ros.errors import ConfigError, ModelLoadError

torch = pytest.importorskip('torch')


def test_cpu_auto_and_unknown_values():
    """cpu is cpu; auto is cuda:0 exactly when torch sees a GPU, else cpu; any other word is a
    ConfigError naming the option and the choices."""
    assert resolve_device('cpu', 'x.device') == 'cpu'
    assert resolve_device('auto') == ('cuda:0' if torch.cuda.is_available() else 'cpu')
    for bad in ('gpu', 'cuda0', 'cuda:-1', 'mps', ''):
        with pytest.raises(ConfigError, match=r'x\.device: .*auto.*cpu.*cuda'):
            resolve_device(bad, 'x.device')


def test_cuda_is_cuda_n_or_a_model_load_error_naming_the_option():
    """cuda and cuda:N resolve to cuda:N on a machine with that GPU; without it, every model
    (YOLO, LLaVA and audio-visual backends) fails its load with a ModelLoadError that names
    its own option."""
    from emotion_ros.backends.audio_visual import AudioVisualBackend, AudioVisualOptions
    from emotion_ros.backends.llava import LlavaBackend, LlavaOptions
    from emotion_ros.perception.detectors.base import DetectorConfig
    from emotion_ros.perception.detectors.yolo import YoloDetector
    if torch.cuda.is_available():
        assert resolve_device('cuda') == 'cuda:0'
        count = torch.cuda.device_count()
        assert resolve_device(f'cuda:{count - 1}') == f'cuda:{count - 1}'
        with pytest.raises(ModelLoadError, match=f'only {count} GPU'):
            resolve_device(f'cuda:{count}', 'x.device')
        return
    loads = {'detector.device': lambda: YoloDetector(
                 DetectorConfig(yolo_weights='yolov8n.yaml', device='cuda')).load(),
             'emotion.llava.device': lambda: LlavaBackend(LlavaOptions(
                 device='cuda', base_model='models/none')).load(),
             'emotion.audio_visual.device': lambda: AudioVisualBackend(
                 AudioVisualOptions(device='cuda', bundle_path='models/none')).load()}
    for option, load in loads.items():
        with pytest.raises(ModelLoadError, match=f"{option} is 'cuda' but torch.cuda"):
            load()
    with pytest.raises(ModelLoadError, match="x.device is 'cuda:1' but"):
        resolve_device('cuda:1', 'x.device')
