"""The tuned-config file shared by all processes: ``autotune.json`` in
``TRITON_ATTN_CACHE_DIR`` (default ``$XDG_CACHE_HOME/triton_attn``, i.e.
``~/.cache/triton_attn``).

Layout: ``{"format": 1, "sections": [{"kernel", "source_hash",
"space_hash", "device", "triton", "entries": {key: entry}}]}``: one section
per kernel source, config space, device name and Triton version, so nothing
tuned for another GPU, Triton release or kernel revision is ever reused.

A cache is a convenience: a missing, corrupted, stale or unreadable file is
ignored with one warning, and a directory that cannot be written only means
nothing persists. Writers take a file lock, merge with what is on disk and
replace the file atomically (temp file + os.replace), so two processes
tuning at once keep both their results and never leave half a file.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

try:
    import filelock
except ImportError:  # pragma: no cover - a dependency; os.replace alone still never tears the file
    filelock = None

FORMAT = 1
FILE_NAME = "autotune.json"
#: Seconds a writer waits for another process's write before giving up on
#: persisting this result (it stays in memory).
LOCK_TIMEOUT_S = 30.0
SECTION_FIELDS = ("kernel", "source_hash", "space_hash", "device", "triton")

_warned: set[str] = set()


def cache_dir() -> Path:
    env = os.environ.get("TRITON_ATTN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "triton_attn"


def cache_path() -> Path:
    return cache_dir() / FILE_NAME


def warn_once(path: Path, message: str) -> None:
    """One warning per cache file and process, however many launches hit
    it: the first trouble is the one reported."""
    if str(path) in _warned:
        return
    _warned.add(str(path))
    warnings.warn(f"triton_attn autotune cache {path}: {message}", RuntimeWarning, stacklevel=3)


def forget_warnings() -> None:
    _warned.clear()


def _valid_section(s) -> bool:
    return (
        isinstance(s, dict)
        and all(isinstance(s.get(f), str) for f in SECTION_FIELDS)
        and isinstance(s.get("entries"), dict)
    )


def _parse(text: str) -> list[dict]:
    data = json.loads(text)
    if not isinstance(data, dict) or "format" not in data:
        raise ValueError("not an autotune cache")
    if data["format"] != FORMAT:
        raise _Stale(f"format {data['format']!r}, this version reads {FORMAT}")
    sections = data.get("sections")
    if not isinstance(sections, list) or not all(_valid_section(s) for s in sections):
        raise ValueError("malformed sections")
    return sections


class _Stale(ValueError):
    pass


def read_sections(path: Path, *, quiet: bool = False) -> list[dict]:
    """Sections of the file, [] when it is missing or unusable (warned once
    unless ``quiet``: a writer re-reading under the lock has nothing to add)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        if not quiet:
            warn_once(path, f"unreadable ({e}); tuned configs are not loaded from it")
        return []
    try:
        return _parse(text)
    except _Stale as e:
        if not quiet:
            warn_once(path, f"stale ({e}); ignored, it will be rewritten when something is tuned")
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        if not quiet:
            warn_once(path, f"corrupted ({e}); ignored, it will be rewritten when something is tuned")
    return []


def same_section(a: dict, b: dict) -> bool:
    return all(a[f] == b[f] for f in SECTION_FIELDS)


def write_entries(path: Path, section: dict, entries: dict, *, drop=lambda s: False) -> bool:
    """Merges ``entries`` into ``section`` on disk, dropping the sections
    ``drop`` says are superseded. False (and one warning) when nothing
    could be written; the caller keeps its results in memory."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S) if filelock else None
        if lock is not None:
            with lock:
                _merge_and_replace(path, section, entries, drop)
        else:  # pragma: no cover
            _merge_and_replace(path, section, entries, drop)
        return True
    except OSError as e:  # read-only or missing dir, lock timeout (filelock.Timeout is a TimeoutError)
        warn_once(path, f"cannot be written ({e}); tuned configs are kept in this process only")
        return False


def _merge_and_replace(path: Path, section: dict, entries: dict, drop) -> None:
    sections = [s for s in read_sections(path, quiet=True) if not drop(s)]
    for s in sections:
        if same_section(s, section):
            s["entries"].update(entries)
            break
    else:
        sections.append({**{f: section[f] for f in SECTION_FIELDS}, "entries": dict(entries)})
    fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "sections": sections}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; keep the mode the cache already had.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.is_file() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
