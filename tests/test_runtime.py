"""The runtime settings (rawdrift.runtime): the precision param."""

import pytest
import torch

from rawdrift.errors import RawdriftError
from rawdrift.runtime import native_bf16, resolve_precision


def test_precision_param():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is False
    assert resolve_precision("bf16", cpu) is True
    assert resolve_precision("auto", cpu) == native_bf16(cpu)
    with pytest.raises(RawdriftError) as e:
        resolve_precision("fp16", cpu)
    assert str(e.value) == "precision: must be one of auto, fp32, bf16, got 'fp16'"
