"""Tests of where datasets are found and their decoded copies cached (src/sslab/data/locations.py)."""

from __future__ import annotations

from sslab.data import locations as locations_mod
from sslab.data.catalog import load_split
from sslab.data.locations import cache_dir, data_dir


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSLAB_DATA", raising=False)
    assert data_dir() == tmp_path / "home" / ".cache" / "sslab" / "data"
    monkeypatch.setenv("SSLAB_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSLAB_CACHE", raising=False)
    writable = tmp_path / "data"
    writable.mkdir()
    assert cache_dir(writable) == writable / ".sslab-cache"
    assert cache_dir(tmp_path / "missing") == tmp_path / "home" / ".cache" / "sslab" / "cache"
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)  # no write bits: read-only even for root
    try:
        assert cache_dir(read_only) == tmp_path / "home" / ".cache" / "sslab" / "cache"
    finally:
        read_only.chmod(0o755)
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "explicit"))
    assert cache_dir(writable) == tmp_path / "explicit"


def test_cache_goes_to_fallback_when_data_dir_read_only(tmp_path, monkeypatch, make_folder):
    data = tmp_path / "data"
    make_folder(data / "imgs", per_class=1)
    monkeypatch.delenv("SSLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(locations_mod, "_writable", lambda folder: False)
    load_split("imagefolder:imgs", root=data)
    assert list((tmp_path / "home" / ".cache" / "sslab" / "cache").glob("*.parquet"))
    assert not (data / ".sslab-cache").exists()
