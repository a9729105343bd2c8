from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from fedhyper.config import DatasetSpec
from fedhyper.errors import ConfigError
from fedhyper.models import MODEL_NAMES, build_model, choose_model, trainable_float_keys


def images(num_classes: int, channels: int, side: int) -> DatasetSpec:
    """A square-image dataset's spec, as far as models read it."""
    return DatasetSpec(
        name=f"images{channels}x{side}",
        modality="image",
        num_classes=num_classes,
        input_shape=[channels, side, side],
    )


def text(vocabulary_size: int) -> DatasetSpec:
    return DatasetSpec(name="text", modality="text", num_classes=vocabulary_size, input_shape=[80])


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
    model = build_model(images(num_classes, 1, 28), "cnn")
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
    model = build_model(images(10, 3, 32), "cifar_cnn")
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
    model = build_model(images(10, 3, 32), "resnet18_gn")
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
    model = build_model(text(vocab), "char_lstm", hidden_size=hidden)
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
    model = build_model(text(80), "char_lstm", hidden_size=16).eval()
    x = torch.randint(0, 80, (2, 80))
    y = x.clone()
    y[:, -1] = (x[:, -1] + 1) % 80
    with torch.no_grad():
        assert not torch.allclose(model(x), model(y))


def test_hidden_size_is_ignored_by_image_models() -> None:
    model = build_model(images(10, 1, 28), "cnn", hidden_size=8)
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
    model = build_model(images(10, 1, 28), "cnn")
    keys_before = trainable_float_keys(model)
    assert "features.1.running_mean" not in keys_before
    model.get_parameter("classifier.weight").requires_grad_(False)
    keys_after = trainable_float_keys(model)
    assert keys_after == [k for k in keys_before if k != "classifier.weight"]


def test_unknown_model_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        build_model(images(10, 1, 28), "vgg")
    message = str(info.value)
    assert "model.name" in message and "'vgg'" in message
    assert all(name in message for name in ("auto", *MODEL_NAMES))


@pytest.mark.parametrize(
    ("dataset", "chosen"),
    [
        (images(10, 1, 28), "cnn"),
        (images(62, 1, 64), "cnn"),
        (images(10, 3, 32), "cifar_cnn"),
        (text(80), "char_lstm"),
    ],
)
def test_auto_picks_a_model_by_modality_and_channels(dataset: DatasetSpec, chosen: str) -> None:
    assert choose_model(dataset, "auto") == chosen


@pytest.mark.parametrize(
    ("side", "num_features"),
    # 64 // 4 = 16 and 20 // 4 = 5: the classifier reads 32 channels of each.
    [(64, 32 * 16 * 16), (20, 32 * 5 * 5)],
)
def test_cnn_classifier_is_sized_by_the_images(side: int, num_features: int) -> None:
    model = build_model(images(7, 1, side))
    assert model(torch.randn(2, 1, side, side)).shape == (2, 7)
    assert model.get_parameter("classifier.weight").shape == (7, num_features)


def test_cifar_cnn_classifier_is_sized_by_the_images() -> None:
    # 48 -> conv 44 -> pool 22 -> conv 18 -> pool 9: 16 * 9 * 9 features.
    model = build_model(images(10, 3, 48))
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 10)
    assert model.get_parameter("classifier.0.weight").shape == (120, 16 * 9 * 9)


@pytest.mark.parametrize(
    ("dataset", "name", "allowed"),
    [
        (text(80), "cnn", "char_lstm (the models that fit text)"),
        (images(10, 1, 28), "char_lstm", "cnn, cifar_cnn, resnet18_gn (the models"),
        (images(10, 3, 12), "cifar_cnn", "cnn, resnet18_gn (the models"),
        (images(10, 3, 12), "auto", "cnn, resnet18_gn (the models"),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_a_config_error(
    dataset: DatasetSpec, name: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(dataset, name)
    assert info.value.key == "model.name" and allowed in str(info.value)
