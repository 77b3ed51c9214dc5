"""The benchmark suite on a toy task with tiny budgets: accounting, intervals, resuming."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from bench.suite import cli, runner, store, tasks
from bench.suite.methods import METHODS, TRIAL_METHODS, trials
from bench.suite.methods.base import StepCosts
from bench.suite.presets import Preset
from bench.suite.space import JointSpace
from bench.suite.stats import bootstrap_ci, mean_ci, median_ci

#: trials of 8 steps; 6 trial costs per cell (enough to cover one AutoHAS call's fixed overhead)
TOY = dict(seeds=(0,), budget_trials=6, trial_steps=8, spread_configs=3, tasks=("toy",))


def _toy() -> dict[str, np.ndarray]:
    """A small separable 1-D problem: class c is a bump at position 4c + 2, plus noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(0, 0.3, (300, 1, 16)).astype(np.float32)
    x[np.arange(300), 0, 4 * y + 2] += 3.0
    return {"x": x[:200], "y": y[:200], "x_test": x[200:], "y_test": y[200:]}


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The toy task registered for the module, its file in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(tasks.TASKS, "toy", tasks.Task("toy", "toy bumps", _toy))
        patch.setattr(tasks, "TASK_DIR", tmp_path_factory.mktemp("tasks"))
        yield


@pytest.fixture(scope="module")
def suite(toy_task: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every method once on the toy task (AutoHAS also at half the budget), really run and timed."""
    out = tmp_path_factory.mktemp("suite")
    preset = Preset("toy", ladder=(0.5,), **TOY)  # type: ignore[arg-type]
    seen: dict[str, Any] = {"studies": [], "configs": [], "retrain_cpu": []}
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        _spy(patch, seen)
        try:
            results = runner.execute(preset, out / "toy.jsonl", threads=1)
        finally:
            torch.set_num_threads(threads)
    seen.update(preset=preset, results=results, out=out)
    yield seen


def _spy(patch: pytest.MonkeyPatch, seen: dict[str, Any]) -> None:
    """Record Optuna studies, AutoHAS configs and the CPU time of every final retraining."""
    from bench.suite.meter import cpu_seconds
    from bench.suite.methods import autohas

    make_study, search, final = trials.make_study, autohas.search, runner.final_model

    def study(*args: Any) -> optuna.Study:
        seen["studies"].append(make_study(*args))
        return seen["studies"][-1]

    def spied_search(config: Any, on_progress: Any = None) -> dict[str, Any]:
        seen["configs"].append(config)
        return search(config, on_progress)

    def timed_final(*args: Any) -> torch.nn.Module:
        start = cpu_seconds()
        model = final(*args)
        seen["retrain_cpu"].append(cpu_seconds() - start)
        return model

    patch.setattr(trials, "make_study", study)
    patch.setattr(autohas, "search", spied_search)
    patch.setattr(runner, "final_model", timed_final)


def _cells(suite: dict[str, Any]) -> list[dict[str, Any]]:
    return list(suite["results"].cells.values())


def _calibration(suite: dict[str, Any]) -> dict[str, Any]:
    return suite["results"].calibrations["toy"]


def test_every_method_ran_and_its_incumbent_is_in_the_joint_space(suite: dict[str, Any]) -> None:
    cells = _cells(suite)
    assert sorted({c["method"] for c in cells}) == sorted(METHODS)
    assert len(cells) == len(METHODS) + 1  # AutoHAS at half the budget too
    for cell in cells:
        assert "error" not in cell, cell
        assert cell["in_space"], cell["method"]
        assert 0.0 <= cell["test_accuracy"] <= 1.0 and cell["params"] > 0
        assert cell["latency_ms"] > 0 and cell["threads"] == 1


def test_every_method_searches_the_same_joint_space(suite: dict[str, Any]) -> None:
    """The baselines search what AutoHAS's joint search reports it searched (the engine's default
    joint space on this task); the NAS-only, HPO-only and two-stage runs search parts of it."""
    data = runner.load_dataset(str(tasks.task_path("toy")), seed=0)
    joint = _calibration(suite)["space"]
    default = JointSpace.for_data(data).space.to_json()
    assert [c["name"] for c in joint["arch"]] == [c["name"] for c in default["arch"]]
    assert joint["hparams"] == default["hparams"]
    allowed = {c["name"]: set(map(str, c["candidates"])) for c in joint["arch"] + joint["hparams"]}
    for config in suite["configs"]:
        assert config.retrain_steps == 0 and config.dataset == str(tasks.task_path("toy"))
    for cell in _cells(suite):
        if not cell["method"].startswith(("autohas", "nas-then")):
            continue
        infos = [cell["info"]] if "space" in cell["info"] else list(cell["info"].values())
        for info in infos:
            space = info["space"]
            if cell["method"] in ("autohas", "autohas-reinforce"):
                assert space == joint
            for choice in space["arch"] + space["hparams"]:
                if choice["kind"] == "categorical":
                    assert set(map(str, choice["candidates"])) <= allowed[choice["name"]]


def _search_budget(cell: dict[str, Any], suite: dict[str, Any]) -> float:
    return cell["budget_cpu"] - _calibration(suite)["trial_cpu"]


def test_trial_methods_overrun_their_search_budget_by_at_most_their_last_trial(
    suite: dict[str, Any],
) -> None:
    trial = _calibration(suite)["trial_cpu"]
    for cell in _cells(suite):
        if cell["method"] not in TRIAL_METHODS:
            continue
        starts, search = cell["info"]["starts"], cell["search"]["cpu"]
        assert len(starts) == cell["trials"] >= 2
        assert starts == sorted(starts) and starts[-1] < _search_budget(cell, suite)
        assert search - starts[-1] <= 3 * trial  # the overrun is one trial (up to 3x the mean)


def test_autohas_is_planned_within_its_search_budget(suite: dict[str, Any]) -> None:
    """The step count is the largest whose estimated cost fits; the actual cost is measured."""
    for cell in _cells(suite):
        info = cell["info"]
        stages = (
            [info]
            if "estimated_cpu" in info
            else [v for v in info.values() if isinstance(v, dict) and "planned_steps" in v]
        )
        for stage in stages:
            planned = stage["estimated_cpu"] * stage["cost_factor"]
            assert planned <= _search_budget(cell, suite) or stage["planned_steps"] == 1
            # the engine's time budget caps the loop however dear the steps turn out
            assert stage["search_steps"] <= stage["planned_steps"]
            assert stage["stop_reason"] in ("step budget",) or "time budget" in stage["stop_reason"]
        if cell["method"] == "ws-random":  # stops at the budget, between two cheap steps
            assert cell["search"]["cpu"] <= _search_budget(cell, suite) + 0.2


def test_no_method_exceeds_its_budget_by_much_more_than_one_trial(suite: dict[str, Any]) -> None:
    trial = max(s["cpu"] for s in _calibration(suite)["spread"])
    for cell in _cells(suite):
        assert cell["total"]["cpu"] <= 1.25 * cell["budget_cpu"] + 2 * trial, cell["method"]


def test_the_final_retraining_is_counted(suite: dict[str, Any]) -> None:
    cells = _cells(suite)
    assert len(suite["retrain_cpu"]) == len(cells)
    for cell, retrain in zip(cells, suite["retrain_cpu"], strict=True):
        assert cell["total"]["cpu"] - cell["search"]["cpu"] >= 0.9 * retrain - 0.01


def test_the_incumbent_is_the_best_on_validation(suite: dict[str, Any]) -> None:
    for cell in _cells(suite):
        if cell["method"] in TRIAL_METHODS:
            vals = [p[2] for p in cell["curve"]]
            assert vals == sorted(vals)  # best-so-far validation accuracy never drops


def test_tpe_is_a_real_optuna_study(suite: dict[str, Any]) -> None:
    studies = suite["studies"]
    assert len(studies) == 2  # tpe and tpe-hyperband
    assert all(isinstance(s.sampler, optuna.samplers.TPESampler) for s in studies)
    assert isinstance(studies[1].pruner, optuna.pruners.HyperbandPruner)
    by_method = {c["method"]: c for c in _cells(suite)}
    complete = studies[0].get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == by_method["tpe"]["trials"]


def test_the_report_and_plots_render(suite: dict[str, Any]) -> None:
    preset, out = suite["preset"], suite["out"]
    text = cli.report(preset, out / "toy.jsonl", False, "test", plot_dir=out)
    assert "### toy" in text and "nan" not in text and "too few for a verdict" in text
    cli.report(preset, out / "toy.jsonl", True, "test", plot_dir=out, section=out / "R.md")
    assert (out / "suite-toy-curves.png").stat().st_size > 0
    assert "<!-- BEGIN suite-toy -->" in (out / "R.md").read_text()


def test_the_command_line_reports_a_results_file(
    suite: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = suite["out"] / "toy.jsonl"
    argv = ["--quick", "--tasks", "toy", "--report", "--no-write", "--results", str(path)]
    assert cli.main(argv) == 0
    assert "### toy" in capsys.readouterr().out


def test_bootstrap_interval_on_a_known_distribution() -> None:
    """The interval of a normal sample's mean is about mean +- 1.96 sd / sqrt(n), and covers."""
    rng = np.random.default_rng(3)
    sample = rng.normal(0.7, 0.05, 400)
    mean, lo, hi = mean_ci(list(sample))
    assert abs(mean - sample.mean()) < 1e-12
    half = 1.96 * 0.05 / math.sqrt(400)
    assert lo < 0.7 < hi and abs((hi - lo) / 2 - half) < 0.15 * half
    covered = sum(
        lo <= 0.7 <= hi
        for lo, hi in (bootstrap_ci(rng.normal(0.7, 0.05, 30), resamples=1000) for _ in range(200))
    )
    assert 0.88 <= covered / 200 <= 0.99


def test_median_interval_of_ratios_with_infinities() -> None:
    mid, lo, hi = median_ci([0.5, 2.0, 3.0, math.inf, math.nan])
    assert mid == 2.5 and lo == 0.5 and math.isinf(hi)
    assert all(math.isnan(v) for v in median_ci([math.nan]))


def _fake_calibration(path: Path) -> None:
    record = {"task": "toy", "trial_cpu": 1.0, "spread": [], "steps": {}, "sizes": {}, "space": {}}
    store.append(path, "calibration", record)


def test_a_killed_run_resumes_with_only_the_missing_cells(toy_task: None, tmp_path: Path) -> None:
    preset = Preset("toy", ladder=(0.25,), **{**TOY, "seeds": (0, 1)})  # type: ignore[arg-type]
    path = tmp_path / "r.jsonl"
    store.open_results(path, preset.settings(1))
    _fake_calibration(path)
    calls: list[runner.Cell] = []

    def fake(cell: runner.Cell, calibration: Any, preset: Preset, factor: float) -> dict[str, Any]:
        if len(calls) == 5:
            raise KeyboardInterrupt  # killed in the sixth cell
        calls.append(cell)
        return {**runner._key(cell), "test_accuracy": 0.5}

    with pytest.raises(KeyboardInterrupt):
        runner.execute(preset, path, 1, runner=fake)
    with path.open("a") as f:
        f.write('{"kind": "cell", "task": "to')  # a line torn by the kill
    first, calls[:] = list(calls), []
    runner.execute(preset, path, 1, runner=lambda *a: calls.append(a[0]) or runner._key(a[0]))
    everything = runner.plan(preset)
    assert first == everything[:5] and calls == everything[5:]
    assert len(store.load(path).cells) == len(everything)


def test_resuming_under_other_settings_is_refused(toy_task: None, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store.open_results(path, Preset("toy", **TOY).settings(1))  # type: ignore[arg-type]
    other = Preset("toy", **{**TOY, "trial_steps": 13})  # type: ignore[arg-type]
    with pytest.raises(SystemExit, match="other settings"):
        store.open_results(path, other.settings(1))
    assert json.loads(path.read_text().splitlines()[0])["kind"] == "header"
    settings = Preset("toy", **TOY).settings(1)  # type: ignore[arg-type]
    newer = {**settings, "engine": {**settings["engine"], "a_new_field": 1}}
    assert store.compatible(settings, newer)  # a field the engine added since is no change
    changed = {**settings, "engine": {**settings["engine"], "steps": 1}}
    assert not store.compatible(settings, changed)


def test_a_file_measured_on_another_machine_is_neither_resumed_nor_rerun(
    toy_task: None, tmp_path: Path
) -> None:
    preset = Preset("toy", **TOY)  # type: ignore[arg-type]
    path = tmp_path / "r.jsonl"
    store.open_results(path, preset.settings(1), machine="Some Other CPU, 2 cores")
    assert store.load(path).header["machine"] == "Some Other CPU, 2 cores"  # type: ignore[index]
    before = path.read_text()
    with pytest.raises(SystemExit, match="measured on Some Other CPU, 2 cores, this is "):
        store.open_results(path, preset.settings(1))
    with pytest.raises(SystemExit, match="measured on Some Other CPU"):
        runner.execute(preset, path, 1, runner=lambda *a: runner._key(a[0]), rerun=("random",))
    assert path.read_text() == before  # nothing dropped
    here = tmp_path / "here.jsonl"
    store.open_results(here, preset.settings(1))
    assert store.load(here).header["machine"] == store.this_machine()  # type: ignore[index]
    store.open_results(here, preset.settings(1))  # the same machine resumes


def test_rerun_drops_one_methods_cells_and_runs_only_them_again(
    toy_task: None, tmp_path: Path
) -> None:
    preset = Preset("toy", ladder=(), **{**TOY, "methods": ("random", "tpe")})  # type: ignore[arg-type]
    path = tmp_path / "r.jsonl"
    store.open_results(path, preset.settings(1))
    _fake_calibration(path)
    runner.execute(preset, path, 1, runner=lambda *a: {**runner._key(a[0]), "test_accuracy": 0.5})
    calls: list[runner.Cell] = []

    def again(cell: runner.Cell, *_: Any) -> dict[str, Any]:
        calls.append(cell)
        return {**runner._key(cell), "test_accuracy": 0.9}

    runner.execute(preset, path, 1, runner=again, rerun=("tpe",))
    assert [c.method for c in calls] == ["tpe"]
    cells = store.load(path).cells
    assert {k[1]: r["test_accuracy"] for k, r in cells.items()} == {"random": 0.5, "tpe": 0.9}
    with pytest.raises(SystemExit, match="unknown methods"):
        runner.execute(preset, path, 1, runner=again, rerun=("nope",))
    assert len(store.load(path).cells) == 2  # a refused rerun loses nothing


def test_a_time_capped_search_is_estimated_by_the_steps_that_ran() -> None:
    """The cost factor compares actual cost with this: estimating the planned steps instead made
    every time-capped search look cheap, and the next plan larger."""
    costs = StepCosts(warmup=1.0, alternate=2.0, overhead=5.0)
    assert costs.estimate_run(100, 10, 0.25) == 5 + 10 * 1.0  # stopped inside its warm-up
    assert costs.estimate_run(100, 40, 0.25) == 5 + 25 * 1.0 + 15 * 2.0
    assert costs.estimate_run(100, 100, 0.25) == costs.estimate(100, 0.25)
