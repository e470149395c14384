"""platform/ must not shadow the standard library, and the wheel must carry every module."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"methods": "sslab/methods", "platform": "sslab/platform", "dashboard": "sslab/dashboard",
            "dashboard/views": "sslab/dashboard/views", "studies": "sslab/studies"}


def test_platform_folder_has_no_init():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_and_sslab_platform_both_import_from_the_repo_root():
    code = "import platform; platform.system(); import sslab.platform.data, sslab.platform.study; print(platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "lib" in out.stdout and "/platform/" not in out.stdout.replace("platform.py", "")


def test_methods_never_import_ray():
    for path in (ROOT / "methods").glob("*.py"):
        lines = path.read_text().splitlines()
        assert not [l for l in lines if l.strip().startswith(("import ray", "from ray"))], path


def test_built_wheel_contains_every_module(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sslab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{target}/{p.name}" for folder, target in PACKAGES.items() for p in (ROOT / folder).glob("*.py")}
    assert expected <= names, sorted(expected - names)
    assert "sslab/platform/__init__.py" not in names
