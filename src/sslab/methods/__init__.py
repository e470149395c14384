"""Self-supervised methods, one file each, pure PyTorch (no Ray here).

The registry below maps a method's name to the place its class lives; nothing is
imported until ``get`` is called, so importing ``sslab.methods`` has no side effects.
Methods sit by family (``contrastive/``, ``siamese/``, ``pretext/``; the supervised baseline here).
Adding a method: write ``methods/<family>/<name>.py`` (a ``sslab.methods.base.Method``), its tests,
and one line here; the contract test (``tests/methods/test_contract.py``) covers it at once.
"""

from __future__ import annotations

import importlib

_REGISTRY: dict[str, str] = {
    "barlow_twins": "sslab.methods.siamese.barlow_twins:BarlowTwins",
    "byol": "sslab.methods.siamese.byol:BYOL",
    "colorization": "sslab.methods.pretext.colorization:Colorization",
    "context_encoder": "sslab.methods.pretext.context_encoder:ContextEncoder",
    "counting": "sslab.methods.pretext.counting:Counting",
    "denoising_ae": "sslab.methods.pretext.denoising_ae:DenoisingAE",
    "exemplar": "sslab.methods.pretext.exemplar:Exemplar",
    "jigsaw": "sslab.methods.pretext.jigsaw:Jigsaw",
    "moco": "sslab.methods.contrastive.moco:MoCo",
    "multitask": "sslab.methods.pretext.multitask:Multitask",
    "npid": "sslab.methods.contrastive.npid:NPID",
    "pirl": "sslab.methods.contrastive.pirl:PIRL",
    "relative_location": "sslab.methods.pretext.relative_location:RelativeLocation",
    "rotation": "sslab.methods.pretext.rotation:Rotation",
    "simclr": "sslab.methods.contrastive.simclr:SimCLR",
    "simsiam": "sslab.methods.siamese.simsiam:SimSiam",
    "split_brain": "sslab.methods.pretext.split_brain:SplitBrain",
    "supcon": "sslab.methods.contrastive.supcon:SupCon",
    "supervised": "sslab.methods.supervised:Supervised",
    "unigrad": "sslab.methods.siamese.unigrad:UniGrad",
    "vicreg": "sslab.methods.siamese.vicreg:VICReg",
}


class UnknownMethodError(KeyError, ValueError):
    """Raised by ``get`` for a name that is not registered (catchable as KeyError or ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def names() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type:
    """The method class registered as ``name`` (imports its module on first use)."""
    try:
        module_name, class_name = _REGISTRY[name].split(":")
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; known methods: {', '.join(names())}") from None
    return getattr(importlib.import_module(module_name), class_name)
