"""The one place that imports compressai.

``import compressai`` imports ``torchvision.transforms``, only to fill a registry of
transform names. We install compressai with ``--no-deps`` beside the CPU torch, where
torchvision is absent (PyPI's torchvision does not even import beside that torch), so
when torchvision cannot be imported, an empty stand-in for ``torchvision`` and
``torchvision.transforms`` goes into ``sys.modules`` first. Nothing of torchvision is
used by what we re-export: the entropy models, the rANS coder and its CDF builder.
"""

from __future__ import annotations

import sys
import types
import warnings


def _install_torchvision_stand_in() -> None:
    package = types.ModuleType("torchvision", "Empty stand-in installed by vcinr_sci.coding._compressai.")
    transforms = types.ModuleType("torchvision.transforms", "Empty stand-in installed by vcinr_sci.coding._compressai.")
    setattr(package, "transforms", transforms)  # noqa: B010  (a module attribute mypy cannot see)
    sys.modules["torchvision"] = package
    sys.modules["torchvision.transforms"] = transforms


try:
    import torchvision.transforms  # noqa: F401
except (ImportError, RuntimeError, OSError):  # absent, or built for another torch
    _install_torchvision_stand_in()

# compressai imports torch_geometric, which calls the deprecated torch.jit.script at import.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    from compressai import ans
    from compressai._CXX import pmf_to_quantized_cdf
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

__all__ = ["EntropyBottleneck", "GaussianConditional", "ans", "pmf_to_quantized_cdf"]
