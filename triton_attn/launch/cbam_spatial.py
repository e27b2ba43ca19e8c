"""Host side of CBAM's spatial branch on the small [N, M, H, W] map
(kernels/cbam_spatial.py): the k x k conv, BatchNorm and gate forward in one
launch, their backward in one (two with training BatchNorm), each with its
pure-PyTorch twin (one program: the whole batch at once)."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..activations import GATE_CODES, gate_forward
from ..kernels.cbam_spatial import cbam_spatial_backward_kernel, cbam_spatial_kernel
from ..runtime import launch, sm_count_override
from ..tuning.device import num_sms
from . import config as launch_config
from .config import cdiv, next_pow2
from .se_gate import gate_backward_from_output

#: BatchNorm modes of the kernels: none, eval (running statistics), training.
BN_NONE, BN_EVAL, BN_TRAIN = 0, 1, 2
#: Pixels a program takes on before a sample is split into row blocks (each
#: then also folds its halo): splitting pays only for large maps at small N.
_PIXELS_PER_PROGRAM = 1024
#: Elements of the [T_PAD, BLOCK_P] conv tile (T = taps on the first axis):
#: 8 per thread at 8 warps, so that the gathered tiles and their 64-bit
#: addresses fit in registers (~80 a thread: over 25% occupancy on sm_90).
_TILE_ELEMS = 2048
_WARPS = 8


class SpatialSpec(NamedTuple):
    programs: int
    rows: int
    num_pb: int
    win: int
    taps: int
    fold_w: int
    kwargs: dict


_specs: dict = {}


def spatial_spec(N: int, H: int, W: int, maps: int, K: int, device: torch.device, use_kernel: bool) -> SpatialSpec:
    """Row blocks per sample (PB): 1 unless the GPU has more SMs than
    samples and the map is large; the window is a block's rows and the
    conv's halo. The twin runs as one program over everything."""
    T = maps * K * K
    fold_w = next_pow2(T + 2)
    if not use_kernel:
        return SpatialSpec(1, H, 1, H * W, T, fold_w, {})
    overrides = launch_config._overrides
    key = (N, H, W, maps, K, device, sm_count_override())
    if not overrides:
        hit = _specs.get(key)
        if hit is not None:
            return hit
    if "split" in overrides:
        pb = max(1, min(H, overrides["split"]))
    else:
        sms = num_sms(device)
        pb = max(1, min(H, cdiv(H * W, _PIXELS_PER_PROGRAM), cdiv(sms, max(N, 1)))) if sms else 1
    rows = cdiv(H, pb)
    pb = cdiv(H, rows)
    pad = (K - 1) // 2
    win = min(rows + 2 * pad, H) * W
    t_pad = max(2, next_pow2(T))
    block_p = max(16, min(next_pow2(rows * W), _TILE_ELEMS // t_pad))
    block_f = max(16, min(next_pow2(win), 1024))
    kwargs = dict(M=maps, K=K, T_PAD=t_pad, BLOCK_F=block_f, BLOCK_P=block_p, num_warps=_WARPS)
    spec = SpatialSpec(N * pb, rows, pb, win, T, fold_w, kwargs)
    if not overrides:
        _specs[key] = spec
    return spec


def _conv_input(maps, N, H, W, light: bool, max_first: bool):
    mean, mx = maps[0].reshape(N, 1, H, W), maps[1].reshape(N, 1, H, W)
    if light:
        return 0.5 * mean + 0.5 * mx
    return torch.cat([mx, mean] if max_first else [mean, mx], 1)


def _eval_scale(gamma, rm, rv, eps, acc):
    invstd = 1.0 / torch.sqrt(rv.to(acc) + eps)
    return (invstd if gamma is None else gamma.to(acc) * invstd), rm.to(acc), invstd


def spatial(spec: SpatialSpec, use_kernel: bool, part, split: int, maps, work, sw, z, sa, bnp,
            gamma, beta, rm, rv, eps: float, bn: int, H: int, W: int, light: bool, max_first: bool, gate: str) -> None:
    """Forward: fold the statistics partials ``part`` [2, SPLIT, N, H*W] into
    ``maps`` [2, N, H*W] (mean, max), conv them with ``sw``, store the conv
    output ``z`` [N, H*W] and either sa = gate(bn(z)) (no / eval BN) into
    ``sa`` or (training BN) per-program (count, mean, M2) into ``bnp``
    [PROGRAMS, 3]. ``work``: [PROGRAMS, 2, WIN] scratch."""
    N = maps.shape[1]
    K = sw.shape[-1]
    if use_kernel:
        some = z
        launch(
            cbam_spatial_kernel, (spec.programs,),
            part, maps, work, sw, z, sa, bnp if bnp is not None else some,
            gamma if gamma is not None else some, beta if beta is not None else some,
            rm if rm is not None else some, rv if rv is not None else some,
            N, H, W, split, spec.rows, spec.num_pb, spec.win, float(eps),
            MAX_FIRST=max_first, BN=bn, HAS_GAMMA=gamma is not None, HAS_BETA=beta is not None,
            GATE=GATE_CODES[gate], **spec.kwargs,
        )
        return
    acc = z.dtype
    maps[0] = part[0].sum(0)
    maps[1] = part[1].amax(0)
    s = _conv_input(maps, N, H, W, light, max_first)
    zz = F.conv2d(s, sw.to(acc), padding=K // 2).reshape(N, H * W)
    z.copy_(zz)
    if bn == BN_TRAIN:
        mean = zz.mean()
        bnp[0, 0].fill_(N * H * W)
        bnp[0, 1] = mean
        bnp[0, 2] = ((zz - mean) ** 2).sum()
        return
    u = zz
    if bn == BN_EVAL:
        scale, mean, _ = _eval_scale(gamma, rm, rv, eps, acc)
        u = (zz - mean) * scale + (0.0 if beta is None else beta.to(acc))
    sa.copy_(gate_forward(u, gate))


def spatial_backward(spec: SpatialSpec, use_kernel: bool, phase: int, part, split: int, sa, z, maps, bnstat, du, work,
                     sw, coef, wpart, gamma, rm, rv, eps: float, bn: int, C: int, H: int, W: int, light: bool,
                     max_first: bool, gate: str) -> None:
    """Backward: from the gradient pass's partials ``part`` [2, SPLIT, N,
    H*W] (d sa sums, tie counts of the max over C) to the dx pass's
    per-pixel coefficients ``coef`` [2, N, H*W] (d mean_c / C, d amax_c /
    ties) and the weight-gradient partials ``wpart`` [PROGRAMS, FOLD_W]
    (conv taps, BN weight, BN bias). ``phase``: 0 (no / eval BN), or 1 then 2
    (training BN; the twin does everything at phase 1 and nothing at 2)."""
    N = maps.shape[1]
    K = sw.shape[-1]
    if use_kernel:
        some = z
        launch(
            cbam_spatial_backward_kernel, (spec.programs,),
            part, sa, z, maps, bnstat if bnstat is not None else some, du if du is not None else some, work, sw, coef,
            wpart, gamma if gamma is not None else some, rm if rm is not None else some, rv if rv is not None else some,
            N, C, H, W, split, spec.rows, spec.num_pb, spec.win, float(eps),
            FOLD_W=spec.fold_w, MAX_FIRST=max_first, BN=bn, PHASE=phase, HAS_GAMMA=gamma is not None,
            GATE=GATE_CODES[gate], **spec.kwargs,
        )
        return
    if phase == 2:
        return
    acc = z.dtype
    T = spec.taps
    M = N * H * W
    dsa = part[0].sum(0)
    cnt = part[1].sum(0)
    dU = gate_backward_from_output(sa, dsa, gate)
    dgamma = dbeta = None
    if bn == BN_TRAIN:
        zhat = (z - bnstat[0]) * bnstat[1]
        dgamma, dbeta = (dU * zhat).sum(), dU.sum()
        scale = bnstat[1] if gamma is None else gamma.to(acc) * bnstat[1]
        dz = scale * (dU - dbeta / M - zhat * (dgamma / M))
    elif bn == BN_EVAL:
        scale, mean, invstd = _eval_scale(gamma, rm, rv, eps, acc)
        dgamma, dbeta = (dU * ((z - mean) * invstd)).sum(), dU.sum()
        dz = dU * scale
    else:
        dz = dU
    s = _conv_input(maps, N, H, W, light, max_first)
    ds, dw, _ = torch.ops.aten.convolution_backward(
        dz.reshape(N, 1, H, W), s, sw.to(acc), None, [1, 1], [K // 2, K // 2], [1, 1], False, [0, 0], 1,
        [True, True, False],
    )
    if light:
        dmean = dmax = 0.5 * ds[:, 0]
    elif max_first:
        dmean, dmax = ds[:, 1], ds[:, 0]
    else:
        dmean, dmax = ds[:, 0], ds[:, 1]
    coef[0] = dmean.reshape(N, H * W) / C
    dmax = dmax.reshape(N, H * W)
    coef[1] = torch.where(cnt > 0, dmax / cnt.clamp_min(1), torch.full_like(dmax, float("nan")))
    wpart[0, :T] = dw.reshape(-1)
    if dgamma is not None:
        wpart[0, T] = dgamma
        wpart[0, T + 1] = dbeta
