"""Where the model step's time goes: each layer against the matmul peak, and what is left over.

    python tools/step_layers.py                          # batch 32, the precision train.py picks here
    python tools/step_layers.py --batch-size 64 --precision fp32 --steps 10

Times each convolution and linear layer of the tutorial AlexNet on its own (forward and
backward on its input's shape in the step, channels_last, under the precision's autocast;
the first layer's input needs no gradient, as in training), counts its FLOPs with
torch.utils.flop_counter (a linear layer's time includes autocast's casts of its weight and of
the weight's gradient), and sets their sum beside train.py's whole step (bench.train_step:
the default recipe's optimizer, clipping and label smoothing) and the limit at the measured
matmul peak (bench.matmul_gflops). What the layers take beyond the peak is their kernels'
shortfall; what the step takes beyond the layers is everything memory-bound (ReLU, pooling,
dropout, casts, the optimizer, clipping). Medians of --steps; the allocator setting train.py
makes (machine.keep_freed_memory) is on.
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project folder: its scripts and alexnet/
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import bench  # noqa: E402
from alexnet import machine  # noqa: E402
from alexnet.errors import OneLineParser, require_counts, run_main  # noqa: E402
from model import AlexNet  # noqa: E402


def layer_inputs(net: nn.Module, x: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Size]]:
    """Each convolution and linear layer by name, with the shape of its input in a forward pass."""
    seen: dict[str, tuple[nn.Module, torch.Size]] = {}

    def record(name: str, module: nn.Module):
        return module.register_forward_pre_hook(lambda m, args: seen.update({name: (m, args[0].shape)}))

    hooks = [record(name, m) for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(x)
    for hook in hooks:  # the layers are timed next: no hook in the timed calls
        hook.remove()
    return seen


def time_layer(layer: nn.Module, shape: torch.Size, input_grad: bool, dtype: torch.dtype | None,
               device: torch.device, steps: int) -> tuple[float, int]:
    """(median seconds, FLOPs) of the layer's forward and backward on a random input of ``shape``."""
    x = torch.randn(shape, device=device)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)

    def once() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = layer(x)
        out.backward(torch.ones_like(out))
        layer.zero_grad(set_to_none=True)
        x.grad = None

    with FlopCounterMode(display=False) as counter:
        once()
    once()  # the first calls pick kernels
    times = []
    for _ in range(steps):
        bench.sync(device)
        t0 = time.perf_counter()
        once()
        bench.sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), counter.get_total_flops()


def get_args_parser() -> OneLineParser:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20, help="timed repetitions of each layer and of the step")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(measure, get_args_parser().parse_args(argv))


def measure(args) -> int:
    require_counts(args, "batch_size", "steps")
    machine.keep_freed_memory()
    device = machine.pick_device(args.device, 0)
    precision = machine.pick_precision(args.precision, device)
    dtype = machine.AMP_DTYPES.get(precision)
    net = AlexNet(num_classes=5, init_weights=True).to(device, memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    peak = bench.matmul_gflops(dtype or torch.float32, device) * 1e9
    print(f"{machine.cpu_summary()}; {precision}, batch {args.batch_size}, channels_last, medians of {args.steps}")
    print(f"{'layer':<14} {'input':<18} {'GFLOP':>7} {'ms':>7} {'GFLOP/s':>8} {'of peak':>8}")
    layers_s, layers_flops = 0.0, 0
    for n, (name, (layer, shape)) in enumerate(layer_inputs(net, x).items()):
        seconds, flops = time_layer(layer, shape, n > 0, dtype, device, args.steps)
        layers_s, layers_flops = layers_s + seconds, layers_flops + flops
        print(f"{name:<14} {'x'.join(map(str, shape)):<18} {flops / 1e9:>7.2f} {seconds * 1e3:>7.2f} "
              f"{flops / seconds / 1e9:>8.0f} {flops / seconds / peak:>8.0%}")
    step_s = args.batch_size / bench.model_step_rate(args.batch_size, precision, True, device, args.steps)
    at_peak = layers_flops / peak
    print(f"matmul peak {peak / 1e9:.0f} GFLOP/s; the layers' {layers_flops / 1e9:.2f} GFLOP would take "
          f"{at_peak * 1e3:.1f} ms there")
    print(f"the layers alone: {layers_s * 1e3:.1f} ms ({at_peak / layers_s:.0%} of the peak)")
    print(f"train.py's step: {step_s * 1e3:.1f} ms ({args.batch_size / step_s:.1f} images/s, {at_peak / step_s:.0%} "
          f"of the limit); beyond the layers: {(step_s - layers_s) * 1e3:.1f} ms of activations, pooling, dropout, "
          f"casts, optimizer and clipping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
