"""Networks used in the FedHyper experiments.

The image models follow FedHyper's reference implementation (``src/models.py`` and
``src/resnet.py`` of ATP-1010/FedHyper); the character LSTM follows the LEAF
Shakespeare baseline. :func:`build_model` is the only constructor the rest of the
package should call: it sizes a model for a dataset's
:class:`~fedhyper.config.DatasetSpec`.
"""

from __future__ import annotations

from torch import Tensor, nn

from fedhyper.config import DatasetSpec
from fedhyper.errors import ConfigError

__all__ = [
    "AUTO",
    "DEFAULT_LSTM_HIDDEN",
    "MODEL_NAMES",
    "RESNET_GN_GROUPS",
    "CharLSTM",
    "CifarCNN",
    "ConvClassifier",
    "FashionCNN",
    "build_model",
    "choose_model",
    "resnet18_gn",
    "trainable_float_keys",
]

MODEL_NAMES: tuple[str, ...] = ("cnn", "cifar_cnn", "resnet18_gn", "char_lstm")

AUTO = "auto"
"""The ``model.name`` that lets :func:`choose_model` pick the model from the dataset."""

# Smallest image side each image model takes: the CNNs' pooling must leave a pixel.
_MIN_IMAGE_SIDE = {"cnn": 4, "cifar_cnn": 16, "resnet18_gn": 1}

#: Groups per GroupNorm in :func:`resnet18_gn`, as in the reference ResNet.
RESNET_GN_GROUPS = 2

#: LSTM width of the LEAF Shakespeare model.
DEFAULT_LSTM_HIDDEN = 256


class ConvClassifier(nn.Module):
    """Convolutional ``features``, flattened, then a ``classifier`` head.

    Parameters
    ----------
    features : torch.nn.Module
        Maps images to feature maps.
    classifier : torch.nn.Module
        Maps the flattened feature maps to logits.

    """

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        logits: Tensor = self.classifier(self.features(x).flatten(1))
        return logits


class FashionCNN(ConvClassifier):
    """Two-block CNN for small grey-scale images (Fashion-MNIST, FEMNIST).

    Same layer sizes as the reference ``CNNFashion_Mnist``: two blocks of
    5x5 convolution (padding 2, 16 then 32 channels), BatchNorm, ReLU and 2x2 max-pool,
    then a single linear layer from the 32·(H/4)·(W/4) features (32·7·7 for 28x28) to
    the classes.

    Parameters
    ----------
    num_classes : int
        Outputs of the linear head.
    in_channels : int
        Image channels (1 for the grey-scale datasets).
    image_size : tuple of int
        ``(height, width)``, at least 4x4 (two 2x2 pools).

    """

    def __init__(
        self, num_classes: int, in_channels: int = 1, image_size: tuple[int, int] = (28, 28)
    ) -> None:
        features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=5, padding=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=5, padding=2),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        height, width = (side // 4 for side in image_size)
        super().__init__(features, nn.Linear(32 * height * width, num_classes))


class CifarCNN(ConvClassifier):
    """LeNet-5-style CNN for small colour images (the reference ``CNNCifar``).

    Two 5x5 valid convolutions (6 then 16 channels) each followed by ReLU and 2x2
    max-pool, then fully connected layers from the 16·5·5 features of a 32x32 image
    (in general 16·((H−4)/2−4)/2·…) → 120 → 84 → classes.

    Parameters
    ----------
    num_classes : int
        Outputs of the last of the three linear layers.
    in_channels : int
        Image channels (3 for colour).
    image_size : tuple of int
        ``(height, width)``, at least 16x16 (two valid 5x5 convolutions and pools).

    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, image_size: tuple[int, int] = (32, 32)
    ) -> None:
        features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        height, width = (((side - 4) // 2 - 4) // 2 for side in image_size)
        classifier = nn.Sequential(
            nn.Linear(16 * height * width, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )
        super().__init__(features, classifier)


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


def choose_model(spec: DatasetSpec, name: str = AUTO) -> str:
    """Return the model an experiment trains, checking that it fits the dataset.

    ``auto`` picks by a rule: text → ``char_lstm`` (over the vocabulary); grey-scale
    images → ``cnn``; colour images → ``cifar_cnn``. The CNNs size their classifier by
    the images' height and width; ``char_lstm`` reads text only, the others images only.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset.
    name : str
        ``auto`` or one of :data:`MODEL_NAMES`.

    Returns
    -------
    str
        A member of :data:`MODEL_NAMES`.

    Raises
    ------
    ConfigError
        If ``name`` is unknown or does not fit the dataset (key ``model.name``).

    """
    if name != AUTO and name not in MODEL_NAMES:
        raise ConfigError("model.name", name, ", ".join((AUTO, *MODEL_NAMES)))
    chosen = _auto_model(spec) if name == AUTO else name
    fitting = [model for model in MODEL_NAMES if _fits(model, spec)]
    if chosen not in fitting:
        allowed = ", ".join(fitting) or "none"
        raise ConfigError("model.name", name, f"{allowed} (the models that fit {spec.name})")
    return chosen


def _auto_model(spec: DatasetSpec) -> str:
    if spec.modality == "text":
        return "char_lstm"
    return "cnn" if spec.input_shape[0] == 1 else "cifar_cnn"


def _fits(model: str, spec: DatasetSpec) -> bool:
    if spec.modality == "text":
        return model == "char_lstm"
    side = _MIN_IMAGE_SIDE.get(model)
    return side is not None and min(spec.input_shape[1:]) >= side


def build_model(
    spec: DatasetSpec, name: str = AUTO, *, hidden_size: int = DEFAULT_LSTM_HIDDEN
) -> nn.Module:
    """Construct a freshly initialised model for a dataset.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset: its classes (or vocabulary) and input shape size the model.
    name : str
        ``auto`` or one of :data:`MODEL_NAMES`; see :func:`choose_model`.
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
        If the model is unknown or does not fit the dataset.

    """
    chosen = choose_model(spec, name)
    if chosen == "char_lstm":
        return CharLSTM(spec.num_classes, hidden_size)
    channels, height, width = spec.input_shape
    if chosen == "cnn":
        return FashionCNN(spec.num_classes, channels, (height, width))
    if chosen == "cifar_cnn":
        return CifarCNN(spec.num_classes, channels, (height, width))
    return resnet18_gn(spec.num_classes, channels)


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
