"""The runtime settings (rawdrift.runtime): the device, precision and deterministic params, and the
platform record."""

import platform

import numpy as np
import pytest
import torch

from rawdrift.errors import ParamError, RawdriftError
from rawdrift.runtime import native_bf16, resolve_device, resolve_precision, stage_platform


def test_precision_param():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is False
    assert resolve_precision("bf16", cpu) is True
    assert resolve_precision("auto", cpu) == native_bf16(cpu)
    with pytest.raises(RawdriftError) as e:
        resolve_precision("fp16", cpu)
    assert str(e.value) == "precision: must be one of auto, fp32, bf16, got 'fp16'"


def test_auto_device_is_for_command_lines_not_stages():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParamError) as e:
        resolve_device("auto", allow_auto=False)
    assert str(e.value).startswith("device: auto is resolved only when a stage runs")
    with pytest.raises(ParamError) as e:
        stage_platform("cpu", "fp32", 1)
    assert str(e.value) == "deterministic: must be true or false, got 1"
    with pytest.raises(ParamError) as e:
        stage_platform("cpu", "fp32", True, compile="max")
    assert str(e.value) == "compile: must be one of none, default, reduce-overhead, got 'max'"


def test_stage_platform_on_the_cpu_records_what_it_ran_on():
    p = stage_platform("cpu", "fp32", True)
    assert p.device == torch.device("cpu") and p.amp is False and p.backends == {}
    assert p.record() == {"device": "cpu", "device_name": "cpu", "precision": "fp32", "deterministic": True,
                          "backends": {}, "compile": "none", "python": platform.python_version(),
                          "torch": torch.__version__, "numpy": np.__version__}
    assert stage_platform("cpu", "fp32", True, compile="reduce-overhead").record()["compile"] == "reduce-overhead"
    assert stage_platform("cpu", "bf16", False).record()["precision"] == "bf16"
    assert stage_platform("cpu", "auto", False).amp == native_bf16(torch.device("cpu"))
