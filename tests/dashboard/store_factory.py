"""Synthetic results stores with known numbers, written through the real ResultsStore API.

``write_grid`` follows a formula (kNN = 0.2 + 0.1·λ + 0.01·seed) so tests can check the charts'
means exactly; ``write_search`` has stopped trials and a metric driven by τ alone; the odd stores
(half-written, old schema, corrupt) are what a reader meets on a live cluster.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sslab.results.store import ResultsStore

TAPS = ("conv1", "res2", "res3", "res4", "res5")
BACKBONE = "resnet18-w8-cifar"
PROFILE = {"name": "local", "epochs": 5, "arch": "resnet18", "width": 8}
#: every synthetic study has one setting (``spec.TrialSpec.setting_id``) and one baseline setting
SETTING, BASELINE_SETTING = "setting-a", "baseline-a"


def grid_knn(loss_weight: float, seed: int) -> float:
    return 0.2 + 0.1 * loss_weight + 0.01 * seed


#: the grid's findings, as study.json keeps them (Finding.to_dict())
GRID_FINDINGS = [
    {"claim": "λ = 0.5 beats λ = 0", "better": {"loss_weight": 0.5}, "worse": {"loss_weight": 0.0},
     "metric": None, "worse_metric": None, "source": "PIRL Fig. 5"},
    {"claim": "λ = 0 beats λ = 1", "better": {"loss_weight": 0.0}, "worse": {"loss_weight": 1.0},
     "metric": None, "worse_metric": None, "source": ""},
]


def _meta(kind, knobs, defaults, total, **extra):
    return {"method": "pirl", "description": f"synthetic {kind}", "kind": kind, "knobs": knobs, "defaults": defaults,
            "seeds": extra.pop("seeds", 1), "metric": "knn_top1", "mode": "max", "total_trials": total,
            "profile": {**PROFILE, "epochs": extra.pop("epochs", 5)}, "backbone": BACKBONE,
            "setting_ids": [SETTING], "baseline_setting": BASELINE_SETTING, **extra}


def _trial_row(method_config: dict, seed: int, knn: float, *, status="ok", epochs=5, finished_at=0.0, tap_shift=0.0):
    trial_id = "pirl-" + "-".join(f"{k}={v}" for k, v in sorted(method_config.items())) + f"-seed={seed}"
    row = {"trial_id": trial_id, "setting_id": SETTING, "baseline_setting": BASELINE_SETTING, "method": "pirl", "seed": seed,
           **{f"config/{k}": v for k, v in method_config.items()}, "config/embedding_dim": 128,
           "status": status, "error": "", "loss": 5.0 - knn, "epochs": epochs, "wall_s": 100.0, "train_s": 80.0,
           "device_s": 80.0, "cpu_steal": 0.1, "device": "cpu", "images_seen": 5000 * epochs, "restarts": 0, "finished_at": finished_at}
    if status == "ok":
        row["knn_top1"] = knn
        row.update({f"probe_{tap}_top1": knn + 0.02 * i + tap_shift for i, tap in enumerate(TAPS)})
        row["invariance_l2_mean"] = 1.0 - knn
    elif status == "stopped":
        row["monitor_knn_top1"] = knn
        row["error"] = f"stopped early after epoch {epochs} of 5"
    else:
        row["error"] = "loss became NaN at epoch 3: lower the learning rate"
    return row


def _epochs(trial_id: str, n: int, knn: float) -> list[dict]:
    return [{"epoch": e, "loss": 6.0 - e * 0.2 - 2 * knn, "lr": 0.1, "epoch_s": 20.0, "images_seen": 5000 * (e + 1),
             "restarts": 0, "knn_top1": knn * (e + 1) / n} for e in range(n)]


def write_grid(root: Path, name: str = "pirl_lambda", *, values=(0.0, 0.5, 1.0), seeds: int = 3,
               fail: tuple[float, int] | None = (1.0, 2), epochs: int = 5, invariance_samples: int = 50) -> ResultsStore:
    """λ × seeds; the trial ``fail`` = (λ, seed) failed with a NaN loss."""
    store = ResultsStore(root, name)
    store.write_metadata(_meta("grid", ["loss_weight"], {"loss_weight": 0.5}, len(values) * seeds, seeds=seeds,
                               epochs=epochs, grid={"loss_weight": list(values)}, findings=GRID_FINDINGS))
    rng = np.random.default_rng(0)
    trials = []
    for i, lam in enumerate(values):
        for seed in range(seeds):
            knn = grid_knn(lam, seed)
            status = "failed" if fail == (lam, seed) else "ok"
            row = _trial_row({"loss_weight": lam, "temperature": 0.07}, seed, knn, status=status,
                             epochs=epochs if status == "ok" else 3, finished_at=1000.0 + i * seeds + seed)
            trials.append(row)
            store.record_epochs({row["trial_id"]: _epochs(row["trial_id"], epochs if status == "ok" else 3, knn)})
            if status == "ok":
                store.record_invariance(row["trial_id"], list(rng.normal(1.0 - knn, 0.1, invariance_samples)))
    store.append("trials", trials)
    for seed in range(seeds):
        store.record_baseline({"backbone": BACKBONE, "setting_id": BASELINE_SETTING, "seed": seed, "knn_top1": 0.15,
                               **{f"probe_{tap}_top1": 0.15 + 0.01 * i for i, tap in enumerate(TAPS)}})
    return store


def search_knn(temperature: float) -> float:
    """A metric that depends on τ alone, peaking at τ = 0.1."""
    return 0.35 - 0.5 * (math.log10(temperature) + 1) ** 2


def search_label_free(temperature: float, loss_weight: float, knn: float) -> dict[str, float]:
    """A search trial's label-free measures (``metrics.LABEL_FREE``'s names): RankMe follows kNN
    closely, LiDAR loosely (λ weighs on it), uniformity falls as kNN rises, α-ReQ grows with τ."""
    alpha = 0.6 + 2 * temperature
    return {"rankme": 40 + 100 * knn + 5 * loss_weight, "lidar": 30 + 20 * knn - 10 * loss_weight,
            "alpha_req": alpha, "alpha_req_gap": abs(alpha - 1), "alignment": 0.2 + temperature,
            "uniformity": -2 - 3 * knn}


def write_search(root: Path, name: str = "pirl_search", *, trials: int = 10, stopped=(2, 5, 7)) -> ResultsStore:
    store = ResultsStore(root, name)
    defaults = {"temperature": 0.07, "loss_weight": 0.5, "num_negatives": 32000}
    store.write_metadata(_meta("search", list(defaults), defaults, trials,
                               search={"temperature": "FloatDistribution(low=0.03, high=0.5, log=True)"}))
    rng = np.random.default_rng(1)
    rows = []
    for n in range(trials):
        point = defaults if n == 0 else {"temperature": float(np.exp(rng.uniform(np.log(0.03), np.log(0.5)))),
                                         "loss_weight": float(rng.uniform(0, 1)),
                                         "num_negatives": int(np.exp(rng.uniform(np.log(256), np.log(32000))))}
        knn = search_knn(point["temperature"])
        status = "stopped" if n in stopped else "ok"
        row = _trial_row(point, 0, knn, status=status, epochs=1 if status == "stopped" else 5, finished_at=2000.0 + n)
        if status == "ok":  # measured at the final evaluation, as kNN is
            row.update(search_label_free(point["temperature"], point["loss_weight"], knn))
        rows.append(row)
        store.record_epochs({row["trial_id"]: _epochs(row["trial_id"], row["epochs"], knn)})
        store.record_trial(row)
    store.record_baseline({"backbone": BACKBONE, "setting_id": BASELINE_SETTING, "seed": 0, "knn_top1": 0.15,
                           **{f"probe_{tap}_top1": 0.15 for tap in TAPS}})
    return store


def write_half_written(root: Path, name: str = "pirl_running") -> ResultsStore:
    """A study whose first trial is still training: study.json and two epochs, no trial row yet."""
    store = ResultsStore(root, name)
    store.write_metadata(_meta("grid", ["loss_weight"], {"loss_weight": 0.5}, 4, grid={"loss_weight": [0, 1]}))
    store.record_epochs({"pirl-loss_weight=0-seed=0": _epochs("pirl-loss_weight=0-seed=0", 2, 0.2)})
    return store


def write_old_schema(root: Path, name: str = "pirl_old") -> None:
    folder = Path(root) / name
    write_grid(Path(root), name, values=(0.0,), seeds=1, fail=None)
    meta = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**meta, "schema_version": 0}))


def write_fixture_root(root: Path) -> Path:
    """The dashboard's test root: a grid, a search, a running study and an old-schema store."""
    write_grid(root)
    write_search(root)
    write_half_written(root)
    write_old_schema(root)
    return root


def write_large(root: Path, name: str = "pirl_large", *, trials: int = 1000, epochs: int = 200,
                invariance_samples: int = 100) -> ResultsStore:
    """``trials`` trials × ``epochs`` epochs in one write per table (the load a long search leaves)."""
    import pandas as pd

    store = ResultsStore(root, name)
    store.write_metadata(_meta("search", ["temperature", "loss_weight"], {"temperature": 0.07, "loss_weight": 0.5},
                               trials, epochs=epochs))
    rng = np.random.default_rng(2)
    temperature = np.exp(rng.uniform(np.log(0.03), np.log(0.5), trials))
    loss_weight = rng.uniform(0, 1, trials)
    rows = [_trial_row({"temperature": float(t), "loss_weight": float(w)}, 0, search_knn(t),
                       status="stopped" if i % 3 == 2 else "ok", epochs=epochs, finished_at=float(i))
            for i, (t, w) in enumerate(zip(temperature, loss_weight))]
    store.append("trials", rows)
    ids = np.repeat([r["trial_id"] for r in rows], epochs)
    epoch = np.tile(np.arange(epochs), trials)
    store.append("epochs", pd.DataFrame({"trial_id": ids, "epoch": epoch, "loss": 6.0 - epoch * 0.01,
                                         "lr": 0.1, "epoch_s": 20.0, "knn_top1": rng.uniform(0.1, 0.3, len(ids))})
                 .to_dict("records"))
    store.append("invariance", pd.DataFrame({"trial_id": np.repeat([r["trial_id"] for r in rows], invariance_samples),
                                             "distance": rng.normal(1, 0.1, trials * invariance_samples)})
                 .to_dict("records"))
    return store
