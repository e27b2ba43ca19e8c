"""``python -m perf host``: host time per call, GPU launches excluded.

triton_attn runs its CUDA code path on CPU tensors with every launch stubbed
(``triton_attn.runtime.stubbed_launches``): what is timed is everything a call
does on the host — validation, config lookup, buffer allocation, the torch
glue ops, autograd, custom-op dispatch — except the kernels. Eager is timm's
module on the same CPU tensor, its CPU math included: at the issue's tiny
shape (1×64×8×8) that math is a few µs per op, so eager's time is its host
time; at larger shapes it is an upper bound that grows with the math (meta
tensors are no lower bound: their shape functions run in Python, slower than
the CPU kernels). ``bench`` times, ``profile`` says where triton_attn's time goes,
``worker`` runs both in a process with the interpreter off, ``cli`` prints
and writes ``perf/results/host.csv`` (machine-dependent: not committed)."""
