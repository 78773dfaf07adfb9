"""The paper's design choices as switches of model.py's AlexNet (each one's layers, shapes and
parameter count; the default net unchanged; the two columns really apart), reached from
train.py as --variant, kept by checkpoints, and measured by tools/study.py."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import evaluate
import export
import predict
import train
from alexnet import settings, stats
from alexnet.checkpoint import from_checkpoint, load_checkpoint
from alexnet.errors import ArgumentError, CheckpointError
from checkpoint_fixtures import FOLDER, inflate
from conftest import ROOT, make_colour_folder, one_error_line, run_train, train_args
from model import ARCHS, VARIANTS, AlexNet, check_switches, default_switches, grad_cam, switches_of, variant_of

sys.path.insert(0, str(ROOT / "tools"))
import study  # noqa: E402


def convs(net: AlexNet) -> list[nn.Conv2d]:
    return [m for m in net.features if isinstance(m, nn.Conv2d)]


def parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv_parameters(in_ch: int, out_ch: int, kernel: int, groups: int = 1) -> int:
    return out_ch * (in_ch // groups) * kernel * kernel + out_ch


def alexnet_parameters(widths, hidden, classes, groups=(1, 1, 1, 1, 1), removed=0) -> int:
    """By hand, from the paper's figure 2: five convolutions, three fully connected layers."""
    kernels, total, in_ch = (11, 5, 3, 3, 3), 0, 3
    for number, (out_ch, kernel, g) in enumerate(zip(widths, kernels, groups), 1):
        if number == removed:
            continue
        total += conv_parameters(in_ch, out_ch, kernel, g)
        in_ch = out_ch
    return total + (widths[4] * 36 + 1) * hidden + (hidden + 1) * hidden + (hidden + 1) * classes


def test_the_default_net_is_the_tutorials_and_every_arch_keeps_its_switches():
    net = AlexNet(num_classes=5)
    assert net.switches == dict(activation="relu", lrn=False, pool=3, columns=1, remove_conv=0)
    assert [c.groups for c in convs(net)] == [1] * 5
    assert parameters(net) == alexnet_parameters(ARCHS["tutorial"].widths, 2048, 5)
    assert AlexNet(arch="torchvision").switches == default_switches("torchvision") == net.switches
    # the paper's net: 60,965,224 parameters, the number usually quoted for the two-GPU AlexNet
    paper = AlexNet(num_classes=1000, arch="paper")
    assert [c.groups for c in convs(paper)] == [1, 2, 1, 2, 2]
    assert parameters(paper) == 60_965_224
    assert parameters(AlexNet(num_classes=1000, arch="paper", columns=1)) == \
        alexnet_parameters(ARCHS["paper"].widths, 4096, 1000)


@pytest.mark.parametrize("activation, kind", [("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("relu", nn.ReLU)])
def test_the_activation_is_every_layers(activation, kind):
    net = AlexNet(num_classes=5, activation=activation)
    found = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid))]
    assert len(found) == 7 and all(isinstance(m, kind) for m in found)  # five convolutions, two hidden FC layers
    assert parameters(net) == parameters(AlexNet(num_classes=5))
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert grad_cam(net.eval(), torch.randn(1, 3, 64, 64)).shape == (1, 64, 64)


def test_response_normalisation_follows_the_first_two_convolutions_with_the_papers_constants():
    net = AlexNet(num_classes=5, lrn=True)
    layers = list(net.features)
    lrn = [i for i, m in enumerate(layers) if isinstance(m, nn.LocalResponseNorm)]
    conv_at = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert lrn == [conv_at[0] + 2, conv_at[1] + 2]  # after the convolution's ReLU, before its pooling
    assert [(layers[i].size, layers[i].alpha, layers[i].beta, layers[i].k) for i in lrn] == [(5, 1e-4, 0.75, 2.0)] * 2
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in AlexNet(arch="paper", lrn=False).features)
    assert parameters(net) == parameters(AlexNet(num_classes=5))


@pytest.mark.parametrize("pool", [2, 3])
def test_the_pooling_window_overlaps_or_not_and_keeps_the_feature_sizes(pool):
    net = AlexNet(num_classes=5, pool=pool).eval()
    pools = [m for m in net.features if isinstance(m, nn.MaxPool2d)]
    assert [(m.kernel_size, m.stride) for m in pools] == [(pool, 2)] * 3
    # 224 px: 55 -> 27 -> 13 -> 6 either way, so the FC layers see what they always did
    assert net.features(torch.randn(1, 3, 224, 224)).shape == (1, 128, 6, 6)
    assert net(torch.randn(1, 3, 63, 63)).shape == (1, 5)


def test_two_columns_group_convolutions_2_4_and_5_and_keep_the_halves_apart():
    net = AlexNet(num_classes=5, columns=2).eval()
    c = convs(net)
    assert [m.groups for m in c] == [1, 2, 1, 2, 2]
    assert parameters(net) == alexnet_parameters(ARCHS["tutorial"].widths, 2048, 5, groups=(1, 2, 1, 2, 2))
    for conv in (c[1], c[3], c[4]):
        x = torch.randn(1, conv.in_channels, 9, 9)
        moved = x.clone()
        moved[:, : conv.in_channels // 2] += torch.randn_like(moved[:, : conv.in_channels // 2])
        before, after = conv(x), conv(moved)
        half = conv.out_channels // 2
        torch.testing.assert_close(after[:, half:], before[:, half:])  # the other column never sees it
        assert not torch.allclose(after[:, :half], before[:, :half])
    x = torch.randn(1, c[2].in_channels, 9, 9)
    moved = x.clone()
    moved[:, 0] += 1.0
    assert not torch.allclose(c[2](moved)[:, -1], c[2](x)[:, -1])  # convolution 3 joins the columns


@pytest.mark.parametrize("removed", [3, 4])
def test_a_middle_convolution_can_be_left_out(removed):
    net = AlexNet(num_classes=5, remove_conv=removed).eval()
    c = convs(net)
    assert len(c) == 4 and net.conv_numbers == [n for n in range(1, 6) if n != removed]
    assert parameters(net) == alexnet_parameters(ARCHS["tutorial"].widths, 2048, 5, removed=removed)
    assert net(torch.randn(2, 3, 224, 224)).shape == (2, 5)
    paper = AlexNet(num_classes=10, arch="paper", init_weights=True, remove_conv=removed)
    expected_bias = {1: 0, 2: 1, 3: 0, 4: 1, 5: 1}  # paper section 5, by the convolution's number
    assert [conv.bias.mean().item() for conv in convs(paper)] == [expected_bias[n] for n in paper.conv_numbers]


def test_bad_switches_are_refused_by_name():
    for bad, word in [(dict(activation="gelu"), "activation"), (dict(pool=4), "pool"), (dict(columns=3), "columns"),
                      (dict(remove_conv=2), "remove_conv"), (dict(lrn=1), "lrn")]:
        with pytest.raises(ValueError, match=word):
            AlexNet(num_classes=5, **bad)
    with pytest.raises(ValueError, match="unknown switch 'depth'"):
        check_switches(default_switches("tutorial") | {"depth": 3})


def test_variant_names_map_to_switches_and_back():
    assert switches_of(("tanh", "pool2", "no-conv4")) == dict(activation="tanh", pool=2, remove_conv=4)
    with pytest.raises(ValueError, match="both set activation"):
        switches_of(("tanh", "sigmoid"))
    for arch in ARCHS:
        for name in VARIANTS:
            switches = default_switches(arch) | switches_of([name])
            assert switches_of(variant_of(arch, switches)) == {k: v for k, v in switches.items()
                                                                if v != default_switches(arch)[k]}


def test_train_help_lists_variant_in_the_model_group_and_refuses_a_conflict(capsys):
    text = settings.get_args_parser().format_help()
    model_group = text.split("\nmodel:\n")[1].split("\noptimisation:\n")[0]
    assert "--variant SWITCH [SWITCH ...]" in model_group and "two-column" in model_group
    cfg = settings.resolve_config(settings.get_args_parser().parse_args(["--variant", "tanh", "pool2"]))[0]
    assert cfg.variant == ("tanh", "pool2")
    with pytest.raises(ArgumentError, match="--variant tanh sigmoid: sets one switch twice"):
        settings.resolve_config(settings.get_args_parser().parse_args(["--variant", "tanh", "sigmoid"]))
    assert settings.command_line(cfg).endswith("--variant tanh pool2")


def test_the_paper_checkpoints_that_shipped_still_load_as_the_one_column_net_they_are(tmp_path):
    shipped = torch.load(FOLDER / "format3-e51663e-paper.pth", weights_only=True)
    path = tmp_path / "paper.pth"
    torch.save(inflate(shipped), path)
    ckpt = load_checkpoint(str(path))
    assert ckpt["net"]["columns"] == 1 and ckpt["config"]["variant"] == ("one-column",)
    net = from_checkpoint(ckpt, str(path))
    assert [c.groups for c in convs(net)] == [1] * 5 and net.switches["lrn"]
    argv = ["--resume", str(path), "--epochs", "2"]
    resumed = settings.resolve_config(settings.get_args_parser().parse_args(argv))[0]
    assert resumed.variant == ("one-column",)
    bad = dict(ckpt, net=dict(ckpt["net"], pool=5))
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth: field 'net': pool must be one of 2, 3, not 5"):
        load_checkpoint(str(tmp_path / "bad.pth"))


def test_a_file_without_switches_gets_its_columns_from_its_weights(tmp_path):
    for columns in (1, 2):
        path = tmp_path / f"paper{columns}.pth"
        torch.save(AlexNet(num_classes=3, arch="paper", columns=columns).state_dict(), path)  # a bare state_dict
        ckpt = load_checkpoint(str(path))
        assert ckpt["net"] == default_switches("paper") | {"columns": columns}
        assert [c.groups for c in convs(from_checkpoint(ckpt, str(path)))] == [1, columns, 1, columns, columns]


@pytest.mark.slow
def test_a_variant_trains_saves_its_switches_and_every_script_rebuilds_it(colour_data, tmp_path, capsys):
    out = tmp_path / "run"
    run_train(train_args(colour_data, out, "--epochs", "1", "--variant", "tanh", "lrn", "pool2", "two-column",
                         "no-conv3", "--aug", "off"))
    ckpt = load_checkpoint(str(out / "best.pth"))
    assert ckpt["net"] == dict(activation="tanh", lrn=True, pool=2, columns=2, remove_conv=3)
    assert [c.groups for c in convs(from_checkpoint(ckpt, "best.pth"))] == [1, 2, 2, 2]
    assert predict.cli([str(colour_data / "val"), "--weights", str(out / "best.pth"), "--no-show"]) == 0
    assert evaluate.cli(["--weights", str(out / "best.pth"), "--data", str(colour_data), "--output-dir",
                         str(tmp_path / "eval"), "--quiet"]) == 0
    assert export.cli([str(out / "best.pth"), "-o", str(tmp_path / "net.onnx")]) == 0
    assert "top-1 agreement 100%" in capsys.readouterr().out
    # fine-tuning from it keeps its layers; asking for others is one line naming both
    fine = settings.resolve_config(settings.get_args_parser().parse_args(["--weights", str(out / "best.pth")]))[0]
    assert switches_of(fine.variant) == dict(activation="tanh", lrn=True, pool=2, columns=2, remove_conv=3)
    with pytest.raises(ArgumentError, match="holds an AlexNet of variant tanh lrn pool2 two-column no-conv3"):
        settings.resolve_config(settings.get_args_parser().parse_args(["--weights", str(out / "best.pth"),
                                                                       "--variant", "sigmoid"]))
    with pytest.raises(ArgumentError, match="--variant tanh sigmoid: sets one switch twice"):
        settings.resolve_config(settings.get_args_parser().parse_args(["--weights", str(out / "best.pth"),
                                                                       "--variant", "tanh", "sigmoid"]))


# ---------------------------------------------------------------- tools/study.py
def test_epochs_to_reach_interpolates_and_says_never():
    assert study.epochs_to_reach([0.8, 0.6, 0.4], 0.5) == pytest.approx(2.5)
    assert study.epochs_to_reach([0.3, 0.2], 0.5) == pytest.approx(0.5 / 0.7)  # from 100% before the first epoch
    assert study.epochs_to_reach([0.8, 0.7], 0.5) is None


def test_chroma_is_zero_for_grey_kernels_and_two_thirds_for_one_channel():
    grey = torch.randn(4, 1, 11, 11).expand(4, 3, 11, 11)
    one = torch.zeros(4, 3, 11, 11)
    one[:, 1] = torch.randn(4, 11, 11)
    assert stats.chroma(grey).abs().max() < 1e-6
    torch.testing.assert_close(stats.chroma(one), torch.full((4,), 2 / 3, dtype=torch.float64))
    first, second, gap = study.specialisation(torch.cat([grey, one]))
    assert (first, round(second, 6), round(gap, 6)) == (pytest.approx(0, abs=1e-6), round(2 / 3, 6), round(2 / 3, 6))


def fake_run(errors, top1=0.5, losses=((1.0, 1.0),), correct=None, kernels=None) -> "study.Run":
    rows = [{"train_acc": 1 - e, "train_loss": losses[min(i, len(losses) - 1)][0],
             "val_loss": losses[min(i, len(losses) - 1)][1]} for i, e in enumerate(errors)]
    return study.Run(rows, correct or {}, top1, kernels if kernels is not None else torch.randn(8, 3, 11, 11))


def test_verdicts_hold_contradict_or_say_what_could_not_be_detected():
    claim = next(c for c in study.CLAIMS if c.key == "lrn")
    assert study.verdict(claim, 0.5, 3.0, False, 3) == "holds; the stated 1.4 points is inside the interval"
    assert study.verdict(claim, 0.2, 0.9, False, 3) == "holds; smaller than the stated 1.4 points"
    assert study.verdict(claim, -3.0, -0.5, False, 3) == "does not hold: the opposite is measured"
    assert study.verdict(claim, -2.0, 2.5, False, 3) == ("not detectable at this scale: an effect within 2.2 points "
                                                         "of no difference cannot be told from none with 3 seeds")
    speed = next(c for c in study.CLAIMS if c.key == "relu-tanh")
    assert study.verdict(speed, 0.6, 0.9, True, 3).startswith("not detectable")  # lower bounds never contradict
    assert study.verdict(speed, 1.5, 9.0, False, 3) == "holds; the stated 6x is inside the interval"
    assert study.verdict(speed, 1.5, 2.0, True, 3) == ("holds, by at least this much: the slower arm never got there "
                                                        "(whether by the stated 6x, runs this short cannot tell)")


def test_a_claim_row_pairs_the_seeds_measures_and_tests_on_the_same_images():
    images = [f"img{i}.jpg" for i in range(40)]
    relu = {s: fake_run([0.9, 0.5, 0.3, 0.2], top1=0.8, correct={p: i < 32 for i, p in enumerate(images)})
            for s in range(3)}
    tanh = {s: fake_run([0.95, 0.8, 0.6, 0.5 - 0.05 * s], top1=0.6, correct={p: i < 24 for i, p in enumerate(images)})
            for s in range(3)}
    claim = next(c for c in study.CLAIMS if c.key == "relu-tanh")
    threshold = study.speed_threshold(list(relu.values()))
    assert threshold == 0.5  # the baseline's error at half its epochs, above the paper's 25%
    row = study.claim_row(claim, {"baseline": relu, "tanh": tanh}, threshold)
    assert row["values"] == pytest.approx([4 / 2, (3 + 0.1 / 0.15) / 2, (3 + 0.1 / 0.2) / 2])
    assert row["lower_bounds"] == [False, False, False] and row["verdict"].startswith("holds")
    assert row["mcnemar"][0][:2] == [8, 0] and row["mcnemar"][0][2] == pytest.approx(2 / 2 ** 8)
    assert row["top1_difference"] == pytest.approx(20.0)


def scripts_in_process(command: list[str], **kwargs) -> int:
    """tools/seeds.py's ``subprocess.call`` of train.py or evaluate.py, run as main() in this
    process (tests/test_stats.py runs seeds.py's real processes)."""
    return {"train": train, "evaluate": evaluate}[Path(command[1]).stem].cli(command[2:])


@pytest.mark.slow
def test_the_study_trains_its_arms_over_seeds_and_writes_the_table_and_figures(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study.seeds.subprocess, "call", scripts_in_process)
    data = make_colour_folder(tmp_path / "data", n_train=6, n_val=3)
    (data / "test").mkdir()
    for folder in (data / "val").iterdir():  # the held-out test split every arm is scored on
        (data / "test" / folder.name).mkdir()
        for image in folder.iterdir():
            (data / "test" / folder.name / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "study"
    argv = ["--data", str(data), "--out", str(out), "--claims", "relu-tanh", "columns-specialise",
            "--seeds", "0", "1", "--", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--precision", "fp32",
            "--lr", "1e-3"]
    assert study.cli(argv) == 0
    table = (out / "study.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| claim", "| ---"))]
    assert [r.split(" | ")[0] for r in rows] == ["| relu-tanh", "| columns-specialise"]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split(" | ")]
        assert len(cells) == 7 and all(cells), r  # no empty cell
        assert cells[6].startswith(("holds", "does not hold", "not detectable")), r
    report = json.loads((out / "study.json").read_text())
    assert [c["seeds"] for c in report["claims"]] == [2, 2]
    assert all(len(c["mcnemar"]) == 2 for c in report["claims"])
    for claim in ("relu-tanh", "columns-specialise"):
        assert (out / "figures" / f"{claim}.png").stat().st_size > 5000
    assert {p.name for p in out.iterdir()} >= {"baseline", "tanh", "two-column"}
    assert load_checkpoint(str(out / "two-column" / "seed-1" / "best.pth"))["net"]["columns"] == 2
    # again: nothing is trained twice, the table is the same
    capsys.readouterr()
    assert study.cli(argv) == 0
    again = capsys.readouterr().out
    assert "seed 0: python train.py" not in again and "seed 1: python train.py" not in again
    assert again.count("is finished") == 6
    assert study.cli(["--out", str(out), "--report", "--claims", "relu-tanh", "--seeds", "0", "1"]) == 0


def test_overfitting_claims_draw_both_losses_of_both_arms(tmp_path):
    claim = next(c for c in study.CLAIMS if c.key == "dropout-overfit")
    arms = {"baseline": {0: fake_run([0.5] * 4, losses=[(1.0, 1.1), (0.8, 1.0)])},
            "no-dropout": {0: fake_run([0.4] * 4, losses=[(0.9, 1.2), (0.3, 1.5)])}}
    row = study.claim_row(claim, arms, 0.25)
    assert row["values"] == [pytest.approx(1.2 - 0.2)] and row["verdict"] == "one seed: no interval, no verdict"
    assert study.draw_figure(claim, arms, 0.25, tmp_path / "f.png") and (tmp_path / "f.png").stat().st_size > 5000
    assert not study.draw_figure(next(c for c in study.CLAIMS if c.key == "lrn"), arms, 0.25, tmp_path / "g.png")


def test_the_study_needs_a_test_split_and_keeps_its_own_options(tmp_path, capsys):
    data = make_colour_folder(tmp_path / "data", n_train=2, n_val=1)
    assert study.cli(["--data", str(data), "--out", str(tmp_path / "s")]) == 2
    assert "no test/ split" in one_error_line(capsys.readouterr().err)
    assert study.cli(["--data", str(data), "--out", str(tmp_path / "s"), "--", "--seed", "3"]) == 2
    assert "--data, --seed and --output-dir are the study's own" in capsys.readouterr().err


def test_evaluates_filter_figure_keeps_each_columns_kernels_in_rows_of_their_own(tmp_path, monkeypatch):
    from alexnet import figures

    titles = []
    monkeypatch.setattr(figures, "save_with_font_hint", lambda fig, path: titles.append(fig.axes[0].get_title()))
    figures.plot_filters(AlexNet(num_classes=5, columns=2), tmp_path / "f.png")
    figures.plot_filters(AlexNet(num_classes=5), tmp_path / "g.png")
    assert "column 1 (upper half) chroma" in titles[0] and "column" not in titles[1]
