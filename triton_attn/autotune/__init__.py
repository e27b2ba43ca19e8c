"""Autotuning of the channel-attention kernels, per channel count: the
user-facing side (the ``python -m triton_attn.autotune`` CLI, its report and
presets, and the switches re-exported from ``triton_attn.tuning``).

The machinery lives one layer down, in ``triton_attn.tuning`` (it is part of
how a launch picks its config): each kernel with a real choice (tile over C
and H*W, warps, split over the reduced axis) has a config space
(``tuning.spaces``); a launch's tuning key is its exact C, its H*W and N
rounded up to powers of two, its layout, dtype and kernel variant
(``tuning.key``), so a new batch size in the same bucket reuses the choice.
Tuned choices persist in ``$TRITON_ATTN_CACHE_DIR/autotune.json`` (default
``~/.cache/triton_attn``), one section per kernel source, config space,
device and Triton version (``tuning.cache``).

Normal launches only *look up* tuned choices and fall back to the heuristics
in ``triton_attn.launch.config``; tuning runs only when enabled::

    TRITON_ATTN_AUTOTUNE=1 python train.py        # or:
    with triton_attn.autotune.tuning():
        model(x).sum().backward()                 # tunes every new key once

or offline, with a report: ``python -m triton_attn.autotune --shapes resnet50``.

Tuning a new kernel the same way (how CBAM's kernels plug in):

1. ``register("spatial_stats", spatial_stats_kernel, CHANNEL_REDUCTION)``
   in ``tuning/registry.py`` (``TILE`` for one tile per program, or a new
   ``Space`` subclass whose ``candidates(problem)`` yields pruned
   ``LaunchConfig`` objects, with a comment saying why those candidates);
2. in the launcher (``triton_attn/launch/``), wrap allocation + launch (+ any
   host combine) in a ``run(cfg)`` closure that honours every field of
   ``cfg`` and allocates what the kernel accumulates into, and call
   ``launch.config.run_tuned("spatial_stats", x, strides, variant, heuristic, run)``;
3. make sure the CLI's ``BLOCKS`` (``autotune/blocks.py``) runs the block.
"""
from ..tuning.cache import cache_dir, cache_path
from ..tuning.config import LaunchConfig
from ..tuning.key import KEY_FIELDS
from ..tuning.registry import register
from ..tuning.spaces import CHANNEL_REDUCTION, REDUCTION, TILE, Problem, ReductionSpace, Space, TileSpace
from ..tuning.table import Entry, lookup, reset
from ..tuning.tuner import enabled, recording, set_enabled, tuning

__all__ = [
    "KEY_FIELDS", "LaunchConfig", "Entry", "Problem", "Space", "TileSpace", "ReductionSpace",
    "REDUCTION", "CHANNEL_REDUCTION", "TILE", "cache_dir", "cache_path", "enabled", "set_enabled", "tuning", "recording",
    "register", "lookup", "reset",
]
