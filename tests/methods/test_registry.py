"""The method registry: explicit, sorted, lazy, and helpful on unknown names."""

import pathlib
import subprocess
import sys

import pytest

import sslab.methods
from sslab.methods.contrastive.npid import NPID
from sslab.methods.contrastive.pirl import PIRL

METHODS_DIR = pathlib.Path(sslab.methods.__file__).parent


def test_names_are_sorted_and_contain_pirl_and_npid():
    names = sslab.methods.names()
    assert {"pirl", "npid"} <= set(names) and names == sorted(names)


def test_get_returns_the_class_whose_name_matches():
    assert sslab.methods.get("pirl") is PIRL and sslab.methods.get("npid") is NPID
    for name in sslab.methods.names():
        assert sslab.methods.get(name).name == name


@pytest.mark.parametrize("error", [KeyError, ValueError])
def test_unknown_name_lists_the_known_ones(error):
    with pytest.raises(error, match="simclr2.*npid, pirl, relative_location, rotation, simclr"):
        sslab.methods.get("simclr2")


def test_importing_the_package_imports_no_method():
    code = "import sys, sslab.methods; print(sorted(m for m in sys.modules if m.startswith('sslab.methods.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_methods_never_import_ray():
    for path in METHODS_DIR.glob("*.py"):
        lines = path.read_text().splitlines()
        assert not [l for l in lines if l.strip().startswith(("import ray", "from ray"))], path
