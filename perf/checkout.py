"""Import triton_attn from a plain checkout, without ``pip install``.

The distribution ships ``kernels/`` (at the repository root) as
``triton_attn.kernels`` (pyproject's package-dir). An installed or editable
copy resolves that name itself; a bare checkout on ``sys.path``
(``PYTHONPATH=.``, as on a GPU machine with no network for an install step)
does not, and ``import triton_attn`` fails on its first kernel import. This
finder sits at the end of ``sys.meta_path``: it is asked only when every
other finder has failed, and then maps ``triton_attn.kernels`` to the
checkout's ``kernels/`` folder (its submodules are found through the
package's ``__path__`` as usual)."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KERNELS_DIR = REPO_ROOT / "kernels"
NAME = "triton_attn.kernels"


class _CheckoutKernelsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != NAME or not (KERNELS_DIR / "__init__.py").is_file():
            return None
        parent = sys.modules.get("triton_attn")
        # Only for the checkout's own triton_attn: never graft these kernels
        # onto another copy of the package.
        if parent is None or Path(getattr(parent, "__file__", "") or "").resolve().parent != REPO_ROOT / "triton_attn":
            return None
        return importlib.util.spec_from_file_location(
            NAME, KERNELS_DIR / "__init__.py", submodule_search_locations=[str(KERNELS_DIR)]
        )


def ensure_importable() -> None:
    """Install the fallback finder once (idempotent, costs nothing when an
    installed copy answers first)."""
    if not any(isinstance(f, _CheckoutKernelsFinder) for f in sys.meta_path):
        sys.meta_path.append(_CheckoutKernelsFinder())
