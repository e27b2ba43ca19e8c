"""Device code of triton_attn: ``@triton.jit`` kernels only.

Shipped as ``triton_attn.kernels`` (setuptools package-dir mapping), never as a
top-level ``kernels`` package: a different PyPI project owns that name.
Launchers, autograd and torch.library registration live in ``triton_attn``.
"""
