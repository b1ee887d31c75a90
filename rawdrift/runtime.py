"""Where and in which precision the task models run: the ``device``, ``precision`` and
``deterministic`` params, and the record of them every model and metrics file carries.

``device`` names the device: ``cpu`` or ``cuda``. In ``params.yaml`` it must be named (``auto``
is refused there): DVC's run-cache keys a stage on its param values, so a value resolved only
when the stage runs would let a CUDA machine restore CPU-trained models from a shared cache and
the other way round. Command-line tools (``make bench``, ``make demo``) also take ``auto``: CUDA
when present, else the CPU.

``precision: auto`` means bf16 autocast wherever the hardware computes in bf16 natively (every
CUDA GPU we target; CPUs with AVX512-BF16 or AMX through oneDNN) and float32 elsewhere, where
emulated bf16 would be slower than float32. On a CPU it therefore depends on the CPU, which the
run-cache does not see: every model and metrics file records the precision it ran in
(:meth:`Platform.record`), and a cache shared between CPUs with and without native bf16 should
name it (``fp32`` or ``bf16``). Weights, optimiser state, losses and metrics stay float32 in
every case; only the convolutions and matrix products run in bf16. Tensors are channels_last on every device
(oneDNN and cuDNN both prefer it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from rawdrift import checks
from rawdrift.errors import ParamError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
#: The ``compile`` param: how the task model's training step runs, eager (``none``) or through
#: ``torch.compile`` in that mode (``reduce-overhead``: CUDA graphs on a GPU); train, optimize and
#: forensics' search step only.
COMPILE_MODES = ("none", "default", "reduce-overhead")


def resolve_device(name: str, allow_auto: bool = True) -> torch.device:
    """``cpu`` / ``cuda`` as given; ``auto`` (where ``allow_auto``) -> CUDA when present, else
    the CPU. Errors name the value ``device`` (:class:`ParamError`); the caller says where it
    came from. Stages pass ``allow_auto=False`` (see the module docstring)."""
    # Denormal floats (< 1e-38) are flushed to zero on the CPU: trained networks produce them
    # in late layers, and x86 handles them up to 100x slower (inference +25 % measured on the
    # microscopy ResNet18); CUDA kernels flush them already. Training metrics were unchanged.
    torch.set_flush_denormal(True)
    if name == "auto" and not allow_auto:
        raise ParamError("device", "auto is resolved only when a stage runs, where DVC's run-cache cannot see it: "
                                   "name the device (cpu or cuda, e.g. -S device=cuda)")
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
    """The ``precision`` param -> whether to use bf16 autocast on ``device`` (``auto``: where
    :func:`native_bf16`); an unknown name is a :class:`ParamError` naming ``precision``."""
    checks.choice("precision", name, PRECISIONS)
    if name == "auto":
        return native_bf16(device)
    return name == "bf16"


#: cuBLAS workspace that makes its matrix products reproducible (NVIDIA's documented value);
#: read when the first cuBLAS handle is made, so set before any CUDA work.
CUBLAS_WORKSPACE = ":4096:8"


def configure_backends(device: torch.device, deterministic: bool, warn_only: bool = True) -> dict:
    """The numerics policy of the CUDA backends for a run on ``device``; nothing on other devices.

    On CUDA, always: TF32 off for cuBLAS matrix products and cuDNN convolutions (the ISP's
    one-channel luma convolutions reach cuDNN, and TF32's 10-bit mantissa gives errors of about
    1e-3 after the gamma curve; bf16 autocast of the task models does not depend on these flags).
    Then either

    - ``deterministic=False``: ``cudnn.benchmark`` on (shapes are fixed within a stage, so each
      convolution's fastest algorithm is timed once), deterministic algorithms off; or
    - ``deterministic=True``: ``torch.use_deterministic_algorithms(True, warn_only=warn_only)``,
      ``cudnn.benchmark`` off, ``cudnn.deterministic`` on and ``CUBLAS_WORKSPACE_CONFIG`` set
      (kept when the environment already sets it; it only takes effect if this runs before the
      first CUDA matrix product). With ``warn_only`` an operation without a deterministic CUDA
      kernel (e.g. the bilinear upsampling backward) warns instead of raising.

    Process-wide settings: call once per process, before any CUDA work (stages: right after
    :func:`resolve_device`; worker processes of concurrent folds: at their start).

    Returns:
        what was set, JSON-ready (``{}`` on a CPU, where nothing is changed), for the record of
        the run.
    """
    if device.type != "cuda":
        return {}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
        torch.use_deterministic_algorithms(False)
    out = {"tf32": False, "cudnn_benchmark": not deterministic, "deterministic": deterministic}
    if deterministic:
        out.update(warn_only=warn_only, cublas_workspace_config=os.environ["CUBLAS_WORKSPACE_CONFIG"])
    return out


@dataclass(frozen=True)
class Platform:
    """What a stage computes on: the resolved ``device``, bf16 autocast (``amp``), the
    ``deterministic`` policy, the backend flags :func:`configure_backends` set and how the
    training step runs (``compile``, :data:`COMPILE_MODES`; ``none`` in a stage that trains nothing)."""
    device: torch.device
    amp: bool
    deterministic: bool
    backends: dict
    compile: str = "none"

    def record(self) -> dict:
        """JSON-ready: the device (and the GPU's name), precision, determinism, backend flags, the
        compile mode and the versions of Python, torch and numpy. Every model and detailed metrics file keeps it."""
        import platform

        import numpy as np

        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"device": self.device.type, "device_name": name, "precision": "bf16" if self.amp else "fp32",
                "deterministic": self.deterministic, "backends": dict(self.backends), "compile": self.compile,
                "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def stage_platform(device: str, precision: str, deterministic: bool, compile: str = "none") -> Platform:
    """The ``device``, ``precision`` and ``deterministic`` param values of a stage (and, for the
    stages that train or search, ``compile``) -> its :class:`Platform`, with the CUDA backends configured
    (:func:`configure_backends`). ``device: auto`` is refused (:func:`resolve_device`); errors are
    :class:`ParamError` naming the param."""
    checks.flag("deterministic", deterministic)
    checks.choice("compile", compile, COMPILE_MODES)
    dev = resolve_device(device, allow_auto=False)
    amp = resolve_precision(precision, dev)
    return Platform(dev, amp, deterministic, configure_backends(dev, deterministic), compile)
