"""Host launchers, one per kernel family (``kernels/<name>.py`` ->
``launch/<name>.py``): argument and buffer preparation, grid, the tuned or
heuristic config, and each launcher's pure-PyTorch twin (the CPU path when
Triton does not run). ``config`` holds the block-size heuristics, ``layout``
how a 4-D tensor is seen as [N, C, H*W]."""
