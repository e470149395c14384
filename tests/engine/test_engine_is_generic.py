"""No wing but methods names a particular method: everything the data, results, plan, evaluation and engine
wings, the CLI, reports and export know of a method comes through the contract."""

import re
from pathlib import Path

from sslab import methods
from sslab.methods.blocks.config import MethodConfig

SSLAB = Path(__file__).resolve().parents[2] / "src" / "sslab"
GENERIC = [SSLAB / "cli.py", SSLAB / "reports.py", SSLAB / "export.py",
           SSLAB / "checkpoints.py",
           *(p for wing in ("data", "results", "plan", "evaluation", "engine") for p in sorted((SSLAB / wing).glob("*.py")))]


def test_no_generic_file_names_a_method_or_its_knobs():
    generic = MethodConfig.field_names()  # the optimiser fields every method shares
    words = set(methods.names())
    for name in methods.names():
        cls = methods.get(name)
        words |= {cls.__name__.lower()} | (cls.Config.field_names() - generic)
    # ordinary words the platform uses in a sense of its own: the kNN's temperature τ and its
    # neighbours, a feature tap, the gap to the best configuration, images' alpha channel and
    # grayscale mode, Ray tasks
    words -= {"temperature", "neighbours", "tap", "gap", "alpha", "grayscale", "tasks"}
    # whole words only: "self-supervised" does not name the method "supervised"
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, words))) + r")(?![\w-])", re.IGNORECASE)
    hits = [f"{path.name}:{n}: {line.strip()}" for path in GENERIC
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "a generic wing names a method or one of its knobs:\n" + "\n".join(hits)
