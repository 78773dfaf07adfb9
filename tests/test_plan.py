"""--budget: the planner with injected costs, and tiny budgeted runs (no timing is asserted
beyond what the plan itself promises)."""
import csv
import re

import pytest
import torch

from alexnet import budget, lr_finder
from alexnet import settings
import train
from alexnet.machine import Machine
from conftest import run_train, train_args
from alexnet.errors import ArgumentError
from alexnet.preemption import TrainingStopped


def budget_args(data, out, budget: str) -> list[str]:
    """The tests' small settings, with a budget instead of --epochs."""
    args = train_args(data, out, "--img-size", "96", "--img-size-start", "64", "--budget", budget)  # crops 64 -> 80
    i = args.index("--epochs")
    return args[:i] + args[i + 2:]


COSTS = budget.Costs({128: 0.3, 176: 0.6, 224: 1.0}, val_s=3.0, epoch_overhead_s=1.5)
LINEAR = budget.Resizing(128, 224)  # --img-size-start 128, growing from the first epoch to 3/4 of the run
LATE = budget.Resizing(128, 224, (0.45, 0.85))  # --recipe budget's ramp


def test_crops_grow_between_the_fractions_of_the_ramp():
    assert budget.Resizing(0, 224).sizes(3) == (224, 224, 224)  # no progressive resizing
    assert budget.Resizing(128, 192).sizes(7) == (128, 144, 160, 176, 192, 192, 192)
    assert budget.Resizing(128, 192, (0.45, 0.85)).sizes(7) == (128, 128, 128, 144, 176, 192, 192)
    assert budget.Resizing(128, 192, (0.45, 0.85)).sizes(20) == (128,) * 10 + (144, 160, 160, 160, 176) + (192,) * 5
    assert budget.Resizing(128, 192, (0.45, 0.85)).sizes(1) == (128,)


@pytest.mark.parametrize("resizing", [LINEAR, LATE], ids=["linear", "late"])
@pytest.mark.parametrize("seconds", [60, 150, 700, 2000, 20000])
def test_the_plan_fits_the_budget_and_fills_it(seconds, resizing):
    chosen = budget.fit_budget(seconds, resizing, 87, COSTS)
    used = budget.plan_seconds(chosen, COSTS)
    assert used <= seconds
    # one more step would not fit: the schedule ends when the time does
    longer = budget.Plan(chosen.epochs, chosen.sizes, 87, chosen.last_epoch_steps + 1)
    assert chosen.last_epoch_steps == 87 or budget.plan_seconds(longer, COSTS) > seconds
    if chosen.last_epoch_steps == 87:  # a whole last epoch: then not even one step of another epoch fits
        assert budget.fit_budget(seconds, resizing, 87, COSTS).epochs == chosen.epochs
        assert seconds - used < COSTS.val_s + COSTS.epoch_overhead_s + COSTS.step_at(224)
    # progressive resizing: from the start size, growing, the final size from the ramp's end on
    assert chosen.sizes == resizing.sizes(chosen.epochs)
    assert chosen.sizes[0] == 128 and list(chosen.sizes) == sorted(chosen.sizes)
    final = int(chosen.epochs * (1 - resizing.ramp[1]))
    assert chosen.sizes[len(chosen.sizes) - final:] == (224,) * final


def test_the_learning_rate_reaches_the_end_of_its_cosine_at_the_budget():
    cfg = settings.resolve_config(train.get_args_parser().parse_args(["--budget", "10m"]))[0]
    chosen = budget.fit_budget(600, LINEAR, 87, COSTS)
    lrs = [train.lr_at(cfg, chosen, step) for step in range(chosen.total_steps + 1)]
    assert max(lrs) == pytest.approx(cfg.lr)
    assert lrs[chosen.total_steps] == pytest.approx(0.0, abs=1e-12) and lrs[-2] < 0.01 * cfg.lr


@pytest.mark.slow
def test_a_budget_shorter_than_one_epoch_is_none_here_and_one_line_in_train(colour_data, tmp_path, capsys):
    assert budget.fit_budget(2.0, LINEAR, 87, COSTS) is None
    assert train.cli(budget_args(colour_data, tmp_path / "o", "1s")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --budget 1s: one epoch takes about")


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("600", 600),
                                           ("2.5m", 150)])
def test_durations(text, seconds):
    assert budget.parse_duration(text) == seconds


@pytest.mark.parametrize("argv, message", [
    (["--budget", "10m", "--epochs", "5"], "--budget 10m and --epochs 5: give one of the two"),
    (["--budget", "soon"], "--budget soon: not a duration"),
    (["--budget", "0s"], "--budget 0s: must be more than 0 s"),
])
def test_budget_arguments_are_checked(argv, message):
    with pytest.raises(ArgumentError, match=message):
        settings.resolve_config(train.get_args_parser().parse_args(argv))


def test_budget_uses_its_recipe_unless_told_otherwise():
    cfg = settings.resolve_config(train.get_args_parser().parse_args(["--budget", "5m"]))[0]
    assert (cfg.recipe, cfg.budget, cfg.img_size_start, cfg.img_size_end, cfg.sched) == ("budget", 300.0, 128, 192,
                                                                                          "cosine")
    assert (cfg.img_size_ramp, cfg.lr, cfg.dropout) == ((0.45, 0.85), 4e-4, 0.25)
    cfg = settings.resolve_config(train.get_args_parser().parse_args(["--budget", "5m", "--img-size", "112"]))[0]
    assert (cfg.img_size_start, cfg.img_size_end) == (0, 96)  # 6/7 of the size; no smaller first crops at 112 px
    cfg = settings.resolve_config(train.get_args_parser().parse_args(["--budget", "5m", "--recipe", "fast"]))[0]
    assert (cfg.recipe, cfg.img_size_start, cfg.train_size_end) == ("fast", 0, 224)


@pytest.mark.slow
def test_a_tiny_budgeted_run_with_lr_auto_ends_its_schedule_and_runs_train_py_own_step(colour_data, tmp_path,
                                                                                       monkeypatch, capsys):
    """--lr auto --budget 30s: the range test, the budget's timing of a step and the training
    all call train.train_step (counted here: on the run's first model, a throwaway copy, and the
    model trained with the suggestion); the run ends its cosine at the plan's last step, in time."""
    real_step, models = train.train_step, []

    def counted(cfg, machine, trainer, images, targets):
        models.append(id(trainer.model))
        return real_step(cfg, machine, trainer, images, targets)

    monkeypatch.setattr(train, "train_step", counted)
    args = budget_args(colour_data, tmp_path, "30s")  # room for a slow machine's set-up
    args[args.index("--lr") + 1] = "auto"
    capsys.readouterr()
    summary = run_train(args)
    out = capsys.readouterr().out
    ckpt = torch.load(tmp_path / "last.pth", weights_only=True)
    chosen = budget.Plan(**ckpt["plan"])
    assert ckpt["epoch"] == chosen.epochs == len(summary["history"])  # the stored plan is what ran
    tested = int(re.search(r"--lr auto: (\d+) steps from", out).group(1))
    order = list(dict.fromkeys(models))  # each model in the order it first stepped
    timed = lr_finder.TIMING_STEPS  # under a budget, the range test first times a step or two
    assert len(order) == 3 and ckpt["config"]["lr_mode"] == "auto"
    assert [models.count(m) for m in order] == [timed + tested, len(models) - timed - tested - chosen.total_steps,
                                                chosen.total_steps]
    assert models.count(order[1]) >= 2  # the budget timed steps on its throwaway copy
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed) and elapsed[-1] <= 30
    if "the run ends now" in out:
        # a machine so slow or busy that, after some epoch, not one more step fitted: it stopped
        # at that epoch instead of overrunning (the schedule's cut is tested with injected costs below)
        return
    assert chosen.epochs >= 2
    cfg = settings.Config(**ckpt["config"])
    assert float(rows[-1]["lr"]) == pytest.approx(train.lr_at(cfg, chosen, chosen.total_steps - 1))
    assert train.lr_at(cfg, chosen, chosen.total_steps) == pytest.approx(0.0, abs=1e-12)  # the cosine's end
    assert [int(r["crop_size"]) for r in rows][0] == 64 and int(rows[-1]["crop_size"]) == 80


@pytest.mark.slow
def test_a_budgeted_run_resumes_its_own_plan(colour_data, tmp_path, monkeypatch):
    finish = train.finish_epoch

    def stop_after_the_first_epoch(cfg, machine, trainer, state, row, classes):
        finish(cfg, machine, trainer, state, row, classes)
        if state.epoch == 1:
            raise TrainingStopped("stopped by the test", 130)

    monkeypatch.setattr(train, "finish_epoch", stop_after_the_first_epoch)
    with pytest.raises(TrainingStopped):
        run_train(budget_args(colour_data, tmp_path, "20s"))
    monkeypatch.undo()
    before = torch.load(tmp_path / "last.pth", weights_only=True)
    assert before["epoch"] == 1 and before["plan"]["epochs"] >= 2
    summary = run_train(["--resume", str(tmp_path / "last.pth"), "--quiet", "--workers", "0"])
    after = torch.load(tmp_path / "last.pth", weights_only=True)
    assert after["plan"] == before["plan"] and after["epoch"] == before["plan"]["epochs"]
    elapsed = [r["elapsed_s"] for r in summary["history"]]
    assert elapsed == sorted(elapsed)  # the clock goes on from what the first part had used
    with pytest.raises(ArgumentError, match="is a --budget run"):
        settings.resolve_config(train.get_args_parser().parse_args(["--resume", str(tmp_path / "last.pth"),
                                                                  "--epochs", "9"]))


@pytest.mark.parametrize("slower", [0.5, 1.0, 1.6, 30.0])
def test_after_each_epoch_the_plan_is_refitted_to_what_the_epoch_really_took(slower, capsys):
    """An epoch that took ``slower`` times its prediction: the rest is re-planned with costs
    scaled by as much and ends within the time left; when no epoch fits, the run ends now."""
    cfg = settings.resolve_config(train.get_args_parser().parse_args(["--budget", "700s"]))[0]
    machine = Machine(torch.device("cpu"), "fp32")
    started = 1000.0
    first = budget.fit_budget(700, cfg.resizing, 87, COSTS)
    state = train.RunState(first, started, COSTS, epoch=1)
    train_s = slower * 87 * COSTS.step_at(first.sizes[0])
    row = {"crop_size": first.sizes[0], "train_seconds": train_s, "seconds": train_s + 3.0}
    clock = started + 5.0 + row["seconds"] + 1.5  # set-up, the epoch, its saving
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(budget.time, "monotonic", lambda: clock)
        budget.replan(cfg, machine, state, row, epoch_wall=row["seconds"] + 1.5)
    assert state.costs.step_at(160) == pytest.approx(slower * COSTS.step_at(160))
    left = 0.99 * 700 - 1 - (clock - started)  # budget_seconds_left at the mocked clock
    if slower == 30.0:  # the first epoch alone took more than the whole budget was planned for
        assert left < 0 and state.plan.epochs == 1 and state.plan.total_steps == 87
        assert "the run ends now" in capsys.readouterr().out
        return
    assert budget.plan_seconds(state.plan, state.costs, first_epoch=1) <= left
    assert state.plan.epochs > 1 and state.plan.sizes[0] == first.sizes[0] and state.plan.sizes[-1] == 192
    longer = budget.Plan(state.plan.epochs, state.plan.sizes, 87, state.plan.last_epoch_steps + 1)
    assert state.plan.last_epoch_steps == 87 or budget.plan_seconds(longer, state.costs, first_epoch=1) > left
