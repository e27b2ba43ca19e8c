"""Config spaces of the channel-attention kernels, pruned per problem.

Every space yields power-of-two tiles oriented along the contiguous axis
(H*W for NCHW, C for channels_last), so that each warp reads whole 128-byte
lines; the other tile side is whatever fills the tile's element budget.
Pruning happens before any timing:

- a block bigger than its dimension is clamped to next_pow2(dim), and the
  clamped duplicates dropped (a 256-wide C block for C=24 is the 32 block,
  plus 224 masked lanes);
- a split that leaves a split without a single block of the reduced axis
  is dropped, and splits are stored as the split the launcher really runs
  (each split is rounded up to whole blocks, so nominal 32 can run as 25);
- on a GPU, a split is only tried while the programs before it leave SMs
  idle: past that it only adds a combine;
- under Triton's interpreter num_warps changes nothing (it runs each
  program as numpy), so it is not varied there; num_stages is not varied
  anywhere (no kernel's loop is software-pipelined on sm_90, see
  ``ReductionSpace``).

Adding a kernel: pick the space whose loop structure matches (a loop over
H*W with a host-combined split -> ``ReductionSpace``; one tile per program
-> ``TileSpace``), or subclass ``Space`` with its own ``candidates``.
"""
from __future__ import annotations

import dataclasses

from .config import LaunchConfig
from .key import pow2_bucket


@dataclasses.dataclass(frozen=True)
class Problem:
    """What a space needs to know about one launch."""
    N: int
    C: int
    HW: int
    chan_contiguous: bool
    #: None under the interpreter (no SMs to fill).
    num_sms: int | None
    interpreted: bool


def effective_split(length: int, block: int, split: int) -> int:
    """Splits the launcher really runs: each split is whole blocks of the
    reduced axis (H*W, or C for CBAM's per-pixel statistics)."""
    per_split = -(-(-(-length // split)) // block) * block
    return -(-length // per_split)


@dataclasses.dataclass(frozen=True)
class Space:
    fast_blocks_hw: tuple[int, ...]
    fast_blocks_c: tuple[int, ...]
    tile_elems: tuple[int, ...]
    warps: tuple[int, ...]

    def fingerprint(self) -> str:
        """Goes into the cache namespace: a changed space re-tunes."""
        return repr(self)

    def tiles(self, p: Problem) -> list[tuple[int, int]]:
        """(block_c, block_hw) pairs, clamped to the problem and deduplicated."""
        c_max, hw_max = pow2_bucket(p.C), pow2_bucket(p.HW)
        fast_blocks, fast_max = (self.fast_blocks_c, c_max) if p.chan_contiguous else (self.fast_blocks_hw, hw_max)
        out = []
        for fast in fast_blocks:
            fast = min(fast, fast_max)
            for elems in self.tile_elems:
                other = max(1, elems // fast)
                tile = (fast, min(other, hw_max)) if p.chan_contiguous else (min(other, c_max), fast)
                if tile not in out:
                    out.append(tile)
        return out

    def normalize(self, cfg: LaunchConfig, p: Problem) -> LaunchConfig:
        """The interpreter ignores warps and stages: one value stands for all."""
        if p.interpreted:
            return dataclasses.replace(cfg, num_warps=self.warps[0], num_stages=None)
        return cfg

    def candidates(self, p: Problem) -> list[LaunchConfig]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class TileSpace(Space):
    """Kernels that handle one tile per program and have no loop (the
    broadcast multiply and its backward): the tile alone sets the programs
    per sample, cdiv(C, BC) * cdiv(HW, BHW).

    Why these candidates: fast-axis blocks from one 128-byte line of fp32
    (32) to 4 KiB rows (1024, the longest NCHW row worth one program for
    56x56 maps); tiles of 1K-8K elements, i.e. 8-64 elements per thread at 4
    warps: below that a program is all index math, above it registers spill.
    4 or 8 warps: 8 hides more latency on large tiles, 4 keeps more programs
    resident. No num_stages: without a loop there is nothing to pipeline.
    """
    fast_blocks_hw: tuple[int, ...] = (64, 128, 256, 512, 1024)
    fast_blocks_c: tuple[int, ...] = (32, 64, 128, 256)
    tile_elems: tuple[int, ...] = (1024, 2048, 4096, 8192)
    warps: tuple[int, ...] = (4, 8)

    def candidates(self, p: Problem) -> list[LaunchConfig]:
        warps = self.warps[:1] if p.interpreted else self.warps
        return [LaunchConfig(bc, bhw, w) for bc, bhw in self.tiles(p) for w in warps]


@dataclasses.dataclass(frozen=True)
class ReductionSpace(Space):
    """Kernels that loop over one axis (``reduced``: H*W for the channel
    pooling and sum dy*x, C for CBAM's per-pixel statistics) and write
    [SPLIT, N, other axis] partials the host combines: the split is a
    host-side choice (buffer shape and grid), which is why the tuner owns
    the loop.

    Why these candidates: tiles of 2K-8K fp32 accumulators (the heuristic's
    4K and one step either side: each loop trip should have enough loads in
    flight, and the accumulator must stay in registers); splits in powers of
    two up to 64, enough to fill 132 SMs x 4 waves from a single sample's 1-8
    C-blocks (1x64x112x112). No num_stages: compiled for sm_90, these loops
    carry no cp.async pipeline, so every stage count gives the same machine
    code (the candidates would be duplicates).
    """
    fast_blocks_hw: tuple[int, ...] = (64, 128, 256, 512, 1024)
    fast_blocks_c: tuple[int, ...] = (32, 64, 128, 256)
    tile_elems: tuple[int, ...] = (2048, 4096, 8192)
    warps: tuple[int, ...] = (4, 8)
    splits: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    #: Programs that fill a GPU: 4 per SM, the heuristic's target.
    waves: int = 4
    reduced: str = "hw"

    def split_choices(self, p: Problem, block_c: int, block_hw: int) -> list[int]:
        if self.reduced == "hw":
            length, block, programs = p.HW, block_hw, p.N * -(-p.C // block_c)
        else:
            length, block, programs = p.C, block_c, p.N * -(-p.HW // block_hw)
        out: list[int] = []
        for s in self.splits:
            s = effective_split(length, block, s)
            if s in out:
                continue
            if out and p.num_sms is not None and programs * out[-1] >= self.waves * p.num_sms:
                break
            out.append(s)
        return out

    def candidates(self, p: Problem) -> list[LaunchConfig]:
        warps = self.warps[:1] if p.interpreted else self.warps
        return [
            LaunchConfig(bc, bhw, w, None, s)
            for bc, bhw in self.tiles(p)
            for s in self.split_choices(p, bc, bhw)
            for w in warps
        ]


REDUCTION = ReductionSpace()
#: CBAM's reductions over C per pixel strip (spatial statistics and their
#: backward): the same candidates, the split taken along C.
CHANNEL_REDUCTION = ReductionSpace(reduced="c")
TILE = TileSpace()
