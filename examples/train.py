"""Train the three example networks on sklearn's 8x8 digits and export them as QONNX models.

Run with the training venv (torch==2.13.0 CPU + brevitas==0.13.4): see examples/README.md.
"""
import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import brevitas.nn as qnn
from brevitas.export import export_qonnx
from brevitas.inject.enum import ScalingImplType
from brevitas.quant.fixed_point import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint,
                                        Uint8ActPerTensorFixedPoint)
from brevitas.quant.float_quant_ocp import Fp8e4m3OCPAct, Fp8e4m3OCPWeight
from brevitas.quant.scaled_int import Int16Bias

HERE = Path(__file__).resolve().parent
SEED = 0


class InputQuant(Uint8ActPerTensorFixedPoint):
    """Fixed input grid: ufixed<5,1>, scale 2**-4, so pixel/16 in [0, 1] is represented exactly."""
    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 2.0  # 2 / (2**5 - 1) rounds to the power of two 2**-4
    bit_width = 5


def input_layer():
    return qnn.QuantIdentity(act_quant=InputQuant, return_quant_tensor=True)


def linear(n_in, n_out, w_bits, bias=True):
    return qnn.QuantLinear(n_in, n_out, weight_quant=Int8WeightPerTensorFixedPoint,
                           weight_bit_width=w_bits, bias=bias,
                           bias_quant=Int16Bias if bias else None, return_quant_tensor=True)


def relu(bits):
    return qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, bit_width=bits,
                         return_quant_tensor=True)


def logits(bits=8):
    return qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, bit_width=bits,
                             return_quant_tensor=False)


class DigitsMLP(torch.nn.Module):
    """64 -> 32 (W4A8) -> 16 (W2A4) -> 10 (W4, int8 logits): mixed per-layer precision."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            input_layer(), linear(64, 32, 4), relu(8), linear(32, 16, 2), relu(4),
            linear(16, 10, 4), logits())

    def forward(self, x):
        return self.body(x)


class DigitsCNN(torch.nn.Module):
    """1x8x8 -> conv3x3(8) ReLU MaxPool2 -> conv3x3(16) ReLU MaxPool2 -> Flatten -> 10 logits."""

    def __init__(self):
        super().__init__()
        conv = dict(kernel_size=3, padding=1, weight_quant=Int8WeightPerTensorFixedPoint,
                    weight_bit_width=4, bias_quant=Int16Bias, return_quant_tensor=True)
        self.body = torch.nn.Sequential(
            input_layer(), qnn.QuantConv2d(1, 8, **conv), relu(8),
            torch.nn.MaxPool2d(2),
            qnn.QuantConv2d(8, 16, **conv), relu(6),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), linear(64, 10, 4), logits())

    def forward(self, x):
        return self.body(x)


class DigitsFP8(torch.nn.Module):
    """64 -> 32 -> 10 with FP8 E4M3 (OCP, unscaled) weights and activations, no bias."""

    def __init__(self):
        super().__init__()
        fp8 = dict(weight_quant=Fp8e4m3OCPWeight, bias=False)
        self.body = torch.nn.Sequential(
            qnn.QuantIdentity(act_quant=InputQuant), qnn.QuantLinear(64, 32, **fp8),
            qnn.QuantReLU(act_quant=Fp8e4m3OCPAct), qnn.QuantLinear(32, 10, **fp8),
            qnn.QuantIdentity(act_quant=Fp8e4m3OCPAct))

    def forward(self, x):
        return self.body(x)


MODELS = {"digits_mlp": (DigitsMLP, (1, 64)), "digits_cnn": (DigitsCNN, (1, 1, 8, 8)),
          "digits_fp8": (DigitsFP8, (1, 64))}


def digits():
    """(x_train, x_test, y_train, y_test): pixels/16 in [0, 1] (exact on the 2**-4 grid)."""
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    return train_test_split(x, data.target, test_size=0.25, random_state=SEED,
                            stratify=data.target)


def train(model, x, y, shape, epochs, lr=1e-2):
    torch.manual_seed(SEED)
    xs = torch.from_numpy(x).reshape(-1, *shape[1:])
    ys = torch.from_numpy(y).long()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for start in range(0, len(xs), 64):
            idx = order[start:start + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def accuracy(model, x, y, shape):
    with torch.no_grad():
        out = model(torch.from_numpy(x).reshape(-1, *shape[1:]))
    return float((out.argmax(1).numpy() == y).mean())


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--epochs", type=int, default=40)
    cli.add_argument("--out", type=Path, default=HERE)
    args = cli.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = digits()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "digits_test.npz", x=x_te, y=y_te.astype(np.int64))
    for name, (cls, shape) in MODELS.items():
        torch.manual_seed(SEED)
        model = train(cls(), x_tr, y_tr, shape, args.epochs)
        acc = accuracy(model, x_te, y_te, shape)
        export_qonnx(model, torch.zeros(shape), str(args.out / f"{name}.onnx"), dynamo=False)
        print(f"{name}: test accuracy {acc:.4f} (torch), written {args.out / f'{name}.onnx'}")


if __name__ == "__main__":
    main()
