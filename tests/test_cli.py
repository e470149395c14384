"""The sslab command: lists the shipped studies, refuses unknown ones clearly."""

import os

import pytest

from sslab.cli import available_studies, main


def test_studies_lists_the_pirl_lambda_ablation(capsys):
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "pirl_lambda" in out and "λ" in out
    assert available_studies()["pirl_lambda"].grid == {"loss_weight": [0.0, 0.25, 0.5, 0.75, 1.0]}


def test_unknown_study_names_the_known_ones():
    with pytest.raises(SystemExit, match="unknown study 'nope'.*pirl_lambda"):
        main(["run", "nope"])


def test_report_without_results_says_how_to_get_them(tmp_path):
    with pytest.raises(SystemExit, match=f"run it with: sslab run pirl_lambda --results {tmp_path}$"):
        main(["report", "pirl_lambda", "--results", str(tmp_path)])


def test_every_study_is_listed_and_valid_for_both_profiles(capsys):
    from sslab.plan.profiles import get_profile

    main(["studies"])
    out = capsys.readouterr().out
    studies = available_studies()
    assert {"pirl_lambda", "pirl_search", "simclr_temperature", "siamese_unified", "momentum_encoder",
            "supcon_vs_ce", "unigrad_lambda"} <= set(studies)
    for name in studies:
        assert name in out and studies[name].description in out
        for profile in ("local", "cifar"):
            studies[name].validate(get_profile(profile))  # every configuration builds, before any Ray work
    negatives = studies["pirl_negatives"]
    assert max(negatives.grid_for("cifar")["num_negatives"]) == 32000  # the paper's N at full scale
    assert len(negatives.configurations("local")) < len(negatives.configurations("cifar"))  # shrunk locally
    assert studies["pirl_permutations"].grid["num_permutations"][-1] == 362880  # 9!


def test_bad_flag_values_are_refused_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "pirl_lambda", "--seeds", "0"])
    assert exit_info.value.code == 2 and "--seeds: must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "pirl_search", "--trials", "many"])
    assert "--trials" in capsys.readouterr().err


def test_an_unwritable_results_root_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "pirl_lambda", "--results", str(blocker)])
    assert exit_info.value.code == 2 and "cannot write the results store" in capsys.readouterr().err


def _fake_store(root):
    """A stopped study: 3 of 4 trials finished (2 configurations × 2 seeds), one trial half-way."""
    from sslab.results.store import ResultsStore

    store = ResultsStore(root, "pirl_lambda")
    store.write_metadata({"method": "pirl", "knobs": ["loss_weight"], "metric": "knn_top1", "mode": "max",
                          "total_trials": 4, "profile": {"epochs": 5}, "setting_ids": ["s"], "baseline_setting": "b",
                          "command": "sslab run pirl_lambda --seeds 2"})
    for weight, seed, knn in [(0.0, 0, 0.20), (0.0, 1, 0.22), (0.5, 0, 0.30)]:
        store.record_trial({"trial_id": f"pirl-loss_weight={weight:g}-seed={seed}", "setting_id": "s",
                            "baseline_setting": "b", "method": "pirl", "seed": seed,
                            "status": "ok", "error": "", "config/loss_weight": weight, "knn_top1": knn,
                            "wall_s": 10.0, "device_s": 20.0, "images_seen": 1000})
    store.record_epochs({"pirl-loss_weight=0.5-seed=1": [{"epoch": 0, "loss": 9.0}, {"epoch": 1, "loss": 8.0}]})
    store.record_baseline({"backbone": "r", "setting_id": "b", "seed": 0, "knn_top1": 0.15})


def test_status_shows_progress_of_a_stopped_study(tmp_path, capsys):
    _fake_store(tmp_path)
    main(["status", "pirl_lambda", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert "3 of 4 trial(s) finished (3 ok)" in out
    assert "unfinished: pirl-loss_weight=0.5-seed=1 at epoch 2/5" in out
    assert "wall 30 s, device 60 s, 3,000 images" in out
    # the exact command the study was started with, and the root it was not started with the flag for
    assert f"to continue: sslab run pirl_lambda --seeds 2 --results {tmp_path} (finished trials" in out


def test_report_formats(tmp_path, capsys):
    _fake_store(tmp_path)
    main(["report", "pirl_lambda", "--results", str(tmp_path), "--format", "markdown"])
    markdown = capsys.readouterr().out
    assert "| loss_weight | mean | std | seeds | gap to best | beyond spread |" in markdown
    assert "| 0 | 0.210 | 0.014 | 2 | -0.090 | – |" in markdown  # the best has one seed: spread unknown
    assert "| 0.5 | 0.300 | – | 1 | best | – |" in markdown
    assert "Random-init baseline: knn_top1 0.150 over 1 seed(s)." in markdown
    main(["report", "pirl_lambda", "--results", str(tmp_path), "--format", "csv"])
    assert capsys.readouterr().out.splitlines()[0].startswith("trial_id,setting_id,baseline_setting,method,seed,status")
    main(["report", "pirl_lambda", "--results", str(tmp_path)])
    table = capsys.readouterr().out
    assert "best: loss_weight=0.5" in table and "compute: 3 trial(s) (3 ok)" in table


def test_dashboard_serves_the_installed_app_on_localhost_only():
    from pathlib import Path

    from sslab.cli import dashboard_command

    command = dashboard_command()
    app = Path(command[command.index("run") + 1])
    assert app.name == "app.py" and (app.parent / "views" / "studies.py").exists()
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"


def test_the_methods_page_table_is_the_registry_as_it_is(capsys):
    """`sslab methods --markdown` writes the method table of docs/methods.md from the registry and
    the studies; that page must hold it verbatim, under its marker comment (rerun it after adding a
    method or a study)."""
    from pathlib import Path

    from sslab import methods
    from sslab.cli import methods_table

    table = methods_table(markdown=True)
    assert all(f"| `{name}` |" in table for name in methods.names())
    # a knob's name (what a grid or a flag takes), its symbol, its default and the studies varying it
    assert "loss_weight (λ) = 0.5 (`pirl_lambda`, `pirl_search`)" in table
    assert "temperature (τ) = 0.07" in table and "bank_init = random" in table  # no symbol of its own: the name
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    for study_name, study in available_studies().items():  # every name a study varies is on its method's row
        for method in study.method_names:
            declared = {knob["name"] for knob in methods.get(method).Config.describe()}
            assert all(f"; {knob} " in rows[method] or f"| {knob} " in rows[method]
                       for knob in study.knobs if knob in declared), (study_name, method)
    main(["methods", "--markdown"])
    assert capsys.readouterr().out.strip() == table
    page = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    assert f"<!-- methods table: sslab methods --markdown -->\n{table}\n" in page, (
        "docs/methods.md's method table is out of date: paste `sslab methods --markdown` under its marker")


def test_run_help_shows_the_study_flags_and_without_a_study_lists_the_studies(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "pirl_search", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: sslab run pirl_search ")
    assert available_studies()["pirl_search"].description in out
    for flag in ("--profile", "--dataset", "--seeds", "--results", "--epochs", "--max-trials", "--trials", "--time-budget"):
        assert flag in out
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sslab run NAME") and "sslab run NAME --help" in out
    assert all(f"  {name} " in out for name in available_studies())
    assert main(["run"]) == 2  # no study: the same list, as an error
    captured = capsys.readouterr()
    assert not captured.out and "error: name a study" in captured.err and "  pirl_lambda " in captured.err


def test_run_help_imports_neither_ray_nor_the_runner():
    import subprocess
    import sys

    code = ("import sys; from sslab.cli import main\ntry:\n    main(['run', 'pirl_lambda', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            "print(sorted(m for m in ('ray', 'sslab.engine.runner') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--max-trials" in done.stdout, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_status_without_a_study_lists_the_studies_of_the_root(tmp_path, capsys):
    from sslab.results.lock import StoreLock
    from sslab.results.store import ResultsStore

    missing = tmp_path / "nothing"
    main(["status", "--results", str(missing)])
    assert capsys.readouterr().out == (f"sslab: no study results under {missing}; start a study with: "
                                       f"sslab run NAME --results {missing} (sslab studies lists them)\n")
    _fake_store(tmp_path)  # 3 of 4 trials: interrupted
    done = ResultsStore(tmp_path, "pirl_ema")
    done.write_metadata({"method": "pirl", "knobs": ["bank_momentum"], "total_trials": 1, "setting_ids": ["s"]})
    done.record_trial({"trial_id": "t", "setting_id": "s", "method": "pirl", "seed": 0, "status": "ok", "error": ""})
    live = ResultsStore(tmp_path, "pirl_temperature")
    live.write_metadata({"method": "pirl", "total_trials": 2, "setting_ids": ["s"]})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.json").write_text("{not json")
    ResultsStore(tmp_path, "retired").write_metadata({"total_trials": 2, "command": "sslab run retired"})
    (tmp_path / "not_a_study").mkdir()  # a folder without a store is not listed

    with StoreLock(live.fs, live.lock_path, note=None):
        main(["status", "--results", str(tmp_path)])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert sorted(lines) == ["broken", "pirl_ema", "pirl_lambda", "pirl_temperature", "retired"]
    assert "interrupted" in lines["pirl_lambda"] and "3 of 4 trial(s) (3 ok)" in lines["pirl_lambda"]
    assert lines["pirl_lambda"].endswith(f"resume: sslab run pirl_lambda --seeds 2 --results {tmp_path}")
    assert "finished" in lines["pirl_ema"] and "1 of 1 trial(s) (1 ok)" in lines["pirl_ema"]
    assert lines["pirl_ema"].endswith(f"summary: sslab report pirl_ema --results {tmp_path}")
    assert "running" in lines["pirl_temperature"] and f"pid {os.getpid()} on " in lines["pirl_temperature"]
    # a damaged store: its file, the cause and the way out; a store of no shipped study: no command that would fail
    assert "unreadable" in lines["broken"] and f"{tmp_path}/broken/study.json cannot be read" in lines["broken"]
    assert "move it aside (mv " in lines["broken"] and "sslab status" not in lines["broken"]
    assert "no study of this name in this sslab" in lines["retired"] and "sslab run" not in lines["retired"]

    main(["status", "--results", str(tmp_path)])  # the lock released: nothing started yet
    out = capsys.readouterr().out
    assert out.startswith(f"5 studies under {tmp_path}:\n")
    line = next(line for line in out.splitlines() if line.split()[0] == "pirl_temperature")
    assert "not started" in line and "0 of 2 trial(s) (none)" in line
    assert out.endswith(f"one study's progress: sslab status NAME --results {tmp_path}\n")


def test_suggested_commands_name_the_results_root_only_where_it_is_not_the_default(tmp_path, capsys, monkeypatch):
    from sslab.results.store import ResultsStore

    _fake_store(tmp_path)
    other = ResultsStore(tmp_path, "pirl_lambda")  # a trial of another setting: the note says how to see it
    other.record_trial({"trial_id": "old", "setting_id": "smoke", "method": "pirl", "seed": 0, "status": "ok",
                        "error": "", "config/loss_weight": 0.5, "knn_top1": 0.1})
    main(["report", "pirl_lambda", "--results", str(tmp_path), "--format", "markdown"])
    assert f"(sslab report pirl_lambda --results {tmp_path} --setting ID shows one; IDs: smoke)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=f"see: sslab status pirl_lambda --results {tmp_path}$"):
        main(["report", "pirl_lambda", "--results", str(tmp_path), "--setting", "nope"])
    main(["status", "pirl_lambda", "--results", str(tmp_path)])
    assert f"sslab report pirl_lambda --results {tmp_path} --setting ID" in capsys.readouterr().out

    monkeypatch.setenv("SSLAB_RESULTS", str(tmp_path))  # the default root: the flag is not needed
    main(["status", "pirl_lambda", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert "to continue: sslab run pirl_lambda --seeds 2 (finished" in out and "--results" not in out
    main(["status"])
    assert "resume: sslab run pirl_lambda --seeds 2\n" in capsys.readouterr().out


def test_a_study_moved_to_another_method_is_found_by_its_store_name(tmp_path):
    from sslab.cli import _study

    assert _study("pirl_temperature-simclr").name == "pirl_temperature-simclr"
    assert _study("pirl_temperature-simclr").method_names == ["simclr"]
    with pytest.raises(SystemExit, match="no results for 'pirl_temperature-simclr'.*sslab run pirl_temperature-simclr"):
        main(["status", "pirl_temperature-simclr", "--results", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown study 'pirl_temperature-nope'"):
        main(["status", "pirl_temperature-nope"])


def test_version_is_the_installed_distributions_or_the_checkouts(capsys, monkeypatch):
    import tomllib
    from importlib import metadata
    from pathlib import Path

    from sslab.cli import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"sslab {metadata.version('sslab')}\n"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert version() == f"{pyproject['project']['version']} (source checkout, not installed)"
