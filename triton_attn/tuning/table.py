"""Tuned choices in memory, loaded lazily from the cache file: the launch
path pays two dict lookups per launch, the file is read once per process.

``TRITON_ATTN_CACHE_DIR`` is read when the first tuned launch (or lookup)
happens; call ``reset()`` after changing it inside a process (tests do).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import torch
import triton

from . import cache, registry
from .config import LaunchConfig
from .device import device_name
from .key import key_from_str, key_to_str


@dataclasses.dataclass(frozen=True)
class Entry:
    """A tuned choice and the evidence for it."""
    config: LaunchConfig
    ms: float
    runner_up: LaunchConfig | None
    runner_up_ms: float | None
    n_configs: int

    def to_json(self) -> dict:
        return {
            "config": self.config.to_json(),
            "ms": self.ms,
            "runner_up": self.runner_up.to_json() if self.runner_up is not None else None,
            "runner_up_ms": self.runner_up_ms,
            "n_configs": self.n_configs,
        }

    @classmethod
    def from_json(cls, d) -> "Entry":
        if not isinstance(d, dict):
            raise ValueError(f"not a tuned entry: {d!r}")
        try:
            ms = float(d["ms"])
            runner_up = LaunchConfig.from_json(d["runner_up"]) if d.get("runner_up") is not None else None
            ru_ms = float(d["runner_up_ms"]) if d.get("runner_up_ms") is not None else None
            entry = cls(LaunchConfig.from_json(d["config"]), ms, runner_up, ru_ms, int(d["n_configs"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a tuned entry: {d!r}") from e
        if not math.isfinite(ms) or entry.n_configs < 1:
            raise ValueError(f"not a tuned entry: {d!r}")
        return entry


_tables: dict[tuple[str, torch.device], dict[tuple, Entry]] = {}
_path: Path | None = None
_sections: list[dict] | None = None
#: Bumped whenever a tuned choice appears or the table is reset: the
#: launchers' memoised launch specs are only valid for one generation.
_generation = 0


def generation() -> int:
    return _generation


def _bump() -> None:
    global _generation
    _generation += 1


def reset() -> None:
    """Forget everything loaded (and warned about): the next lookup re-reads
    ``TRITON_ATTN_CACHE_DIR`` and the file."""
    global _path, _sections
    _bump()
    _tables.clear()
    _path = None
    _sections = None
    cache.forget_warnings()


def path() -> Path:
    global _path
    if _path is None:
        _path = cache.cache_path()
    return _path


def section_for(kernel: str, device: torch.device) -> dict:
    tk = registry.get(kernel)
    return {
        "kernel": kernel,
        "source_hash": tk.source_hash,
        "space_hash": hashlib.sha256(tk.space.fingerprint().encode()).hexdigest()[:16],
        "device": device_name(device),
        "triton": triton.__version__,
    }


def _superseded(s: dict, current: dict) -> bool:
    """Same kernel, device and Triton, older kernel source or config space."""
    same_slot = all(s[f] == current[f] for f in ("kernel", "device", "triton"))
    return same_slot and not cache.same_section(s, current)


def _load(kernel: str, device: torch.device) -> dict[tuple, Entry]:
    global _sections
    p = path()
    if _sections is None:
        _sections = cache.read_sections(p)
    current = section_for(kernel, device)
    table: dict[tuple, Entry] = {}
    for s in _sections:
        if cache.same_section(s, current):
            for k, v in s["entries"].items():
                try:
                    table[key_from_str(k)] = Entry.from_json(v)
                except ValueError as e:
                    cache.warn_once(p, f"corrupted entry ignored ({e})")
        elif _superseded(s, current):
            cache.warn_once(p, f"stale: configs for {kernel} on {current['device']} were tuned for another "
                               "kernel source or config space; ignored, they will be replaced")
    _tables[(kernel, device)] = table
    return table


def lookup(kernel: str, device: torch.device, key: tuple) -> Entry | None:
    table = _tables.get((kernel, device))
    if table is None:
        table = _load(kernel, device)
    return table.get(key)


def store(kernel: str, device: torch.device, key: tuple, entry: Entry) -> bool:
    """Keeps ``entry`` for this process and persists it; False when the
    cache directory could not be written (warned once)."""
    table = _tables.get((kernel, device))
    if table is None:
        table = _load(kernel, device)
    table[key] = entry
    _bump()
    current = section_for(kernel, device)
    return cache.write_entries(
        path(), current, {key_to_str(key): entry.to_json()}, drop=lambda s: _superseded(s, current)
    )
