"""The platform never names a particular method: everything it knows comes through the contract."""

import re
from pathlib import Path

from sslab import methods
from sslab.methods.blocks.config import MethodConfig

PLATFORM = Path(__file__).resolve().parents[2] / "platform"


def test_no_platform_file_names_a_method_or_its_knobs():
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
    hits = [f"{path.name}:{n}: {line.strip()}" for path in sorted(PLATFORM.glob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "platform/ names a method or one of its knobs:\n" + "\n".join(hits)
