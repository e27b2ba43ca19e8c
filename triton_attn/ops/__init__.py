"""The ``torch.library`` ops (``triton_attn::<name>``) with their fake
(meta) implementations and autograd registrations, built on the launchers.
One op family per file, named after the block: ``se``, ``eca``, ``cbam``,
and ``unfused`` (pooling and scale alone, for gates the fused ops do not
cover)."""
