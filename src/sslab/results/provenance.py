"""Where a trial ran and with what: recorded with every trial so a reader can tell which
numbers to expect to the digit.

The same command and seed give the same numbers to the last digit on the same machine and
library versions. On another host of the same kind they agree only to about 0.01 kNN: CPU
kernels (oneDNN's choice of code path per instruction set, the number of threads) sum in
another order, and a 16-epoch trial amplifies that. None of this is part of a trial's
specification (``spec.py``): moving to another machine must not make finished trials
look unfinished; it is recorded beside it as ``host/<field>`` columns.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata


def _cpu_model() -> str:
    """``AMD EPYC (family 26, model 2)``: the model name alone can hide different generations."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:  # the first processor's block is enough
                    break
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


@functools.lru_cache(maxsize=None)
def _host() -> dict[str, str]:
    return {
        "cpu": _cpu_model(),
        "cpus": str(os.cpu_count() or 0),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "sslab": _version("sslab"),
        **{package: _version(package) for package in ("torch", "torchvision", "numpy", "ray")},
    }


def provenance(device: object = "cpu") -> dict[str, str]:
    """The host's CPU model and count, the GPU's name when ``device`` is a CUDA device, and the
    versions of Python, sslab, torch, torchvision, numpy and Ray."""
    out = dict(_host())
    if str(device).startswith("cuda") and "torch" in sys.modules:
        import torch

        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["gpu"] = ""
    return out
