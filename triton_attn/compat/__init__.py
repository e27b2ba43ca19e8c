"""Drop-in compatibility: ``convert`` (and its recognition ``rules``), the
seed article's classes (``seed``, also importable as
``triton_attn.seed_compat``), torchvision's and timm EfficientNet's SE
classes, and timm's ``create_attn``."""
