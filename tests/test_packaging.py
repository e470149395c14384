"""The package installs from src/ (nothing at the repository root shadows a module), and the wheel
carries every module."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {ROOT / "src" / "sslab": "sslab", ROOT / "studies": "sslab/studies"}


def test_nothing_at_the_repository_root_shadows_a_module():
    """A script run from the root (`python studies/pirl_lambda.py`) gets the standard library's
    ``platform`` and Hugging Face's ``datasets``, not a folder of ours."""
    shadowing = [name for name in ("platform", "datasets", "data", "results", "sslab") if (ROOT / name).is_dir()]
    assert not shadowing
    code = "import platform; platform.system(); import sslab.data.catalog, sslab.plan.study; print(platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "lib" in out.stdout and str(ROOT) not in out.stdout


def test_built_wheel_contains_every_module(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sslab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{target}/{p.relative_to(folder).as_posix()}" for folder, target in SOURCES.items()
                for p in folder.rglob("*.py")}
    assert len(expected) > 100 and expected <= names, sorted(expected - names)
