"""Autotuning of the channel-attention kernels, per channel count.

Each kernel with a real choice (tile over C and H*W, warps, stages, split
over H*W) has a config space (``spaces``); a launch's tuning key is its exact
C, its H*W and N rounded up to powers of two, its layout, dtype and kernel
variant (``key``), so a new batch size in the same bucket reuses the choice.
Tuned choices persist in ``$TRITON_ATTN_CACHE_DIR/autotune.json`` (default
``~/.cache/triton_attn``), one section per kernel source, config space,
device and Triton version (``cache``).

Normal launches only *look up* tuned choices (two dict lookups) and fall
back to the heuristics in ``triton_attn.launch_config``; tuning runs only
when enabled::

    TRITON_ATTN_AUTOTUNE=1 python train.py        # or:
    with triton_attn.autotune.tuning():
        model(x).sum().backward()                 # tunes every new key once

or offline, with a report: ``python -m triton_attn.autotune --shapes resnet50``.

Tuning a new kernel the same way (how CBAM's kernels plug in):

1. ``register("spatial_stats", spatial_stats_kernel, CHANNEL_REDUCTION)``
   in ``registry.py`` (``TILE`` for one tile per program, or a new ``Space``
   subclass whose ``candidates(problem)`` yields pruned ``LaunchConfig``
   objects, with a comment saying why those candidates);
2. in the launcher, wrap allocation + launch (+ any host combine) in a
   ``run(cfg)`` closure that honours every field of ``cfg`` and allocates
   what the kernel accumulates into, and call
   ``launch_config.run_tuned("spatial_stats", x, strides, variant, heuristic, run)``;
3. make sure the CLI's ``BLOCKS`` (``blocks.py``) runs the block.
"""
from .cache import cache_dir, cache_path
from .config import LaunchConfig
from .key import KEY_FIELDS
from .registry import register
from .spaces import CHANNEL_REDUCTION, REDUCTION, TILE, Problem, ReductionSpace, Space, TileSpace
from .table import Entry, lookup, reset
from .tuner import enabled, recording, set_enabled, tuning

__all__ = [
    "KEY_FIELDS", "LaunchConfig", "Entry", "Problem", "Space", "TileSpace", "ReductionSpace",
    "REDUCTION", "CHANNEL_REDUCTION", "TILE", "cache_dir", "cache_path", "enabled", "set_enabled", "tuning", "recording",
    "register", "lookup", "reset",
]
