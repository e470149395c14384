"""What a study found: per-configuration mean, spread and count over seeds, the gain over the
random-init baseline, the verdict on each of the paper's findings, and what it cost.

Pure pandas over the results store's tables, shared by the printed summary,
``sslab report``, ``sslab status`` and the dashboard. A difference between two
configurations (or a configuration and the baseline) is called out only when it
exceeds their spread across seeds: ``|mean_a − mean_b| > std_a + std_b`` (both
with at least two seeds), a deliberately plain rule a reader can check by eye.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sslab.results import selection
from sslab.results.cpu_steal import NOTABLE

#: per-trial cost columns, summed in the study's totals
COST_COLUMNS = ("wall_s", "device_s", "images_seen")


#: the prefixes of a trial row's specification columns (``spec.TrialSpec.record``)
SPEC_PREFIXES = ("config/", "train/", "eval/", "data/")


@dataclass
class Setting:
    """The trials of one setting of a study, the baselines they are compared with, and a note on
    what else the store holds (None when nothing)."""

    trials: pd.DataFrame
    baselines: pd.DataFrame
    note: str | None = None


def current_setting(trials: pd.DataFrame, baselines: pd.DataFrame, meta: dict, setting: str | None = None, *,
                    flags: str = "") -> Setting:
    """The trials of one setting: ``setting`` (a setting id), or the study's last run's
    (``study.json``'s ``setting_ids``), with the random-init baselines of their backbone, data and
    evaluation only. Trials of other settings (a smoke test's, another base value's) are never
    averaged or compared with them: the note counts them and says how they differ.

    A store written before trials recorded their specification has no settings: all its trials
    are shown, with a note saying their settings cannot be told apart. ``flags``: what the note's
    suggested ``sslab report`` command adds (``store.results_flag``: ``--results ROOT``)."""
    if trials.empty and baselines.empty:
        return Setting(trials, baselines)
    ids = [setting] if setting else list(meta.get("setting_ids") or [])
    if "setting_id" not in trials or not ids:
        note = ("these trials were recorded before sslab kept each trial's specification, so runs with other "
                "settings cannot be told apart: rerun the study into a new --results folder to be sure"
                if not trials.empty and "setting_id" not in trials else None)
        return Setting(trials, baselines, note)
    mine = trials["setting_id"].isin(ids)
    shown, others = trials[mine], trials[~mine]
    baseline_ids = (set(shown["baseline_setting"].dropna()) if "baseline_setting" in shown and not shown.empty
                    else {meta.get("baseline_setting")})
    of_setting = (baselines[baselines["setting_id"].isin(baseline_ids)] if "setting_id" in baselines
                  else baselines.iloc[0:0])
    note = None
    if not others.empty:
        known = others["setting_id"].dropna()
        count = f"{known.nunique()} other setting(s)" if len(known) else "no recorded setting"
        if len(known) and len(known) < len(others):
            count += " and of none recorded"
        ways = _how_settings_differ(shown, others[others["setting_id"].notna()], meta)
        other_ids = ", ".join(sorted(known.unique())[:3])
        note = (f"{len(others)} trial(s) of {count} are in the store and not shown{f' ({ways})' if ways else ''}; "
                "settings are summarised apart, never mixed"
                + (f" (sslab report {meta.get('study', '<study>')}{flags} --setting ID shows one; IDs: {other_ids})"
                   if other_ids else ""))
    return Setting(shown.reset_index(drop=True), of_setting.reset_index(drop=True), note)


def _how_settings_differ(shown: pd.DataFrame, others: pd.DataFrame, meta: dict, most: int = 4) -> str:
    """``epochs 1 vs 16, train_subset 256 vs 5000``: the specification columns in which the first
    trial of another setting differs from this setting's (knobs and seeds aside)."""
    if shown.empty:
        return ""
    knobs = {f"config/{k}" for k in meta.get("knobs") or []}
    here = shown.iloc[0]
    parts: list[str] = []
    for _, there in others.drop_duplicates("setting_id").iterrows():
        for column in others.columns:
            if not column.startswith(SPEC_PREFIXES) or column in knobs or column not in shown:
                continue
            a, b = there[column], here[column]
            if _same(a, b):
                continue
            parts.append(f"{column.split('/', 1)[1]} {_cell(a)} vs {_cell(b)}")
            if len(parts) >= most:
                return ", ".join(parts) + ", ..."
    return ", ".join(dict.fromkeys(parts))


def _same(a, b) -> bool:
    missing_a = a is None or (isinstance(a, float) and math.isnan(a))
    missing_b = b is None or (isinstance(b, float) and math.isnan(b))
    if missing_a or missing_b:
        return missing_a and missing_b
    try:
        return bool(a == b)
    except ValueError:  # arrays
        return str(a) == str(b)


def _cell(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def knob_columns(trials: pd.DataFrame, knobs: list[str]) -> list[str]:
    """The columns that tell configurations apart: ``method`` when the trials span several
    methods, then ``config/<knob>`` per knob; ``method`` alone for one method without knobs
    (a study of one configuration over seeds)."""
    knob_cols = [f"config/{k}" for k in knobs if f"config/{k}" in trials]
    several = "method" in trials and trials["method"].nunique() > 1
    alone = not knob_cols and "method" in trials
    return (["method"] if several or alone else []) + knob_cols


def baseline_level(baselines: pd.DataFrame | None, metric: str) -> tuple[float, float, int] | None:
    """Mean, std and seed count of the random-init baseline's ``metric`` (None without one)."""
    if baselines is None or baselines.empty or metric not in baselines:
        return None
    values = baselines.drop_duplicates(["backbone", "seed"])[metric].dropna()
    if values.empty:
        return None
    return float(values.mean()), float(values.std()) if len(values) > 1 else math.nan, len(values)


def by_configuration(trials: pd.DataFrame, knobs: list[str], metric: str, mode: str = "max",
                     baselines: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration of the ``ok`` trials: mean, std and count of ``metric`` over seeds,
    the gap to the best configuration and whether that gap exceeds the two configurations' spread;
    with ``baselines``, the gain over the random-init baseline (``vs_baseline``) and whether it
    exceeds the spread of both (``beats_baseline``: None with one seed on either side)."""
    columns = knob_columns(trials, knobs)
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    if ok.empty or metric not in ok or not columns:
        return pd.DataFrame(columns=[*columns, "mean", "std", "n", "gap_to_best", "beyond_spread",
                                     "vs_baseline", "beats_baseline"])
    table = (
        ok.groupby(columns, dropna=False)[metric]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
        .sort_values(columns)
        .reset_index(drop=True)
    )
    best = table.loc[table["mean"].idxmax() if mode == "max" else table["mean"].idxmin()]
    table["gap_to_best"] = table["mean"] - best["mean"]
    table["beyond_spread"] = [
        _beyond_spread(row["mean"], row["std"], row["n"], best["mean"], best["std"], best["n"])
        for _, row in table.iterrows()
    ]
    table["best"] = table.index == best.name
    level = baseline_level(baselines, metric)
    sign = 1 if mode == "max" else -1
    table["vs_baseline"] = table["mean"] - level[0] if level else math.nan
    table["beats_baseline"] = [
        None if level is None or (verdict := _beyond_spread(row["mean"], row["std"], row["n"], *level)) is None
        else bool(verdict and sign * (row["mean"] - level[0]) > 0)
        for _, row in table.iterrows()
    ]
    return table


#: the verdicts on a finding
REPRODUCED, CONTRADICTED, NOT_ESTABLISHED = "reproduced", "contradicted", "not established"


def _matching(trials: pd.DataFrame, configuration: dict) -> pd.DataFrame:
    match = pd.Series(True, index=trials.index)
    for key, value in configuration.items():
        column = key if key == "method" else f"config/{key}"
        if column not in trials:
            return trials.iloc[0:0]
        if isinstance(value, float):
            match &= (trials[column].astype(float) - value).abs() <= 1e-9 * max(1.0, abs(value))
        else:
            match &= trials[column] == value
    return trials[match]


def judge(finding: dict, trials: pd.DataFrame, metric: str, mode: str = "max") -> dict:
    """The verdict on one finding (``Finding.to_dict()``) from the study's ``ok`` trials: reproduced
    when the claimed order holds beyond the two sides' spread over seeds, contradicted when the
    opposite does, otherwise not established (one seed, the configurations not run, or a
    difference within the spread). Returns the claim, the verdict, why, and both sides' numbers.
    Claims about choosing without labels (``Picks``, ``RanksBetter``) are judged by
    ``judge_picks`` and ``judge_ranks_better``."""
    kind = finding.get("kind", "order")
    if kind == "picks":
        return judge_picks(finding, trials)
    if kind == "ranks_better":
        return judge_ranks_better(finding, trials)
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    better_metric = finding.get("metric") or metric
    worse_metric = finding.get("worse_metric") or better_metric
    sides = []
    for configuration, column in ((finding["better"], better_metric), (finding.get("worse") or finding["better"],
                                                                         worse_metric)):
        values = _matching(ok, configuration)[column].dropna() if column in ok else pd.Series(dtype=float)
        sides.append((float(values.mean()) if len(values) else math.nan,
                      float(values.std()) if len(values) > 1 else math.nan, len(values)))
    (mean_b, std_b, n_b), (mean_w, std_w, n_w) = sides
    out = {"claim": finding["claim"], "source": finding.get("source", ""), "better_mean": mean_b, "better_std": std_b,
           "better_n": n_b, "worse_mean": mean_w, "worse_std": std_w, "worse_n": n_w,
           "difference": mean_b - mean_w if n_b and n_w else math.nan}
    if not n_b or not n_w:
        return {**out, "verdict": NOT_ESTABLISHED, "why": "a configuration it compares has no finished trial"}
    if n_b < 2 or n_w < 2:
        return {**out, "verdict": NOT_ESTABLISHED,
                "why": f"{min(n_b, n_w)} seed(s): one seed establishes nothing (run --seeds 3)"}
    gap = (mean_b - mean_w) * (1 if mode == "max" else -1)
    spread = std_b + std_w
    if gap > spread:
        verdict, why = REPRODUCED, f"{gap:+.3f} beyond the spread {spread:.3f}"
    elif -gap > spread:
        verdict, why = CONTRADICTED, f"{gap:+.3f}: the opposite, beyond the spread {spread:.3f}"
    else:
        verdict, why = NOT_ESTABLISHED, f"{gap:+.3f} within the spread {spread:.3f}"
    return {**out, "verdict": verdict, "why": f"{why} ({n_b} and {n_w} seeds)"}


def _one_method(finding: dict, trials: pd.DataFrame) -> pd.DataFrame:
    """The per-configuration means (over seeds) of the finding's method's ``ok`` trials."""
    if finding.get("method") and "method" in trials:
        trials = trials[trials["method"] == finding["method"]]
    columns = [finding[k] for k in ("measure", "better", "worse", "target") if isinstance(finding.get(k), str)]
    return selection.per_configuration(trials, None, columns)


def judge_picks(finding: dict, trials: pd.DataFrame) -> dict:
    """``Picks``: the configuration the measure picks is within ``within`` of the best on the target.
    With the best's and the picked configuration's spreads s (std over seeds, summed) and the
    regret r (best minus picked): reproduced when r + s ≤ within (it holds even at the edge of the
    spread), contradicted when r − s > within, otherwise not established; one seed establishes
    nothing. ``better_mean`` is the picked configuration's target, ``worse_mean`` the best's."""
    table, target, within = _one_method(finding, trials), finding["target"], finding["within"]
    out = {"claim": finding["claim"], "source": finding.get("source", ""), "better_n": 0, "worse_n": 0,
           "better_mean": math.nan, "worse_mean": math.nan, "better_std": math.nan, "worse_std": math.nan}
    lost, picked = selection.regret(table, finding["measure"], finding["mode"], target)
    if picked < 0:
        return {**out, "difference": math.nan, "verdict": NOT_ESTABLISHED,
                "why": f"no finished trial has both {finding['measure']} and {target}"}
    best = table[target].idxmax()
    out.update(better_mean=float(table.loc[picked, target]), better_std=float(table.loc[picked, f"{target}_std"]),
               better_n=int(table.loc[picked, "n"]), worse_mean=float(table.loc[best, target]),
               worse_std=float(table.loc[best, f"{target}_std"]), worse_n=int(table.loc[best, "n"]),
               difference=-lost)
    seeds = min(out["better_n"], out["worse_n"])
    if seeds < 2:
        return {**out, "verdict": NOT_ESTABLISHED, "why": f"regret {lost:.3f} of {len(table)} configurations; "
                                                          f"{seeds} seed(s): one seed establishes nothing"}
    spread = out["better_std"] + out["worse_std"] if picked != best else 0.0
    if lost + spread <= within:
        verdict = REPRODUCED
    elif lost - spread > within:
        verdict = CONTRADICTED
    else:
        verdict = NOT_ESTABLISHED
    return {**out, "verdict": verdict, "why": f"regret {lost:.3f} ± {spread:.3f} against {within:g} "
                                              f"({len(table)} configurations, {seeds} seeds)"}


def judge_ranks_better(finding: dict, trials: pd.DataFrame) -> dict:
    """``RanksBetter``: Spearman's ρ (target against each measure signed by its mode) is higher for
    ``better`` than for ``worse``; reproduced when the paired bootstrap interval (over
    configurations) of the difference lies above 0, contradicted when below, otherwise not
    established; one seed per configuration establishes nothing. The means are the two ρ."""
    table, target = _one_method(finding, trials), finding["target"]
    sides = [(finding["better"], finding["better_mode"]), (finding["worse"], finding["worse_mode"])]
    rows = table.dropna(subset=[c for c in (finding["better"], finding["worse"], target) if c in table])
    out = {"claim": finding["claim"], "source": finding.get("source", ""), "better_std": math.nan,
           "worse_std": math.nan, "better_n": len(rows), "worse_n": len(rows)}
    if any(measure not in rows for measure, _ in sides) or target not in rows or len(rows) < 3:
        return {**out, "better_mean": math.nan, "worse_mean": math.nan, "difference": math.nan,
                "verdict": NOT_ESTABLISHED, "why": f"fewer than 3 configurations have both measures and {target}"}
    signed = [rows[m].to_numpy(float) * (1 if mode == "max" else -1) for m, mode in sides]
    agreements = [selection.spearman(values, rows[target]) for values in signed]
    both = np.stack(signed, axis=1)
    low, high = selection.bootstrap_interval(
        both, rows[target], lambda x, y: selection.spearman(x[:, 0], y) - selection.spearman(x[:, 1], y))
    out.update(better_mean=agreements[0], worse_mean=agreements[1], difference=agreements[0] - agreements[1])
    seeds = int(rows["n"].min())
    why = (f"ρ {agreements[0]:+.2f} vs {agreements[1]:+.2f}, difference interval [{low:+.2f}, {high:+.2f}] "
           f"over {len(rows)} configurations")
    if seeds < 2:
        return {**out, "verdict": NOT_ESTABLISHED, "why": f"{why}; {seeds} seed(s): one seed establishes nothing"}
    verdict = REPRODUCED if low > 0 else CONTRADICTED if high < 0 else NOT_ESTABLISHED
    return {**out, "verdict": verdict, "why": f"{why}, {seeds} seeds"}


def judge_all(findings: list[dict], trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.DataFrame:
    """One row per finding (see ``judge``)."""
    return pd.DataFrame([judge(f, trials, metric, mode) for f in findings])


def _beyond_spread(mean_a, std_a, n_a, mean_b, std_b, n_b) -> bool | None:
    """True/False when both have ≥ 2 seeds; None when the spread is unknown (one seed)."""
    if n_a < 2 or n_b < 2 or math.isnan(std_a) or math.isnan(std_b):
        return None
    return bool(abs(mean_a - mean_b) > std_a + std_b)


def totals(trials: pd.DataFrame) -> dict[str, float]:
    """The study's compute: trial counts by status, the summed cost columns and, where the trials
    measured it, ``cpu_steal``: the share of CPU time stolen from the machine, weighted by wall time."""
    out: dict[str, float] = {"trials": len(trials)}
    if "status" in trials:
        for status, count in trials["status"].value_counts().items():
            out[str(status)] = int(count)
    for column in COST_COLUMNS:
        if column in trials:
            out[column] = float(trials[column].fillna(0).sum())
    if "cpu_steal" in trials and "wall_s" in trials:
        known = trials["cpu_steal"].notna() & trials["wall_s"].notna()
        if known.any() and trials.loc[known, "wall_s"].sum() > 0:
            wall = trials.loc[known, "wall_s"]
            out["cpu_steal"] = float((trials.loc[known, "cpu_steal"] * wall).sum() / wall.sum())
    return out


def compute_line(spent: dict[str, float]) -> str:
    """``wall 515 s, device 419 s, 399,360 images``, and the CPU steal when notable, from ``totals``."""
    line = (f"wall {spent.get('wall_s', 0):.0f} s, device {spent.get('device_s', 0):.0f} s, "
            f"{spent.get('images_seen', 0):,.0f} images")
    steal = spent.get("cpu_steal", 0.0)
    if steal >= NOTABLE:
        line += (f"; {steal:.0%} of the machine's CPU time was stolen by its hypervisor meanwhile, "
                 "so these timings are slower than the code")
    return line


def describe(table: pd.DataFrame, knobs: list[str], metric: str, baselines: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences about the best configuration, which others it beats beyond the spread, and
    (given the ``baselines`` that ``by_configuration`` was given) how the configurations stand
    against the random-init baseline."""
    if table.empty:
        return [f"no finished trial reports {metric} yet"]
    best = table[table["best"]].iloc[0]
    name = ", ".join(([str(best["method"])] if "method" in table else [])
                     + [f"{k}={best[f'config/{k}']:g}" if isinstance(best[f"config/{k}"], float)
                        else f"{k}={best[f'config/{k}']}" for k in knobs if f"config/{k}" in table])
    lines = [f"best: {name}: {metric} {best['mean']:.3f} ± {_std(best['std'])} over {int(best['n'])} seed(s)"]
    known = table[table["beyond_spread"].notna() & ~table["best"]]
    if len(table) == 1:
        pass  # one configuration: no other to compare it with
    elif known.empty:
        lines.append("differences vs the best are not testable with one seed per configuration (use --seeds 3)")
    else:
        beyond = int(known["beyond_spread"].astype(bool).sum())
        lines.append(f"{beyond} of {len(known)} other configuration(s) trail the best by more than their spread")
    level = baseline_level(baselines, metric)
    if level is not None:  # ``table`` is by_configuration's with the same baselines: its gains and verdicts
        mean, std, n = level
        gains, tested = table["vs_baseline"], table["beats_baseline"].dropna()
        verdict = (f"{int(tested.astype(bool).sum())} of {len(tested)} beat it beyond the spread" if len(tested)
                   else "one seed: whether they beat it is not established (use --seeds 3)")
        gain = (f"{gains.iloc[0]:+.3f} over it" if len(gains) == 1
                else f"configurations {gains.min():+.3f} to {gains.max():+.3f} over it")
        lines.append(f"random init: {metric} {mean:.3f} ± {_std(std)} over {n} seed(s); {gain}; {verdict}")
        if (gains <= 0).all():
            lines.append("no configuration beats the random-init baseline: the 'best' above learned nothing useful")
    return lines


def _std(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def ranked_by(trials: pd.DataFrame, metric: str, mode: str) -> tuple[str, str]:
    """The metric (and mode) a summary ranks configurations by: the study's, or RankMe where the
    study's reads labels and no trial has it but they carry RankMe (data without labels: no kNN,
    no probe). The findings are still judged on the study's own metric."""
    from sslab.results import metrics

    def measured(column: str) -> bool:
        return column in trials and bool(trials[column].notna().any())

    if metrics.needs_labels(metric) and not measured(metric) and measured("rankme"):
        return "rankme", metrics.LABEL_FREE["rankme"].mode or "max"
    return metric, mode
