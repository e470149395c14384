"""What ``sslab report`` and ``sslab status`` print, from a results store alone (no Ray, no torch).

    report(study, root, fmt)     a study's summary: a table, csv or Markdown (``markdown_report``)
    status(study, root)          a study's progress: trials finished of total, unfinished ones, compute
    overview(root)               every study under a results root: its state and trials done of total

Every command they suggest is one the user can type again as it is: with ``--results ROOT`` where
the root is not the default one (``store.results_flag``).
"""

from __future__ import annotations

import math
import sys
import time

def open_store(study, root: str | None):
    """The study's store and its ``study.json``; one line saying how to start it where it has none."""
    from sslab.results.store import ResultsStore, results_flag, results_root

    store = ResultsStore(results_root(root), study.name)
    meta = store.metadata()
    if not meta:
        raise SystemExit(f"sslab: no results for {study.name!r} under {store.location}; run it with: "
                         f"sslab run {study.name}{results_flag(root)}")
    return store, meta


def resume_command(name: str, meta: dict, root: str | None) -> str:
    """The command that continues a study: the one it was started with (``study.json``), with
    ``--results ROOT`` where that is needed and the command lacks it."""
    from sslab.results.store import results_flag

    command = meta.get("command") or f"sslab run {name}"
    flag = results_flag(root)
    return command + flag if flag and "--results" not in command else command


def report(study, root: str | None, fmt: str, setting: str | None = None) -> None:
    from rich.console import Console

    from sslab.results import picks
    from sslab.results.progress import print_summary
    from sslab.results.store import results_flag
    from sslab.results.summary import current_setting

    store, meta = open_store(study, root)
    every = store.read("trials")
    shown = current_setting(every, store.read("baselines"), meta, setting, flags=results_flag(root))
    if fmt == "csv":  # every setting's trials, each row with its setting_id and specification
        every.to_csv(sys.stdout, index=False)
        return
    trials = shown.trials
    if trials.empty:
        which = f"setting {setting}" if setting else "its current setting"
        raise SystemExit(f"sslab: {study.name!r} has no finished trial of {which} under {store.location}; "
                         f"see: sslab status {study.name}{results_flag(root)}")
    knobs, metric, mode = knobs_metric_mode(study, meta)
    # the findings as the study declares them now (a store written before they were declared has none)
    findings = meta.get("findings") or [f.to_dict() for f in study.findings]
    checked = picks.stored_lines(store, trials, metric)  # a label-free pick, evaluated with labels afterwards
    if fmt == "markdown":
        print(markdown_report(study.name, knobs, metric, mode, trials, shown.baselines, findings))
        for line in checked:
            print(f"\n{line}")
        if shown.note:
            print(f"\n{shown.note}")
    else:
        console = Console()
        if not console.is_terminal:
            console.width = max(console.width, 160)
        print_summary(console, study.symbols(), knobs, metric, mode, trials, shown.baselines,
                      defaults=meta.get("defaults") if meta.get("kind") == "search" else None, findings=findings)
        for line in checked:
            console.print(f"  {line}")
        if shown.note:
            console.print(f"  {shown.note}")


def knobs_metric_mode(study, meta: dict) -> tuple[list[str], str, str]:
    knobs = meta.get("knobs") or list(meta.get("grid") or study.knobs)
    from sslab.results.metrics import study_metrics

    (metric, mode), *_ = study_metrics({"metric": study.metric, "mode": study.mode, **meta})
    return knobs, metric, mode


def knob_cell(value) -> str:
    """A knob's value in a table: "–" where the method has no such knob (a study of several methods)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown_report(name: str, knobs: list[str], metric: str, mode: str, trials, baselines,
                    findings: list[dict] | None = None) -> str:
    """The study's results as Markdown tables (per configuration with the gain over random init,
    the paper's findings, then totals), for notes and papers."""
    from sslab.results.progress import yes_no
    from sslab.results.summary import by_configuration, compute_line, describe, judge_all, ranked_by, totals

    ranking, ranking_mode = ranked_by(trials, metric, mode)  # RankMe for data without labels
    per_config = by_configuration(trials, knobs, ranking, ranking_mode, baselines)
    lines = [f"## {name}: {ranking}", ""]
    several = "method" in per_config
    header = [*(["method"] if several else []), *knobs, "mean", "std", "seeds", "gap to best", "beyond spread",
              "vs random init", "beats it"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]

    for _, row in per_config.iterrows():
        cells = [str(row["method"])] if several else []
        cells += [knob_cell(row.get(f"config/{k}")) for k in knobs]
        cells += [f"{row['mean']:.3f}", "–" if row["n"] < 2 else f"{row['std']:.3f}", str(int(row["n"])),
                  "best" if row["best"] else f"{row['gap_to_best']:+.3f}", yes_no(row["beyond_spread"]),
                  "–" if math.isnan(row["vs_baseline"]) else f"{row['vs_baseline']:+.3f}", yes_no(row["beats_baseline"])]
        lines.append("| " + " | ".join(cells) + " |")
    if not baselines.empty and ranking in baselines:
        lines += ["", f"Random-init baseline: {ranking} {baselines[ranking].mean():.3f} over {len(baselines)} seed(s)."]
    lines += ["", *[f"- {line}" for line in describe(per_config, knobs, ranking, baselines)]]
    if findings:
        lines += ["", "| the paper's finding | verdict | better | worse | why |", "|---|---|---:|---:|---|"]
        for _, row in judge_all(findings, trials, metric, mode).iterrows():
            claim = row["claim"] + (f" ({row['source']})" if row["source"] else "")
            sides = [f"{row[f'{s}_mean']:.3f} ± {row[f'{s}_std']:.3f}" if row[f"{s}_n"] > 1
                     and not math.isnan(row[f"{s}_std"]) else
                     (f"{row[f'{s}_mean']:.3f}" if row[f"{s}_n"] else "–") for s in ("better", "worse")]
            lines.append(f"| {claim} | {row['verdict']} | {sides[0]} | {sides[1]} | {row['why']} |")
    spent = totals(trials)
    if findings:
        lines.append("")
    lines += label_free_markdown(trials)
    lines.append(f"- compute: {spent['trials']} trial(s), {compute_line(spent)}")
    return "\n".join(lines)


def label_free_markdown(trials) -> list[str]:
    """The table of ``progress.label_free_table`` in Markdown (no lines when it has no row)."""
    from sslab.results import selection

    rows = selection.label_free_rows(trials)
    if rows.empty:
        return []
    lines = [f"Choosing without labels: rank agreement with the labels (+1: the same order; "
             f"{selection.LEVEL:.0%} bootstrap interval over configurations) and the regret of choosing by each "
             "measure (best minus picked).", "",
             "| method | measure | target | configurations | seeds | Spearman ρ | Kendall τ | regret |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for _, row in rows.iterrows():
        cells = [f"{row[n]:+.2f} [{row[f'{n}_low']:+.2f}, {row[f'{n}_high']:+.2f}]" for n in ("spearman", "kendall")]
        lines.append(f"| {row['method']} | {row['measure']} | {row['target']} | {row['configurations']} | "
                     f"{row['seeds']} | {cells[0]} | {cells[1]} | {row['regret']:.3f} |")
    return [*lines, ""]


def _by_status(spent: dict) -> str:
    return ", ".join(f"{spent[s]} {s}" for s in ("ok", "stopped", "failed") if spent.get(s)) or "none"


def status(study, root: str | None) -> None:
    """Progress of a running or stopped study's current setting, from the results store alone."""
    from sslab.results.lock import holder_is_live, lock_holder
    from sslab.results.store import results_flag
    from sslab.results.summary import compute_line, current_setting, totals

    store, meta = open_store(study, root)
    every = store.read("trials")
    shown = current_setting(every, store.read("baselines"), meta, flags=results_flag(root))
    trials, epochs = shown.trials, store.read("epochs")
    total = meta.get("total_trials")
    spent = totals(trials)
    print(f"{study.name}: {len(trials)} of {total if total is not None else '?'} trial(s) finished ({_by_status(spent)})")
    holder = lock_holder(store.fs, store.lock_path)
    if holder and holder_is_live(holder):
        print(f"  being run by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}")
    epochs_total = (meta.get("profile") or {}).get("epochs")
    if not epochs.empty:
        open_ids = sorted(set(epochs["trial_id"]) - set(every.get("trial_id", [])))
        last = epochs[epochs["trial_id"].isin(open_ids)].groupby("trial_id")["epoch"].max()
        updated = store.updated("epochs")
        ago = f", last report {time.time() - updated:.0f} s ago" if updated else ""
        for trial_id, epoch in last.items():
            print(f"  unfinished: {trial_id} at epoch {int(epoch) + 1}/{epochs_total}{ago}")
    if spent["trials"]:
        print(f"  compute so far: {compute_line(spent)}")
    if shown.note:
        print(f"  {shown.note}")
    if total is not None and len(trials) < total:
        print(f"  to continue: {resume_command(study.name, meta, root)} (finished trials are not rerun)")
    elif total is not None:
        print(f"  summary: sslab report {study.name}{results_flag(root)}")


def stored_studies(root: str) -> list[str]:
    """The study folders under a results root (local or a URI), sorted: those holding ``study.json``
    or a trials table (``trials/``, or an older store's ``trials.parquet``)."""
    import pyarrow.fs as pafs

    from sslab.results.store import filesystem_for

    fs, base = filesystem_for(root)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(base)):
        if entry.type != pafs.FileType.Directory or entry.base_name.startswith("."):
            continue
        names = {f.base_name for f in fs.get_file_info(pafs.FileSelector(entry.path))}
        if {"study.json", "trials", "trials.parquet"} & names:
            found.append(entry.base_name)
    return sorted(found)


def study_state(store, root: str | None, known: bool = True) -> tuple[str, str, str]:
    """(state, trials done of total, what to do next) of one study's store, for ``overview``;
    ``known``: whether this sslab has a study of the store's name (else no command is suggested)."""
    from sslab.results.lock import holder_is_live, lock_holder
    from sslab.results.store import StoreError, results_flag
    from sslab.results.summary import current_setting, totals

    flag = results_flag(root)
    try:
        meta = store.metadata()
        trials = current_setting(store.read("trials"), store.read("baselines"), meta).trials
    except StoreError as err:  # the message names the file, the cause and the way out
        return "unreadable", "–", str(err)
    total = meta.get("total_trials")
    done = f"{len(trials)} of {total if total is not None else '?'} trial(s) ({_by_status(totals(trials))})"
    holder = lock_holder(store.fs, store.lock_path)
    if holder and holder_is_live(holder):
        return "running", done, f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since', '?')}"
    if not known:
        return ("finished" if total is not None and len(trials) >= total else "interrupted"), done, (
            "no study of this name in this sslab (sslab studies lists them); the dashboard reads its store")
    if total is not None and len(trials) >= total:
        return "finished", done, f"summary: sslab report {store.study}{flag}"
    if trials.empty and store.updated("epochs") is None:
        return "not started", done, f"start: {resume_command(store.study, meta, root)}"
    return "interrupted", done, f"resume: {resume_command(store.study, meta, root)}"


def overview(root: str | None, known=lambda name: True) -> None:
    """``sslab status`` without a study: every study under the results root, one line each, with
    the command that continues or summarises it where ``known(name)`` (this sslab has the study)."""
    from sslab.results.store import ResultsStore, results_flag, results_root

    where, flag = results_root(root), results_flag(root)
    names = stored_studies(where)
    if not names:
        print(f"sslab: no study results under {where}; start a study with: sslab run NAME{flag} "
              "(sslab studies lists them)")
        return
    rows = [(name, *study_state(ResultsStore(where, name), root, known(name))) for name in names]
    print(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} under {where}:")
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + f"  {row[3]}")
    print(f"one study's progress: sslab status NAME{flag}")
