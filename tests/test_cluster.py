"""Running on a cluster: TensorBoard's event file read back against metrics.csv."""
import csv

import pytest

from alexnet import board
from conftest import run_train, train_args


@pytest.mark.slow
def test_tensorboard_holds_what_metrics_csv_holds(colour_data, tmp_path):
    pytest.importorskip("tensorboard", reason="the optional extra: pip install -r requirements-cluster.txt")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--epochs", "5", "--batch-size", "4", "--tensorboard"))
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    events = EventAccumulator(str(out / board.FOLDER), size_guidance={"scalars": 0, "images": 0}).Reload()
    for column in ("train_loss", "val_loss", "val_top1", "lr", "train_images_per_s"):
        logged = [(e.step, e.value) for e in events.Scalars(column)]
        assert logged == [(int(r["epoch"]), pytest.approx(float(r[column]), rel=1e-6)) for r in rows], column
    steps_per_epoch = -(-30 // 4)  # 30 training images, batch 4
    lr_steps = [e.step for e in events.Scalars("lr_step")]
    assert lr_steps == list(range(0, 5 * steps_per_epoch, board.LR_EVERY))
    assert [e.step for e in events.Images("confusion_matrix")] == [5]  # every 5 epochs, and the last
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    start = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    settings = start.session_start_info.hparams
    assert settings["recipe"].string_value == "fast" and settings["epochs"].number_value == 5
    assert settings["tensorboard"].number_value == 1  # torch writes a bool as a number
    best = max(float(r["val_top1"]) for r in rows)
    assert [e.value for e in events.Scalars("hparam/best_val_top1")] == [pytest.approx(best)]


def test_without_tensorboard_the_flag_is_one_line(colour_data, tmp_path, monkeypatch, capsys):
    import train

    monkeypatch.setattr(board, "find_spec", lambda name: None)
    code = train.cli(train_args(colour_data, tmp_path / "run", "--tensorboard"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and board.INSTALL in err
    assert not (tmp_path / "run").exists()
