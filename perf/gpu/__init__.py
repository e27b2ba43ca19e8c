"""``python -m perf gpu``: the one-command GPU check (correctness on CUDA,
block benchmark, L2 tile order, end-to-end SE tax, autotune report), each
step time-boxed and its failures recorded, results saved after every step.
See ``cli.py`` for the command, ``plan.py`` for the time boxes,
``profiles.py`` for what each step runs on the GPU and in the dry run."""
