"""Every kernel variant the blocks launch, compiled by Triton's real compiler
for Hopper (sm_90) and Ampere (sm_80) -- no GPU needed -- and the machine
code's quality on Hopper.

The interpreter checks arithmetic and indexing but accepts code the compiler
rejects (and never lowers to PTX). This test records each distinct launch
(kernel, argument types, constexprs, warps) that the SE/ECA/CBAM blocks and
the fused tail make under the interpreter, forward and backward, for every
dtype and layout, for the tile shapes the heuristics pick on real network
shapes, and on dense NCHW 7x7 and 14x14 maps, then compiles each one for
sm_90 and sm_80 in a subprocess without the interpreter.

Arguments are specialized as Triton's JIT specializes them on a GPU
(integers and pointers divisible by 16 get the divisibility attribute that
makes vector loads possible, integers equal to 1 become constants), so the
code compiled here is the code a GPU runs. For sm_90 the worker reports each
kernel's registers, spills, shared memory, theoretical occupancy and widest
global load/store; the test asserts no spills, at least 25% occupancy at the
heuristic configs, and >= 8-byte vector accesses in the elementwise passes
over dense NCHW 7x7 and 14x14 maps. The report is printed (``pytest -s``)."""
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


def _divisible(value) -> bool:
    """What Triton's JIT marks ``tt.divisibility = 16`` on a GPU: pointers
    and integers divisible by 16 (bools and floats are never specialized)."""
    if isinstance(value, torch.Tensor):
        return value.data_ptr() % 16 == 0
    return isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0


#: Which scenario a launch came from: "heuristic" launches are what the
#: blocks run untuned (asserted on); "extreme" ones the autotune spaces' edges.
_TAG = {"now": "heuristic"}


def _record_launches(monkeypatch, scenario) -> list[dict]:
    from triton.runtime.interpreter import InterpretedFunction

    seen: dict[str, dict] = {}
    original = InterpretedFunction.run

    def recording_run(self, *args, **kwargs):
        fn = self.fn
        params = inspect.signature(fn).parameters
        bound = dict(zip(params, args))
        bound.update({k: v for k, v in kwargs.items() if k in params})
        signature, constexprs, divisible = {}, {}, []
        for i, (name, p) in enumerate(params.items()):
            value = bound.get(name, p.default)
            if "constexpr" in str(p.annotation):
                constexprs[name] = value
            elif isinstance(value, int) and not isinstance(value, bool) and value == 1:
                constexprs[name] = 1  # the JIT turns an integer 1 into a constant
            else:
                signature[name] = _arg_type(value)
                if _divisible(value):
                    divisible.append(i)
        options = {k: kwargs[k] for k in _LAUNCH_OPTIONS if kwargs.get(k) is not None}
        launch = {"module": fn.__module__, "name": fn.__name__, "signature": signature,
                  "constexprs": constexprs, "options": options, "divisible": divisible}
        key = json.dumps(launch, sort_keys=True)
        if key not in seen:
            seen[key] = dict(launch, tag=_TAG["now"])
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


def _core_blocks(C):
    """The blocks whose tiles differ by shape (the others reuse their kernels)."""
    return [
        triton_attn.SEModule(C, rd_channels=8, add_maxpool=True),
        triton_attn.EcaModule(C),
        triton_attn.CbamModule(C, rd_channels=8),
    ]


def _run_blocks(dtype, layout, shape=(2, 24, 5, 7), blocks=_blocks):
    x0 = make_input(shape, dtype, layout)
    for block in blocks(shape[1]):
        block = block.to(dtype)
        x = x0.detach().requires_grad_(True)
        y = block(x)
        y.backward(torch.randn_like(y))
    triton_attn.functional.se(x0, torch.randn(8, shape[1]).to(dtype), None, torch.randn(shape[1], 8).to(dtype), pool="max")


def _run_tails(dtype, layout, shape=(2, 24, 5, 7)):
    """The fused attention tail's launches: SE / ECA / no attention, training
    (batch statistics) and eval, a max pooling (ties), ReLU and SiLU."""
    from triton_attn.ops.tail import attention_tail

    N, C = shape[:2]
    w = lambda *s: torch.randn(*s).to(dtype)  # noqa: E731
    cases = [
        ("se", dict(w1=w(8, C), b1=w(8), w2=w(C, 8), b2=w(C), pool="avgmax"), "relu"),
        ("se", dict(w1=w(C, C), b1=w(C), w2=None, b2=None, gate="hard_sigmoid"), "silu"),
        ("eca", dict(w1=w(1, 1, 5)), "relu"),
        ("none", {}, "relu"),
    ]
    for attn, kw, act in cases:
        for training in (True, False):
            z = make_input(shape, dtype, layout, requires_grad=True)
            s = make_input(shape, dtype, layout, requires_grad=True)
            rm, rv, nbt = torch.zeros(C), torch.ones(C), torch.zeros((), dtype=torch.long)
            y = attention_tail(z, s, w(C) + 1, w(C), rm, rv, nbt, training, 0.1, 1e-5, attn, act=act,
                               drop=torch.ones(N, dtype=dtype) if training else None, **kw)
            y.backward(torch.randn_like(y))


def _scenario():
    for dtype in (torch.float32, torch.bfloat16):
        for layout in ("nchw", "channels_last"):
            _run_blocks(dtype, layout)
    _run_blocks(torch.float16, "channels_last", blocks=_core_blocks)
    # The tail's kernels take their element types from z alone (the small
    # buffers are fp32): fp32 and bf16 cover both load paths.
    for dtype, layout in ((torch.bfloat16, "nchw"), (torch.bfloat16, "channels_last")):
        _run_tails(dtype, layout)
    # The tiles the heuristics choose on real shapes (ResNet-50 stage 1 in
    # both layouts), and a split reduction, on a small tensor: the kernels
    # mask the excess, the compiler sees the real block sizes.
    for layout, real_shape in (("nchw", (32, 256, 56, 56)), ("channels_last", (32, 256, 56, 56)), ("channels_last", (128, 2048, 7, 7))):
        cfg = launch_config.tile_config(real_shape[1], real_shape[2] * real_shape[3], layout == "channels_last")
        with launch_config.override(block_c=cfg.block_c, block_hw=cfg.block_hw, num_warps=cfg.num_warps, split=2):
            _run_blocks(torch.bfloat16, layout, shape=(1, 24, 6, 6), blocks=_core_blocks)
    # Dense NCHW 7x7 and 14x14 maps with real channel counts (the heuristics'
    # own flat tiles): where rows of 49 or 196 elements are not 16-byte
    # aligned, the elementwise passes must still use vector accesses.
    # (64 channels: the flat tile is the 4096-element heuristic one already.)
    for shape in ((1, 64, 7, 7), (2, 64, 14, 14)):
        x = make_input(shape, torch.bfloat16, "nchw")
        for block in (triton_attn.SEModule(shape[1]), triton_attn.EcaModule(shape[1])):
            block = block.to(torch.bfloat16)
            xr = x.detach().requires_grad_(True)
            block(xr).backward(torch.randn_like(x))
        _run_tails(torch.bfloat16, "nchw", shape=shape)
    # The gate MLPs at their chunk caps: RD and C past 32 (the [N, C] kernels'
    # block sizes do not depend on H*W), one sample (N = 1 specialised to a
    # constant, as the JIT does) and a 32-sample block.
    for N in (1, 17):
        x = make_input((N, 64, 1, 2), torch.bfloat16, "nchw")
        for block in (triton_attn.SEModule(64, rd_channels=64, add_maxpool=True), triton_attn.EcaModule(64),
                      triton_attn.CbamModule(64, rd_channels=64), triton_attn.LightCbamModule(64, rd_channels=64)):
            block = block.to(torch.bfloat16)
            xr = x.detach().requires_grad_(True)
            block(xr).backward(torch.randn_like(x))
    # The largest tiles the autotune spaces offer (8192 elements, 8 warps).
    _TAG["now"] = "extreme"
    try:
        for layout, (block_c, block_hw) in (("nchw", (8, 1024)), ("channels_last", (256, 32))):
            with launch_config.override(block_c=block_c, block_hw=block_hw, num_warps=8):
                _run_blocks(torch.bfloat16, layout, shape=(1, 24, 6, 6), blocks=_core_blocks)
    finally:
        _TAG["now"] = "heuristic"


#: The [N, C] gate MLPs: one wave of at most 8 x ceil(N / 16) programs that
#: touch no activation memory, chained 3xTF32 dots whose latency, not
#: occupancy, sets their time. They may spill this much per thread (to L1)
#: and have no occupancy floor; smaller chunks that spill nothing cost 4x
#: the serial loop steps (see launch/se_gate.py). Everything that streams
#: x-sized memory must not spill at all.
_SPILL_ALLOWED = {"se_gate_kernel": 32, "se_gate_backward_a_kernel": 32, "se_gate_backward_b_kernel": 32,
                  "eca_gate_backward_kernel": 0, "cbam_conv_gate_backward_kernel": 0}


#: Kernels that visit each element once (no loop): the ones with flat tiles.
_ELEMENTWISE = {"channel_scale_kernel", "channel_scale_backward_kernel", "tail_apply_kernel", "tail_dz_kernel"}


def _report(results) -> str:
    rows = sorted((r for r in results if r["ok"] and r["arch"] == 90), key=lambda r: (r["name"], -r["regs"]))
    lines = [f"{'kernel':34} {'tag':9} {'warps':>5} {'regs':>4} {'spill':>5} {'smem':>6} {'occ':>5} {'ld B':>4} {'st B':>4}  constexprs"]
    for r in rows:
        ce = {k: v for k, v in r["constexprs"].items() if k.startswith(("BLOCK", "FLAT", "CONV", "POOL", "ACT", "GATE"))}
        lines.append(f"{r['name']:34} {r['tag']:9} {r['num_warps']:>5} {r['regs']:>4} {r['spill_bytes']:>5} {r['shared']:>6} "
                     f"{r['occupancy']:>5.0%} {r['max_load_bytes']:>4} {r['max_store_bytes']:>4}  {ce}")
    return "\n".join(lines)


def _select(launches):
    def bf16(launch):
        return "*bf16" in launch["signature"].values()

    kept = [launch for launch in launches if bf16(launch)]
    seen = set()
    for launch in launches:
        key = (launch["name"], launch["constexprs"].get("FLAT_HW", 0) > 0, tuple(sorted(set(launch["signature"].values()))))
        if not bf16(launch) and key not in seen:
            seen.add(key)
            kept.append(launch)
    return kept


def test_every_launch_compiles_for_sm90_and_sm80(monkeypatch):
    launches = _record_launches(monkeypatch, _scenario)
    names = {launch["name"] for launch in launches}
    assert len(launches) >= 40, len(launches)
    assert {"channel_pool_kernel", "channel_scale_kernel", "channel_gate_grad_kernel",
            "channel_scale_backward_kernel", "spatial_stats_kernel", "cbam_scale_kernel", "se_gate_kernel",
            "tail_stats_kernel", "tail_apply_kernel", "tail_grad_kernel", "tail_dz_kernel"} <= names, names
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    worker = Path(__file__).with_name("hopper_compile_worker.py")
    # sm_90: every launch with bf16 activations (the report and the checks),
    # and one launch per kernel, tile kind and element types for the other
    # dtypes; sm_80: one launch per kernel and tile kind. The compile is
    # what takes the time (~1 s a launch), the variants add little coverage.
    launches = _select(launches)
    ampere = list({(l["name"], l["constexprs"].get("FLAT_HW", 0) > 0): l for l in launches}.values())
    proc = subprocess.run(
        [sys.executable, str(worker)], input=json.dumps({"90": launches, "80": ampere}),
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(launches) + len(ampere), proc.stderr[-4000:]
    failures = [r for r in results if not r["ok"]]
    assert not failures, "\n\n".join(
        f"{r['name']} sm_{r['arch']} {r['constexprs']} {r['signature']}\n{r['error']}" for r in failures[:5]
    )
    report = _report(results)
    print("\nsm_90 machine code per launch (regs/thread, spill bytes, shared bytes, theoretical occupancy, widest global access)")
    print(report)
    hopper = [r for r in results if r["arch"] == 90]
    spills = [r for r in hopper if r["spill_bytes"] > _SPILL_ALLOWED.get(r["name"], 0)]
    assert not spills, "register spills:\n" + "\n".join(f"{r['name']} {r['constexprs']} {r['spill_bytes']} B" for r in spills)
    low = [r for r in hopper if r["tag"] == "heuristic" and r["occupancy"] < 0.25 and r["name"] not in _SPILL_ALLOWED]
    assert not low, "below 25% occupancy at a heuristic config:\n" + "\n".join(
        f"{r['name']} warps={r['num_warps']} regs={r['regs']} occ={r['occupancy']:.0%} {r['constexprs']}" for r in low)
    flat = [r for r in hopper if r["name"] in _ELEMENTWISE and r["constexprs"].get("FLAT_HW") in (49, 196)]
    assert flat, "no flat-tile launch on a 7x7 / 14x14 dense NCHW map was recorded"
    narrow = [r for r in flat if min(r["max_load_bytes"], r["max_store_bytes"]) < 8]
    assert not narrow, "scalar accesses on 7x7 / 14x14 NCHW:\n" + "\n".join(
        f"{r['name']} ld {r['max_load_bytes']} B st {r['max_store_bytes']} B {r['constexprs']}" for r in narrow)
