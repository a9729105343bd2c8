"""Networks used in the FedHyper experiments.

The image models follow FedHyper's reference implementation (``src/models.py`` and
``src/resnet.py`` of ATP-1010/FedHyper); the character LSTM follows the LEAF
Shakespeare baseline. :func:`build_model` is the only constructor the rest of the
package should call.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedhyper.errors import ConfigError

__all__ = [
    "DEFAULT_LSTM_HIDDEN",
    "MODEL_NAMES",
    "RESNET_GN_GROUPS",
    "CharLSTM",
    "CifarCNN",
    "FashionCNN",
    "build_model",
    "resnet18_gn",
    "trainable_float_keys",
]

MODEL_NAMES: tuple[str, ...] = ("cnn", "cifar_cnn", "resnet18_gn", "char_lstm")

#: Groups per GroupNorm in :func:`resnet18_gn`, as in the reference ResNet.
RESNET_GN_GROUPS = 2

#: LSTM width of the LEAF Shakespeare model.
DEFAULT_LSTM_HIDDEN = 256


class FashionCNN(nn.Module):
    """Two-block CNN for 28x28 images (Fashion-MNIST, FEMNIST).

    Same layer sizes as the reference ``CNNFashion_Mnist``: two blocks of
    5x5 convolution (padding 2, 16 then 32 channels), BatchNorm, ReLU and 2x2 max-pool,
    then a single linear layer from 32·7·7 features to the classes.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_channels : int
        Channels of the input images.

    """

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=5, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, 28, 28)`` to logits ``(N, num_classes)``."""
        logits: Tensor = self.classifier(self.features(x).flatten(1))
        return logits


class CifarCNN(nn.Module):
    """LeNet-5-style CNN for 32x32 colour images (the reference ``CNNCifar``).

    Two 5x5 valid convolutions (6 then 16 channels) each followed by ReLU and 2x2
    max-pool, then fully connected layers 400 → 120 → 84 → classes.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_channels : int
        Channels of the input images.

    """

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, 32, 32)`` to logits ``(N, num_classes)``."""
        logits: Tensor = self.classifier(self.features(x).flatten(1))
        return logits


class CharLSTM(nn.Module):
    """LEAF next-character model: embedding 8, two stacked LSTMs, linear head.

    Parameters
    ----------
    vocab_size : int
        Size of the character vocabulary (80 for LEAF Shakespeare); it is both the
        embedding's input range and the number of output logits.
    hidden_size : int
        Width of both LSTM layers; LEAF uses 256, smaller values make CPU runs cheaper.

    """

    def __init__(self, vocab_size: int, hidden_size: int = DEFAULT_LSTM_HIDDEN) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 8)
        self.lstm = nn.LSTM(8, hidden_size, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        """Map int64 character ids ``(N, T)`` to next-character logits ``(N, vocab)``."""
        outputs, _ = self.lstm(self.embedding(x))
        logits: Tensor = self.head(outputs[:, -1, :])
        return logits


def _group_norm(num_channels: int) -> nn.Module:
    return nn.GroupNorm(RESNET_GN_GROUPS, num_channels)


def resnet18_gn(num_classes: int, in_channels: int = 3) -> nn.Module:
    """Torchvision ResNet-18 with GroupNorm and a CIFAR stem.

    Every BatchNorm is replaced by ``GroupNorm(2, C)`` (as in the reference ResNet),
    because batch statistics are ill-defined across non-IID clients. The 7x7/2 stem and
    its max-pool would shrink a 32x32 input to 8x8 before the first block, so the stem
    is a 3x3/1 convolution with no max-pool.

    Parameters
    ----------
    num_classes : int
        Number of output logits.
    in_channels : int
        Channels of the input images.

    Returns
    -------
    torch.nn.Module
        The network; it maps ``(N, C, 32, 32)`` to ``(N, num_classes)``.

    """
    # Imported here: torchvision costs every client process over a second to import,
    # and only this model needs it.
    from torchvision.models import resnet18

    model: nn.Module = resnet18(num_classes=num_classes, norm_layer=_group_norm)
    stem = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Same initialisation torchvision gives every other convolution of the network.
    nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = stem
    model.maxpool = nn.Identity()
    return model


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 1,
    *,
    hidden_size: int = DEFAULT_LSTM_HIDDEN,
) -> nn.Module:
    """Construct a freshly initialised model by name.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    num_classes : int
        Number of output logits; for ``char_lstm`` this is the vocabulary size.
    in_channels : int
        Channels of the input images (ignored by ``char_lstm``).
    hidden_size : int
        LSTM width of ``char_lstm``; the other models ignore it, so one model config
        can carry it whatever the model.

    Returns
    -------
    torch.nn.Module
        The model, on CPU, in training mode.

    Raises
    ------
    ConfigError
        If ``name`` is not in :data:`MODEL_NAMES`.

    """
    if name == "cnn":
        return FashionCNN(num_classes, in_channels)
    if name == "cifar_cnn":
        return CifarCNN(num_classes, in_channels)
    if name == "resnet18_gn":
        return resnet18_gn(num_classes, in_channels)
    if name == "char_lstm":
        return CharLSTM(num_classes, hidden_size)
    raise ConfigError("model.name", name, ", ".join(MODEL_NAMES))


def trainable_float_keys(model: nn.Module) -> list[str]:
    """Return the ``state_dict`` keys that hold trainable floating-point parameters.

    Buffers (BatchNorm running statistics, ``num_batches_tracked``), frozen parameters
    and non-float parameters are left out. Tied parameters appear under every name
    they have in the ``state_dict``.

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    list of str
        Keys in ``state_dict`` order.

    """
    return [
        key
        for key, value in model.state_dict(keep_vars=True).items()
        if isinstance(value, nn.Parameter) and value.requires_grad and value.is_floating_point()
    ]
