#!/usr/bin/env python3
"""Export small PyTorch CNN blocks to ONNX, to try the rewriter on real exporter output.

**Optional developer script: it needs PyTorch** (plus ``onnx``, and
``onnxscript`` for the dynamo exporter), which the package and its tests do
not depend on. It is not run by CI. Use a separate environment, e.g.::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch onnx onnxscript onnxruntime numpy
    /tmp/torchvenv/bin/python scripts/export_torch_blocks.py --out /tmp/torch_models

then run ``onnx-poolrewrite`` on every ``*.onnx`` written there.

Every network is defined here in plain ``torch.nn`` (no torchvision), small
(few channels, small inputs), with random weights from a fixed seed and random
BatchNorm statistics, in eval mode. Pools see signed values wherever the
original architecture allows it (e.g. SPPF pools a SiLU output, which can be
negative).

Networks (name: pools it contains):

``resnet18``       Conv7x7/s2/p3 + BN + ReLU + MaxPool 3x3/s2/p1, two basic
                   blocks (the second strided, with a 1x1 downsample),
                   AdaptiveAvgPool2d(1) -> Linear.
``vgg``            three MaxPool2d 2x2/s2 after Conv+ReLU.
``squeezenet``     MaxPool 3x3/s2 ceil_mode=True (twice, on 16x16 and 8x8,
                   where ceil adds a window), Fire modules, AdaptiveAvgPool2d(1).
``inception``      GoogLeNet stem MaxPool 3x3/s2 ceil_mode=True and an
                   inception block with a MaxPool 3x3/s1/p1 (ceil_mode=True,
                   as torchvision writes it) branch and an AvgPool 3x3/s1/p1
                   count_include_pad=False branch (on the signed BN output).
``densenet``       DenseNet stem MaxPool 3x3/s2/p1, a dense layer and a
                   transition (BN, ReLU, Conv1x1, AvgPool2d 2x2/s2).
``sppf``           YOLOv5 SPPF: Conv+BN+SiLU then MaxPool 5/s1/p2 three times
                   chained, Concat, Conv+SiLU.
``spp``            YOLOv3 SPP: parallel MaxPool 5/9/13, s1, p k//2.
``dilated``        MaxPool2d(3, stride=1, padding=1, dilation=2) and
                   MaxPool2d(3, stride=2, padding=1, dilation=(2, 1)) on a signed
                   map (torch rejects padding=2 with kernel 3, dilated or not).
``pool1d``         (N, C, L): MaxPool1d(3, 2, 1), AvgPool1d(2, 2),
                   AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False).
``pool3d``         MaxPool3d(2, 2), AvgPool3d(3, 1, 1) (count_include_pad=True),
                   AvgPool3d(2, 2, ceil_mode=True) on an odd volume.
``adaptive_max``   AdaptiveMaxPool2d(1) and AdaptiveAvgPool2d((1, 1)).
``avg_ceil_cip``   AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=True)
                   and AvgPool2d(2, 2, ceil_mode=True) on a 15x17 map.
``avg_ceil_nocip`` AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
                   on 14x15 and on 15x17.
``segnet``         MaxPool2d(2, 2, return_indices=True) -> MaxPool2d(3, 1, 1) ->
                   unpool by scatter with the indices (the indices pool must
                   be kept; the plain one rewritten).
``ocr_se``         OCR-recognizer-ish: 3 depthwise blocks with SE
                   (AdaptiveAvgPool2d(1) -> Conv -> ReLU -> Conv -> Hardsigmoid -> Mul),
                   MaxPool2d((2,2),(2,1),(0,1)), AvgPool2d((2,2),(2,1)), softmax.
``yolo_sppf``      YOLO-ish: stride-2 Conv+BN+SiLU path to /8, SPPF, raw box
                   and sigmoid score heads concatenated.
``scripted_if``    a torch.jit.script module with a data-dependent ``if``:
                   MaxPool2d(3, 2, 1) in one branch, AvgPool2d(3, 2, 1,
                   count_include_pad=False) in the other (pools inside an ``If``
                   subgraph). TorchScript exporter only.

Exports (file name ``<net>.<variant>.onnx``):

``ts13``       TorchScript exporter (``dynamo=False``), opset 13, dynamic batch
               axis ``N`` via ``dynamic_axes``.
``ts9``        the same at opset 9, for the nets in ``OPSET9_NETS``.
``dynamo``     the dynamo exporter (``dynamo=True``), default opset, static
               shapes; weights may go to ``<file>.data`` (kept as written).
``dynamo_dyn`` the dynamo exporter with a dynamic batch dim (``dynamic_shapes``).
``ts13_dynhw`` ts13 with dynamic spatial dims too (pools must be kept), for
               the nets in ``EXTRA_NETS``.
``dynamo_dynhw`` the dynamo exporter with dynamic batch, height and width
               (each spatial dim a multiple of 16), for the nets in ``EXTRA_NETS``.
``ts13_fp16``  ts13 of ``net.half()`` (float16 pools).
``ts15_funcs`` opset 15 with ``export_modules_as_functions`` for the pool
               modules: the pools end up inside ONNX local functions.

A failed export is reported and skipped (exit status 1 at the end if any failed).
``--list`` prints the networks; ``--only NAME[,NAME]`` restricts them;
``--variants`` restricts the exports. Also written: ``<out>/manifest.json``
with each file's net, variant, input shape and the torch output on a fixed
input (``<out>/<net>.input.npy``, ``<net>.torch_out.npy``), so a checker can
compare the exported model against torch itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0
OPSET9_NETS = ("resnet18", "vgg", "squeezenet", "inception", "avg_ceil_cip", "sppf")
# extra variants, each for a few nets only
EXTRA_NETS = {
    "ts13_dynhw": ("resnet18", "sppf", "inception", "ocr_se", "yolo_sppf"),
    "dynamo_dynhw": ("ocr_se", "yolo_sppf"),
    "ts13_fp16": ("resnet18", "sppf", "inception", "avg_ceil_nocip", "pool1d"),
    "ts15_funcs": ("resnet18", "sppf", "inception"),
}
SCRIPT_NETS = ("scripted_if",)  # exported as torch.jit.script modules, TorchScript exporter only
VARIANTS = ("ts13", "ts9", "dynamo", "dynamo_dyn", "ts13_dynhw", "dynamo_dynhw", "ts13_fp16", "ts15_funcs")


# -- building blocks ----------------------------------------------------------


def conv_bn(cin, cout, k, s=1, p=0, dims=2, eps=1e-5):
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    return nn.Sequential(conv(cin, cout, k, s, p, bias=False), bn(cout, eps=eps))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.c1 = conv_bn(cin, cout, 3, stride, 1)
        self.c2 = conv_bn(cout, cout, 3, 1, 1)
        self.down = conv_bn(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        y = self.c2(F.relu(self.c1(x)))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class ResNet18(nn.Module):
    input_shape = (1, 3, 32, 32)

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, 7, 2, 3)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.gap(x), 1))


class VGG(nn.Module):
    input_shape = (1, 3, 32, 32)

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for cout in (8, 12, 16):
            layers += [nn.Conv2d(c, cout, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class Fire(nn.Module):
    def __init__(self, cin, sq, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, sq, 1)
        self.e1 = nn.Conv2d(sq, e1, 1)
        self.e3 = nn.Conv2d(sq, e3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)


class SqueezeNet(nn.Module):
    input_shape = (1, 3, 33, 33)  # conv 3/s2 -> 16x16 -> ceil pool 8x8 -> ceil pool 4x4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fire1 = Fire(8, 4, 6, 6)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fire2 = Fire(12, 4, 8, 8)
        self.final = nn.Conv2d(16, 10, 1)
        self.gap = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        x = self.pool1(F.relu(self.conv(x)))
        x = self.pool2(self.fire1(x))
        x = F.relu(self.final(self.fire2(x)))
        return torch.flatten(self.gap(x), 1)


class BasicConv(nn.Module):
    def __init__(self, cin, cout, k, s=1, p=0):
        super().__init__()
        self.cb = conv_bn(cin, cout, k, s, p, eps=1e-3)

    def forward(self, x):
        return F.relu(self.cb(x))


class Inception(nn.Module):
    input_shape = (1, 3, 35, 35)  # conv 3/s2 -> 17x17 -> ceil pool 3/s2 -> 8x8

    def __init__(self):
        super().__init__()
        self.stem = BasicConv(3, 8, 3, 2)
        self.pool0 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.b1 = BasicConv(8, 4, 1)
        self.b2 = nn.Sequential(BasicConv(8, 4, 1), BasicConv(4, 6, 3, 1, 1))
        self.b3 = nn.Sequential(BasicConv(8, 2, 1), BasicConv(2, 4, 3, 1, 1))
        self.b4_pool = nn.MaxPool2d(3, 1, 1, ceil_mode=True)
        self.b4 = BasicConv(8, 4, 1)
        # signed input: the BN output before its ReLU
        self.pre = conv_bn(8, 4, 1, eps=1e-3)
        self.b5_pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.pool0(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(self.b4_pool(x)),
                       self.b5_pool(self.pre(x))], 1)
        return torch.flatten(self.gap(y), 1)


class DenseNet(nn.Module):
    input_shape = (1, 3, 32, 32)

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, 7, 2, 3)
        self.pool0 = nn.MaxPool2d(3, 2, 1)
        self.dense = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1, bias=False),
                                   nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, 1, 1, bias=False))
        self.trans = nn.Sequential(nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 6, 1, bias=False),
                                   nn.AvgPool2d(2, 2))

    def forward(self, x):
        x = self.pool0(F.relu(self.stem(x)))
        x = torch.cat([x, self.dense(x)], 1)
        return self.trans(x)


class ConvSiLU(nn.Module):
    def __init__(self, cin, cout, k=1, s=1):
        super().__init__()
        self.cb = conv_bn(cin, cout, k, s, k // 2, eps=1e-3)

    def forward(self, x):
        return F.silu(self.cb(x))


class SPPF(nn.Module):
    input_shape = (1, 3, 20, 20)

    def __init__(self):
        super().__init__()
        self.cv0 = ConvSiLU(3, 8, 3, 1)
        self.cv1 = ConvSiLU(8, 4, 1)
        self.m = nn.MaxPool2d(5, 1, 2)
        self.cv2 = ConvSiLU(16, 8, 1)

    def forward(self, x):
        x = self.cv1(self.cv0(x))
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class SPP(nn.Module):
    input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.cv0 = ConvSiLU(3, 8, 3, 1)
        self.cv1 = ConvSiLU(8, 4, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.cv2 = ConvSiLU(16, 8, 1)

    def forward(self, x):
        x = self.cv1(self.cv0(x))
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class Dilated(nn.Module):
    input_shape = (1, 3, 17, 18)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)
        # torch rejects padding > kernel_size // 2 even when dilated, so the
        # "same"-size MaxPool2d(3, stride=1, padding=2, dilation=2) cannot be built.
        self.p1 = nn.MaxPool2d(3, stride=1, padding=1, dilation=2)
        self.p2 = nn.MaxPool2d(3, stride=2, padding=1, dilation=(2, 1))
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.p2(self.conv2(self.p1(self.conv(x))))


class Pool1d(nn.Module):
    input_shape = (1, 4, 31)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, 1, 1)
        self.p1 = nn.MaxPool1d(3, 2, 1)
        self.p2 = nn.AvgPool1d(2, 2)
        self.conv2 = nn.Conv1d(6, 6, 1)
        self.p3 = nn.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False)

    def forward(self, x):
        return self.p3(self.conv2(self.p2(self.p1(self.conv(x)))))


class Pool3d(nn.Module):
    input_shape = (1, 2, 8, 9, 10)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(2, 4, 3, 1, 1)
        self.p1 = nn.MaxPool3d(2, 2)
        self.p2 = nn.AvgPool3d(3, 1, 1)
        self.p3 = nn.AvgPool3d(2, 2, ceil_mode=True)

    def forward(self, x):
        return self.p3(self.p2(self.p1(self.conv(x))))


class AdaptiveMax(nn.Module):
    input_shape = (1, 3, 12, 14)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 1, 1)
        self.amax = nn.AdaptiveMaxPool2d(1)
        self.aavg = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.conv(x)
        return self.fc(torch.cat([torch.flatten(self.amax(x), 1), torch.flatten(self.aavg(x), 1)], 1))


class AvgCeilCip(nn.Module):
    input_shape = (1, 3, 15, 17)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)
        self.p1 = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=True)
        self.p2 = nn.AvgPool2d(2, 2, ceil_mode=True)

    def forward(self, x):
        x = self.conv(x)
        return torch.cat([torch.flatten(self.p1(x), 1), torch.flatten(self.p2(x), 1)], 1)


class AvgCeilNoCip(nn.Module):
    input_shape = (1, 3, 14, 15)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)
        self.conv_b = nn.Conv2d(3, 4, (2, 3), 1, (1, 2))  # -> 15x17
        self.p = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)

    def forward(self, x):
        return torch.cat([torch.flatten(self.p(self.conv(x)), 1),
                          torch.flatten(self.p(self.conv_b(x)), 1)], 1)


class SegNet(nn.Module):
    """SegNet-style encoder/decoder: MaxPool2d(return_indices=True) whose indices
    place values back (an unpool written with scatter, which is what
    MaxUnpool2d computes: the TorchScript exporter of torch 2.13 fails on
    nn.MaxUnpool2d itself with "TypeError: cond must be a bool, but got a Tensor")."""

    input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.plain = nn.MaxPool2d(3, 1, 1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        y, idx = self.pool(x)
        up = torch.zeros_like(x).flatten(2).scatter(2, idx.flatten(2), self.plain(y).flatten(2))
        return self.conv2(up.view_as(x))


class ScriptedIf(nn.Module):
    """Data-dependent branch: under torch.jit.script the TorchScript exporter
    writes an ``If`` node whose branches hold the pools."""

    input_shape = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)
        self.mp = nn.MaxPool2d(3, 2, 1)
        self.ap = nn.AvgPool2d(3, 2, 1, count_include_pad=False)

    def forward(self, x):
        x = self.conv(x)
        if bool(x.mean() > 0):
            y = self.mp(x)
        else:
            y = self.ap(x)
        return y


class SE(nn.Module):
    """Squeeze-excitation as PP-OCR/MobileNetV3 write it: AdaptiveAvgPool2d(1) ->
    Conv1x1 -> ReLU -> Conv1x1 -> Hardsigmoid -> Mul."""

    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, max(c // r, 4), 1)
        self.fc2 = nn.Conv2d(max(c // r, 4), c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


class DepthwiseSE(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dw = conv_bn(cin, cin, 3, 1, 1)
        self.dw[0] = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.se = SE(cin)
        self.pw = conv_bn(cin, cout, 1)

    def forward(self, x):
        return F.hardswish(self.pw(self.se(F.hardswish(self.dw(x)))))


class OcrSE(nn.Module):
    """CRNN/PP-OCR-rec-ish: SE blocks (GlobalAveragePool), a MaxPool (2,2)/s(2,1)/p(0,1),
    an AvgPool (2,2)/s(2,1) collapsing the height, a per-column softmax."""

    input_shape = (1, 3, 32, 48)
    dynamic_spatial = (3,)  # the height stays 32, as OCR exports declare it

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2, 1)  # H 16
        self.b1 = DepthwiseSE(8, 8, (2, 1))  # H 8
        self.b2 = DepthwiseSE(8, 16, (2, 1))  # H 4
        self.pool = nn.MaxPool2d((2, 2), (2, 1), (0, 1))  # H 2, W + 1
        self.b3 = DepthwiseSE(16, 16, 1)
        self.out_pool = nn.AvgPool2d((2, 2), (2, 1))  # H 1, W
        self.fc = nn.Linear(16, 12)

    def forward(self, x):
        x = self.b2(self.b1(F.hardswish(self.stem(x))))
        x = self.out_pool(self.b3(self.pool(x)))
        return torch.softmax(self.fc(x.squeeze(2).permute(0, 2, 1)), dim=2)


class YoloSPPF(nn.Module):
    """YOLO-ish: stride-2 ConvSiLU path, SPPF, a sigmoid score head and a raw box head."""

    input_shape = (1, 3, 64, 64)

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(ConvSiLU(3, 8, 3, 2), ConvSiLU(8, 16, 3, 2), ConvSiLU(16, 16, 3, 2))
        self.sppf = SPPF()
        self.sppf.cv0 = ConvSiLU(16, 8, 3, 1)
        self.box = nn.Conv2d(8, 4, 1)
        self.cls = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = self.sppf(self.down(x))
        return torch.cat([self.box(x).flatten(2), torch.sigmoid(self.cls(x) - 4.0).flatten(2)], 1)


NETS = {
    "resnet18": ResNet18,
    "vgg": VGG,
    "squeezenet": SqueezeNet,
    "inception": Inception,
    "densenet": DenseNet,
    "sppf": SPPF,
    "spp": SPP,
    "dilated": Dilated,
    "pool1d": Pool1d,
    "pool3d": Pool3d,
    "adaptive_max": AdaptiveMax,
    "avg_ceil_cip": AvgCeilCip,
    "avg_ceil_nocip": AvgCeilNoCip,
    "segnet": SegNet,
    "scripted_if": ScriptedIf,
    "ocr_se": OcrSE,
    "yolo_sppf": YoloSPPF,
}


def build(name: str) -> nn.Module:
    torch.manual_seed(SEED)
    net = NETS[name]()
    g = torch.Generator().manual_seed(SEED + 1)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.3 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return net.eval()


# -- export -------------------------------------------------------------------


def _dynamic_spatial(net: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes a dynamic export frees (a text recognizer keeps its height)."""
    return tuple(getattr(net, "dynamic_spatial", range(2, x.dim())))


def export(net: nn.Module, x: torch.Tensor, path: Path, variant: str) -> None:
    kw = dict(input_names=["x"], output_names=["y"])
    if variant in ("ts13", "ts9"):
        torch.onnx.export(net, (x,), str(path), dynamo=False,
                          opset_version=13 if variant == "ts13" else 9,
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **kw)
    elif variant == "ts13_dynhw":
        axes = {0: "N", **{d: f"S{d}" for d in _dynamic_spatial(net, x)}}
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=13,
                          dynamic_axes={"x": axes, "y": {0: "N"}}, **kw)
    elif variant == "dynamo_dynhw":
        # batch 2 and distinct H/W multiples: torch.export specializes size-1 and equal dims
        x2 = torch.cat([x, x], 0)
        dims = {0: torch.export.Dim("N", min=1, max=64)}
        for d in _dynamic_spatial(net, x):  # S = 16 * k keeps every stride-2 / pool size an integer formula
            dims[d] = 16 * torch.export.Dim(f"K{d}", min=1, max=64)
        torch.onnx.export(net, (x2,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes={"x": dims}, **kw)
    elif variant == "ts13_fp16":
        torch.onnx.export(net.half(), (x.half(),), str(path), dynamo=False, opset_version=13,
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **kw)
    elif variant == "ts15_funcs":
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=15,
                          export_modules_as_functions={nn.MaxPool2d, nn.AvgPool2d,
                                                       nn.AdaptiveAvgPool2d},
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **kw)
    elif variant == "dynamo":
        torch.onnx.export(net, (x,), str(path), dynamo=True, verbose=False, **kw)
    elif variant == "dynamo_dyn":
        # batch 2 example: torch.export specializes a size-1 dim to 1
        x2 = torch.cat([x, x], 0)
        batch = torch.export.Dim("N", min=1, max=64)
        torch.onnx.export(net, (x2,), str(path), dynamo=True, verbose=False,
                          dynamic_shapes={"x": {0: batch}}, **kw)
    else:
        raise ValueError(variant)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/torch_models", help="output folder (default /tmp/torch_models)")
    ap.add_argument("--only", default="", help="comma list of nets")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " + ",".join(VARIANTS))
    ap.add_argument("--list", action="store_true", help="list the nets and exit")
    args = ap.parse_args(argv)
    if args.list:
        for n, cls in NETS.items():
            print(f"{n:16s} input {cls.input_shape}")
        return 0
    names = [n for n in args.only.split(",") if n] or list(NETS)
    variants = [v for v in args.variants.split(",") if v]
    for n in names:
        if n not in NETS:
            ap.error(f"unknown net {n!r}")
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    manifest, failed = [], []
    for name in names:
        try:
            net = build(name)
            torch.manual_seed(SEED + 2)
            x = torch.randn(NETS[name].input_shape)
            with torch.no_grad():
                y = net(x)
        except Exception as e:  # noqa: BLE001
            print(f"FAILED {name}: cannot run in torch: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
            continue
        np.save(out / f"{name}.input.npy", x.numpy())
        np.save(out / f"{name}.torch_out.npy", y.numpy())
        for v in variants:
            if v == "ts9" and name not in OPSET9_NETS:
                continue
            if v in EXTRA_NETS and name not in EXTRA_NETS[v]:
                continue
            if name in SCRIPT_NETS and v not in ("ts13", "ts9"):
                continue
            path = out / f"{name}.{v}.onnx"
            try:
                export(torch.jit.script(build(name)) if name in SCRIPT_NETS else build(name), x, path, v)
            except Exception as e:  # noqa: BLE001 - report and go on
                msg = f"{type(e).__name__}: {e}".strip().splitlines()
                print(f"FAILED {path.name}: {msg[0] if msg else ''}", file=sys.stderr)
                (out / f"{name}.{v}.export_error.txt").write_text(traceback.format_exc())
                failed.append(path.name)
                continue
            size = path.stat().st_size + sum(p.stat().st_size for p in out.glob(path.name + ".data"))
            print(f"wrote {path} ({size} bytes)")
            manifest.append({"file": path.name, "net": name, "variant": v,
                             "input_shape": list(x.shape), "bytes": size,
                             "input": f"{name}.input.npy", "torch_out": f"{name}.torch_out.npy"})
    (out / "manifest.json").write_text(json.dumps({"torch": torch.__version__, "models": manifest,
                                                   "failed": failed}, indent=1))
    if failed:
        print(f"{len(failed)} export(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
