"""The sslab command: lists the shipped studies, refuses unknown ones clearly."""

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
    with pytest.raises(SystemExit, match="sslab run pirl_lambda"):
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
    assert "to continue: sslab run pirl_lambda --seeds 2" in out  # the exact command the study was started with


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
    assert "λ = 0.5 (`pirl_lambda`, `pirl_search`)" in table  # a knob, its default and the studies varying it
    main(["methods", "--markdown"])
    assert capsys.readouterr().out.strip() == table
    page = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    assert f"<!-- methods table: sslab methods --markdown -->\n{table}\n" in page, (
        "docs/methods.md's method table is out of date: paste `sslab methods --markdown` under its marker")
