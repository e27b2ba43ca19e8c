"""Every kernel variant the blocks launch, compiled by Triton's real compiler
for Hopper (sm_90) and Ampere (sm_80) -- no GPU needed.

The interpreter checks arithmetic and indexing but accepts code the compiler
rejects (and never lowers to PTX). This test records each distinct launch
(kernel, argument types, constexprs, warps) that the SE/ECA/CBAM blocks make
under the interpreter, forward and backward, for every dtype and layout and
for the tile shapes the heuristics pick on real network shapes, then compiles
each one for sm_90 and sm_80 in a subprocess without the interpreter."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import triton_attn
from triton_attn.launch import config as launch_config

from helpers import make_input

pytestmark = pytest.mark.skipif(
    not triton_attn.INTERPRETED, reason="records launches under the interpreter; with a GPU every test compiles for real"
)

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
           torch.int32: "i32", torch.int64: "i64"}
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas")


def _arg_type(value):
    if isinstance(value, torch.Tensor):
        return "*" + _DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"unexpected kernel argument {type(value).__name__}")


def _record_launches(monkeypatch, scenario) -> list[dict]:
    from triton.runtime.interpreter import InterpretedFunction

    seen: dict[str, dict] = {}
    original = InterpretedFunction.run

    def recording_run(self, *args, **kwargs):
        fn = self.fn
        params = inspect.signature(fn).parameters
        bound = dict(zip(params, args))
        bound.update({k: v for k, v in kwargs.items() if k in params})
        signature, constexprs = {}, {}
        for name, p in params.items():
            value = bound.get(name, p.default)
            if "constexpr" in str(p.annotation):
                constexprs[name] = value
            else:
                signature[name] = _arg_type(value)
        options = {k: kwargs[k] for k in _LAUNCH_OPTIONS if kwargs.get(k) is not None}
        launch = {"module": fn.__module__, "name": fn.__name__, "signature": signature,
                  "constexprs": constexprs, "options": options}
        seen[json.dumps(launch, sort_keys=True)] = launch
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", recording_run)
    scenario()
    return list(seen.values())


def _blocks(C):
    return [
        triton_attn.SEModule(C, rd_channels=8),
        triton_attn.SEModule(C, rd_channels=8, add_maxpool=True),
        triton_attn.EffectiveSEModule(C),
        triton_attn.EcaModule(C),
        triton_attn.EcaModule(C, gate_layer="hard_sigmoid"),  # every in-kernel gate gets compiled
        triton_attn.CecaModule(C, gate_layer="identity"),
        triton_attn.CecaModule(C, act_layer=torch.nn.ReLU),
        triton_attn.SEModule(C, rd_channels=8, act_layer=torch.nn.Mish),  # unfused ops
        triton_attn.CbamModule(C, rd_channels=8),
        triton_attn.LightCbamModule(C, rd_channels=8),
    ]


def _run_blocks(dtype, layout, shape=(2, 24, 5, 7)):
    x0 = make_input(shape, dtype, layout)
    for block in _blocks(shape[1]):
        block = block.to(dtype)
        x = x0.detach().requires_grad_(True)
        y = block(x)
        y.backward(torch.randn_like(y))
    triton_attn.functional.se(x0, torch.randn(8, shape[1]).to(dtype), None, torch.randn(shape[1], 8).to(dtype), pool="max")


def _scenario():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for layout in ("nchw", "channels_last"):
            _run_blocks(dtype, layout)
    # The tiles the heuristics choose on real shapes (ResNet-50 stage 1 in
    # both layouts), and a split reduction, on a small tensor: the kernels
    # mask the excess, the compiler sees the real block sizes.
    for layout, real_shape in (("nchw", (32, 256, 56, 56)), ("channels_last", (32, 256, 56, 56)), ("channels_last", (128, 2048, 7, 7))):
        cfg = launch_config.tile_config(real_shape[1], real_shape[2] * real_shape[3], layout == "channels_last")
        with launch_config.override(block_c=cfg.block_c, block_hw=cfg.block_hw, num_warps=cfg.num_warps, split=2):
            _run_blocks(torch.bfloat16, layout, shape=(1, 24, 6, 6))
    # The largest tiles the autotune spaces offer (8192 elements, 8 warps).
    for layout, (block_c, block_hw) in (("nchw", (8, 1024)), ("channels_last", (256, 32))):
        with launch_config.override(block_c=block_c, block_hw=block_hw, num_warps=8):
            _run_blocks(torch.bfloat16, layout, shape=(1, 24, 6, 6))


def test_every_launch_compiles_for_sm90_and_sm80(monkeypatch):
    launches = _record_launches(monkeypatch, _scenario)
    names = {launch["name"] for launch in launches}
    assert len(launches) >= 40, len(launches)
    assert {"channel_pool_kernel", "channel_scale_kernel", "channel_gate_grad_kernel",
            "channel_scale_backward_kernel", "spatial_stats_kernel", "cbam_scale_kernel", "se_gate_kernel"} <= names, names
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    worker = Path(__file__).with_name("hopper_compile_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), "90", "80"], input=json.dumps(launches),
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2 * len(launches), proc.stderr[-4000:]
    failures = [r for r in results if not r["ok"]]
    assert not failures, "\n\n".join(
        f"{r['name']} sm_{r['arch']} {r['constexprs']} {r['signature']}\n{r['error']}" for r in failures[:5]
    )
