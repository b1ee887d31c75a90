"""Where and in which precision the task models run: the ``device`` and ``precision`` params.

``precision: auto`` means bf16 autocast wherever the hardware computes in bf16 natively
(every CUDA GPU we target; CPUs with AVX512-BF16 or AMX through oneDNN) and float32
elsewhere, where emulated bf16 would be slower than float32. Weights, optimiser state,
losses and metrics stay float32 in every case; only the convolutions and matrix products
run in bf16. Tensors are channels_last on every device (oneDNN and cuDNN both prefer it).
"""

from __future__ import annotations

import torch

from rawdrift import checks
from rawdrift.errors import ParamError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu`` / ``cuda`` as given. Errors name the value
    ``device`` (:class:`ParamError`); the caller says where it came from."""
    # Denormal floats (< 1e-38) are flushed to zero on the CPU: trained networks produce them
    # in late layers, and x86 handles them up to 100x slower (inference +25 % measured on the
    # microscopy ResNet18); CUDA kernels flush them already. Training metrics were unchanged.
    torch.set_flush_denormal(True)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checks.choice("device", name, DEVICES)
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("device", "is cuda but no CUDA device is available")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> bool:
    """The ``precision`` param -> whether to use bf16 autocast on ``device``; an unknown name is a
    :class:`ParamError` naming ``precision``."""
    checks.choice("precision", name, PRECISIONS)
    if name == "auto":
        return native_bf16(device)
    return name == "bf16"
