"""One launch configuration of a channel-attention kernel: the tile, the
warps and pipeline stages, and (for H*W reductions) the split over H*W."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    block_c: int
    block_hw: int
    num_warps: int
    #: None leaves Triton's default (3 on CUDA); only kernels that loop over
    #: H*W have anything to pipeline.
    num_stages: int | None = None
    #: programs per (sample, C-block) along H*W; only reductions read it, the
    #: host then combines the partials in a fixed order.
    split: int = 1

    def launch_kwargs(self) -> dict:
        """The launch options Triton reads besides the constexpr blocks."""
        kw = {"num_warps": self.num_warps}
        if self.num_stages is not None:
            kw["num_stages"] = self.num_stages
        return kw

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "LaunchConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or not {"block_c", "block_hw", "num_warps"} <= d.keys() or not d.keys() <= fields:
            raise ValueError(f"not a launch config: {d!r}")
        cfg = cls(**d)
        ints = [cfg.block_c, cfg.block_hw, cfg.num_warps, cfg.split] + ([cfg.num_stages] if cfg.num_stages is not None else [])
        if not all(type(v) is int and v >= 1 for v in ints):
            raise ValueError(f"launch config with a non-positive or non-integer field: {d!r}")
        if cfg.block_c & (cfg.block_c - 1) or cfg.block_hw & (cfg.block_hw - 1):
            raise ValueError(f"block sizes must be powers of two: {d!r}")
        return cfg

    def describe(self) -> str:
        """Short form for reports: ``BC=32 BHW=128 w=4 st=3 split=2``."""
        parts = [f"BC={self.block_c}", f"BHW={self.block_hw}", f"w={self.num_warps}"]
        if self.num_stages is not None:
            parts.append(f"st={self.num_stages}")
        if self.split != 1:
            parts.append(f"split={self.split}")
        return " ".join(parts)
