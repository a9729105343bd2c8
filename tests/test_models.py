from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from fedhyper.errors import ConfigError
from fedhyper.models import MODEL_NAMES, build_model, trainable_float_keys


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_params(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def lstm_layer_params(n_in: int, hidden: int) -> int:
    # Four gates, each with input and recurrent weights and two bias vectors.
    return 4 * hidden * (n_in + hidden) + 8 * hidden


@pytest.mark.parametrize("num_classes", [10, 62])
def test_cnn_shape_and_param_count(num_classes: int) -> None:
    model = build_model("cnn", num_classes, in_channels=1)
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, num_classes)
    expected = (
        conv_params(1, 16, 5)
        + 2 * 16  # BatchNorm affine
        + conv_params(16, 32, 5)
        + 2 * 32
        + linear_params(32 * 7 * 7, num_classes)
    )
    assert num_params(model) == expected


def test_cifar_cnn_shape_and_param_count() -> None:
    model = build_model("cifar_cnn", 10, in_channels=3)
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    expected = (
        conv_params(3, 6, 5)
        + conv_params(6, 16, 5)
        + linear_params(16 * 5 * 5, 120)
        + linear_params(120, 84)
        + linear_params(84, 10)
    )
    assert num_params(model) == expected == 62_006


def test_resnet18_gn_shape_and_norms() -> None:
    model = build_model("resnet18_gn", 10, in_channels=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    modules = list(model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    group_norms = [m for m in modules if isinstance(m, nn.GroupNorm)]
    # Stem, 8 blocks x 2, and the 3 downsampling shortcuts.
    assert len(group_norms) == 1 + 16 + 3
    assert all(m.num_groups == 2 for m in group_norms)
    stem = model.get_submodule("conv1")
    assert isinstance(stem, nn.Conv2d)
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert isinstance(model.get_submodule("maxpool"), nn.Identity)
    # No buffers at all: every state entry is a trainable parameter.
    assert trainable_float_keys(model) == list(model.state_dict())


@pytest.mark.parametrize("hidden", [256, 32])
def test_char_lstm_shape_and_param_count(hidden: int) -> None:
    vocab = 80
    model = build_model("char_lstm", vocab, hidden_size=hidden)
    x = torch.randint(0, vocab, (3, 80), dtype=torch.int64)
    assert model(x).shape == (3, vocab)
    expected = (
        vocab * 8  # embedding
        + lstm_layer_params(8, hidden)
        + lstm_layer_params(hidden, hidden)
        + linear_params(hidden, vocab)
    )
    assert num_params(model) == expected
    if hidden == 256:
        assert expected == 819_920


def test_char_lstm_predicts_from_last_time_step() -> None:
    model = build_model("char_lstm", 80, hidden_size=16).eval()
    x = torch.randint(0, 80, (2, 80))
    y = x.clone()
    y[:, -1] = (x[:, -1] + 1) % 80
    with torch.no_grad():
        assert not torch.allclose(model(x), model(y))


def test_hidden_size_is_ignored_by_image_models() -> None:
    model = build_model("cnn", 10, hidden_size=8)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_trainable_float_keys_excludes_batchnorm_buffers() -> None:
    model = resnet18(num_classes=10)
    keys = trainable_float_keys(model)
    state = model.state_dict()
    assert "bn1.running_mean" in state and "bn1.num_batches_tracked" in state
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in keys)
    assert keys == [name for name, _ in model.named_parameters()]
    assert "bn1.weight" in keys and "bn1.bias" in keys


def test_trainable_float_keys_excludes_frozen_parameters() -> None:
    model = build_model("cnn", 10)
    keys_before = trainable_float_keys(model)
    assert "features.1.running_mean" not in keys_before
    model.get_parameter("classifier.weight").requires_grad_(False)
    keys_after = trainable_float_keys(model)
    assert keys_after == [k for k in keys_before if k != "classifier.weight"]


def test_unknown_model_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("vgg", 10)
    message = str(info.value)
    assert "model.name" in message and "'vgg'" in message
    assert all(name in message for name in MODEL_NAMES)
