"""Host side of the SE gate MLP on the pooled statistics: g = gate(fc2(act(fc1(p)))),
one Triton launch at small batch, the torch MLP otherwise."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton

from ..runtime import launch, use_triton
from ..activations import GATE_CODES, HIDDEN_ACT_CODES, act_forward, gate_forward
from ..kernels.se_gate import se_gate_kernel

#: Above this batch the torch path wins: N programs each re-read both weight
#: matrices, while cuBLAS's GEMMs read them about once for the whole batch.
MAX_KERNEL_BATCH = 32
#: h[BLOCK_RD] lives in registers; wider hidden layers keep the torch MLP.
MAX_KERNEL_RD = 512
_TILE_ELEMENTS = 4096  # [BLOCK_RD, BLOCK_C] weight tile per loop step


def squeeze_pooled(pooled: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "avgmax":  # timm add_maxpool: 0.5 * mean + 0.5 * amax
        return 0.5 * pooled[0] + 0.5 * pooled[1]
    return pooled[0]


def as_matrix(w: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    # [out, in] or [out, in, 1, 1]; not reshape(out, -1), ambiguous when out = 0
    return w.reshape(w.shape[0], w.shape[1]).to(acc)


def _vec(b: Optional[torch.Tensor], acc: torch.dtype):
    return None if b is None else b.to(acc)


def mlp_forward(p, w1, b1, w2, b2, act, act_param):
    """z = fc2(act(fc1(p))), or z = fc1(p) when there is no fc2 (ESE)."""
    acc = p.dtype
    h = F.linear(p, as_matrix(w1, acc), _vec(b1, acc))
    if w2 is None:
        return h, h, None
    a = act_forward(h, act, act_param)
    return F.linear(a, as_matrix(w2, acc), _vec(b2, acc)), h, a


def kernel_applies(pooled: torch.Tensor, w1: torch.Tensor, w2: Optional[torch.Tensor], act: str) -> bool:
    _, N, C = pooled.shape
    rd = w1.shape[0]
    return (
        use_triton(pooled)
        and 0 < N <= MAX_KERNEL_BATCH
        and C > 0
        and 0 < rd <= MAX_KERNEL_RD
        and (w2 is None or act in HIDDEN_ACT_CODES)
    )


def se_gate(pooled, pool, w1, b1, w2, b2, act, act_param, gate) -> torch.Tensor:
    """[P, N, C] pooled statistics -> contiguous gate g [N, C] in their dtype."""
    if not kernel_applies(pooled, w1, w2, act):
        z, _, _ = mlp_forward(squeeze_pooled(pooled, pool), w1, b1, w2, b2, act, act_param)
        return gate_forward(z, gate).contiguous()
    if gate not in GATE_CODES:
        raise ValueError(f"gate must be one of {sorted(GATE_CODES)}, got {gate!r}")
    P, N, C = pooled.shape
    if pooled.stride(2) != 1:
        pooled = pooled.contiguous()
    w1m = w1.reshape(w1.shape[0], w1.shape[1])
    rd = w1m.shape[0]
    w2m = w2.reshape(w2.shape[0], w2.shape[1]) if w2 is not None else w1m
    b1v = b1.reshape(-1).contiguous() if b1 is not None else w1m
    b2v = b2.reshape(-1).contiguous() if b2 is not None else w1m
    g = torch.empty((N, C), device=pooled.device, dtype=pooled.dtype)
    block_rd = triton.next_power_of_2(rd)
    block_c = max(16, min(triton.next_power_of_2(C), _TILE_ELEMENTS // block_rd))
    launch(se_gate_kernel, (N,),
        pooled, w1m, b1v, w2m, b2v, g,
        C, rd, float(act_param),
        pooled.stride(0), pooled.stride(1),
        w1m.stride(0), w1m.stride(1), w2m.stride(0), w2m.stride(1),
        POOL_ROWS=P, HAS_B1=b1 is not None, HAS_FC2=w2 is not None, HAS_B2=b2 is not None,
        ACT=HIDDEN_ACT_CODES.get(act, 0) if w2 is not None else 0, GATE=GATE_CODES[gate],
        BLOCK_C=block_c, BLOCK_RD=block_rd, num_warps=4,
    )
    return g
