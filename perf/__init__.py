"""Benchmark harness of triton_attn: SE, ECA and CBAM against eager PyTorch,
torch.compile and a plain copy (the bandwidth floor).

``python -m perf`` measures and redraws; ``measure.py`` times, ``store.py``
keeps one long-format CSV per device, ``summary.py`` turns it into speedups,
``plot.py`` and ``readme_table.py`` render it. Plotting never measures.
Without a GPU, ``traffic/`` counts launches and bytes per call with the
instruments of ``accounting/`` (``python -m perf traffic``), and ``host/``
times the host side of a call with the launches stubbed (``python -m perf host``)."""
from pathlib import Path

from . import checkout as _checkout

_checkout.ensure_importable()  # triton_attn from a bare checkout (PYTHONPATH=.), no install

PERF_DIR = Path(__file__).resolve().parent
REPO_ROOT = PERF_DIR.parent
RESULTS_DIR = PERF_DIR / "results"
CHARTS_DIR = PERF_DIR / "charts"
README = REPO_ROOT / "README.md"

BLOCKS = ("se", "eca", "cbam")
MODES = ("fwd", "bwd", "fwd+bwd")
PROVIDERS = ("eager", "compile", "triton_attn", "copy")
DTYPES = ("bfloat16", "float16", "float32")
LAYOUTS = ("channels_last", "nchw")

#: A row's identity: re-measuring the same key replaces the row.
KEY = ("device", "block", "mode", "provider", "N", "C", "H", "W", "dtype", "layout")
COLUMNS = (
    "block", "mode", "provider", "N", "C", "H", "W", "dtype", "layout",
    "ms", "ms_p20", "ms_p80", "gbps", "device", "torch", "triton", "commit", "timestamp",
)
