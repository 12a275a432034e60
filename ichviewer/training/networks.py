"""Four small CNN families (VGG-, ResNet-, Inception-, MobileNet-style) with the Lee et al. 2019 head.

Lee et al. fine-tuned ImageNet-pretrained VGG16, ResNet-50, Inception-v3 and
Inception-ResNet-v2 at 512 x 512. Nothing pretrained can be downloaded here and
training runs on a 2-core CPU, so each family is kept as its characteristic
building block (stacked 3x3 convolutions; residual blocks; parallel multi-scale
branches; depthwise-separable inverted residuals) in a network of a few hundred
thousand parameters, trained from scratch. Every network ends as in the paper's
Methods ("Network training"): global average pooling, one fully connected layer
and an element-wise sigmoid (applied in the loss and by the inference engine), six
outputs in `ichviewer.LABELS` order.

`forward(x)` returns `(logits (N, 6), features (N, K, h, w))`: the features are the
last convolutional block, so logits == linear(mean_hw(features)) exactly, which
is what the class activation maps (Lee et al. Eq. 5) and the inference contract need.
With `pooling` "lse" or "max" (departure 26) the linear layer is applied to every cell
and the per-cell logits are pooled instead (`ichviewer.inference.manifest.pool_cell_logits`);
"avg" is the same as GAP then linear. Grad-CAM's weights (the spatial mean of dz/dA) are
w/S for all three, so the attention maps (Eq. 5) are computed as before.
"""

from __future__ import annotations

import torch
from torch import nn

from ichviewer import LABELS
from ichviewer.inference.manifest import LSE_SHARPNESS

#: Network families in the order the bundled ensemble lists them.
FAMILIES: tuple[str, ...] = ("vgg", "resnet", "inception", "mobilenet")


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    """Backbone + GAP + linear head; subclasses set `self.body` and the feature width."""

    family = ""
    #: How per-cell logits become the logit (HEAD_POOLINGS); set by `build_network`.
    pooling = "avg"
    #: Channels of the input image (windows x context slices); set by `build_network`.
    input_channels = 3

    def __init__(self, n_features: int, n_labels: int = len(LABELS)) -> None:
        super().__init__()
        self.n_features = n_features
        self.classifier = nn.Linear(n_features, n_labels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f), f

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Logits from the last features: GAP + linear, or the linear layer per cell then LSE / max."""
        if self.pooling == "avg":
            return self.classifier(f.mean(dim=(2, 3)))
        w = self.classifier.weight[:, :, None, None]  # the linear layer as a 1x1 convolution, cell by cell
        cells = nn.functional.conv2d(f, w.to(f.dtype), self.classifier.bias.to(f.dtype)).flatten(2).float()
        if self.pooling == "max":
            return cells.amax(dim=2)
        # log(mean exp(r s)) / r, shifted by the highest cell for stability (no shape constant, so it exports)
        r = LSE_SHARPNESS
        top = cells.amax(dim=2, keepdim=True).detach()
        return (top + torch.log(torch.exp(r * (cells - top)).mean(dim=2, keepdim=True)) / r)[:, :, 0]


class SmallVGG(_Classifier):
    """VGG-style: pairs of 3x3 conv + BN + ReLU, max-pooling between stages (stride 8 overall)."""

    family = "vgg"

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        w = width
        super().__init__(6 * w)
        self.body = nn.Sequential(
            _conv_bn(in_channels, w, stride=2),
            _conv_bn(w, w),
            nn.MaxPool2d(2),
            _conv_bn(w, 2 * w),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
            _conv_bn(4 * w, 4 * w),
            _conv_bn(4 * w, 6 * w),
        )


class _Residual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.a = _conv_bn(c_in, c_out, stride=stride)
        self.b = _conv_bn(c_out, c_out, act=False)
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else _conv_bn(c_in, c_out, k=1, stride=stride, act=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.b(self.a(x)) + self.skip(x))


class SmallResNet(_Classifier):
    """ResNet-style: a strided stem and basic residual blocks (He et al.), stride 8."""

    family = "resnet"

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        w = width
        super().__init__(6 * w)
        self.body = nn.Sequential(
            _conv_bn(in_channels, w, stride=2),
            _Residual(w, w, 1),
            _Residual(w, 2 * w, 2),
            _Residual(2 * w, 4 * w, 2),
            _Residual(4 * w, 6 * w, 1),
        )


class _InceptionBlock(nn.Module):
    """Parallel 1x1, 3x3, double-3x3 (5x5 receptive field) and pooled branches, concatenated."""

    def __init__(self, c_in: int, b: int) -> None:
        super().__init__()
        self.b1 = _conv_bn(c_in, b, k=1)
        self.b3 = nn.Sequential(_conv_bn(c_in, b, k=1), _conv_bn(b, b))
        self.b5 = nn.Sequential(_conv_bn(c_in, b // 2, k=1), _conv_bn(b // 2, b), _conv_bn(b, b))
        self.bp = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), _conv_bn(c_in, b, k=1))
        self.out_channels = 4 * b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class SmallInception(_Classifier):
    """Inception-style: a strided stem, then multi-branch blocks with a grid reduction between them, stride 8."""

    family = "inception"

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        w = width
        super().__init__(6 * w)
        block1 = _InceptionBlock(2 * w, w // 2 * 2)
        block2 = _InceptionBlock(4 * w, 3 * w // 2)
        self.body = nn.Sequential(
            _conv_bn(in_channels, w, stride=2),
            _conv_bn(w, 2 * w, stride=2),
            block1,
            _conv_bn(block1.out_channels, 4 * w, stride=2),
            block2,
        )
        self.n_features = block2.out_channels
        self.classifier = nn.Linear(self.n_features, len(LABELS))


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, skip when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = c_in * expand
        self.block = nn.Sequential(
            _conv_bn(c_in, hidden, k=1),
            _conv_bn(hidden, hidden, stride=stride, groups=hidden),
            _conv_bn(hidden, c_out, k=1, act=False),
        )
        self.use_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_skip else y


class SmallMobileNet(_Classifier):
    """MobileNetV2-style: inverted residuals with depthwise 3x3 convolutions, a final 1x1 expansion, stride 8.

    The stem reaches stride 4 with two plain strided convolutions before the first
    depthwise block: PyTorch's CPU depthwise-convolution backward is slow at high
    resolution, and this keeps the member's training step near the other families'.
    """

    family = "mobilenet"

    def __init__(self, width: int = 16, in_channels: int = 3) -> None:
        w = width
        super().__init__(8 * w)
        self.body = nn.Sequential(
            _conv_bn(in_channels, w, stride=2),
            _conv_bn(w, 2 * w, stride=2),
            _InvertedResidual(2 * w, 2 * w, 1),
            _InvertedResidual(2 * w, 3 * w, 2),
            _InvertedResidual(3 * w, 3 * w, 1),
            _InvertedResidual(3 * w, 4 * w, 1),
            _conv_bn(4 * w, 8 * w, k=1),
        )


_BUILDERS = {"vgg": SmallVGG, "resnet": SmallResNet, "inception": SmallInception, "mobilenet": SmallMobileNet}


#: Feature channels of the input stem (`make_input_stem`).
STEM_CHANNELS = 16


def make_input_stem(channels: int = STEM_CHANNELS, wide: bool = False, in_channels: int = 3) -> nn.Sequential:
    """A learned 2x downsampler: strided 3x3 conv + BN + ReLU, then (unless `wide`) a 1x1 conv to three channels.

    Put in front of a network (`build_network(..., input_stem=True)`), it lets the network see a
    twice-as-fine input (e.g. 256 instead of 128 pixels) while every later layer works at the
    same size as before, so a punctate bleed of 2-3 native pixels reaches the network through
    learned filters instead of being averaged into one pixel first.

    `wide=True` (departure 23 in `ichviewer.training`) leaves out the 1x1 projection: the
    network's first convolution reads all `channels` stem features instead of three linear
    mixtures of them, so what the stem found at the native pixel size (a one-pixel sliver
    against the inner table) is not squeezed through three channels on its way in.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    ]
    if not wide:
        layers.append(nn.Conv2d(channels, 3, 1))
    return nn.Sequential(*layers)


def build_network(
    family: str, width: int = 16, input_stem: bool = False, wide_stem: bool = False, pooling: str = "avg",
    in_channels: int = 3,
) -> _Classifier:
    """A fresh network of `family` (one of FAMILIES); `width` scales every layer's channels.

    `input_stem=True` prepends `make_input_stem()`, so the network takes inputs twice as large and
    gives the same feature-map size (train it with twice the input size). The stem becomes the
    first module of `body`, so `body[-1]` is still the last block and `body[-2]` the penultimate
    one, whose output the export gives the atlas (`export.BLOCK_OUTPUT`). `wide_stem=True` (needs
    `input_stem`) feeds the stem's STEM_CHANNELS features straight into the network's first
    convolution (`make_input_stem(wide=True)`). `pooling` is the head's (module docstring).
    `in_channels` is the input image's channels: the windows times the context slices
    (3 x 3 = 9 when each slice comes with its neighbours, departure 30 in `ichviewer.training`).
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown network family {family!r}; choose from {', '.join(FAMILIES)}")
    if width < 2 or width % 2:
        raise ValueError(f"network width must be an even number >= 2, got {width}")
    from ichviewer.training.trainer import check_batch_options

    check_batch_options(input_stem=input_stem, wide_stem=wide_stem, pooling=pooling)
    first = STEM_CHANNELS if wide_stem else (3 if input_stem else in_channels)
    net = _BUILDERS[family](width, in_channels=first)
    if input_stem:
        net.body = nn.Sequential(make_input_stem(wide=wide_stem, in_channels=in_channels), *net.body)
    net.pooling = pooling
    net.input_channels = in_channels
    return net


def body_taps(model: _Classifier, input_size: int) -> dict[int, tuple[int, int]]:
    """Output stride (input pixels per feature cell) -> (index into `model.body`, channels) of the
    last body block at that stride, found by one dry forward pass at `input_size`.

    The lesion-map head (departure 19 in `ichviewer.training`) reads the block at the stride it
    is given (`TrainConfig.lesion_map_stride`), so every family offers the strides its body has.
    """
    was_training = model.training
    model.eval()
    taps: dict[int, tuple[int, int]] = {}
    try:
        with torch.no_grad():
            x = torch.zeros(1, model.input_channels, input_size, input_size)
            for i, layer in enumerate(model.body):
                x = layer(x)
                if x.shape[-1] and input_size % x.shape[-1] == 0:
                    taps[input_size // x.shape[-1]] = (i, int(x.shape[1]))
    finally:
        model.train(was_training)
    return taps


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
