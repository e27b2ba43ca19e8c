"""How a launch picks its config: tuning keys, config spaces, the tuned-config
table and its on-disk cache, and the tuning loop. Used by the launchers
(``triton_attn.launch.config.run_tuned``); the user-facing switches and the
CLI are ``triton_attn.autotune``."""
