"""Test configuration. Without a GPU the Triton kernels run under the
interpreter, which must be switched on before triton_attn imports them."""
import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# A user's autotune cache must not steer (or warn in) the tests: each test
# session gets its own, empty one unless the caller chose a directory.
os.environ.setdefault("TRITON_ATTN_CACHE_DIR", tempfile.mkdtemp(prefix="triton_attn_test_cache_"))
# Inductor's on-disk caches do not key on a custom op's Python fake or
# implementation: a graph compiled against another revision of the ops could
# be served here. Each test session compiles into a fresh directory.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="triton_attn_test_inductor_"))

import pytest  # noqa: E402

import triton_attn  # noqa: E402,F401  (kernels are decorated now, after the env var)


@pytest.fixture
def device() -> str:
    """CUDA when it can run the kernels, else CPU under the interpreter."""
    return "cuda" if torch.cuda.is_available() and not triton_attn.INTERPRETED else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
