"""argparse value types shared by the harness's commands (``python -m perf``,
``perf traffic``, ``perf host``, ``perf gpu``)."""
from __future__ import annotations

import argparse


def choices(allowed):
    """A comma-separated subset of ``allowed`` (blank items ignored)."""
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return values

    return parse


def shapes(text):
    """``"N,C,H,W;N,C,H,W"`` -> [(N, C, H, W), ...] (``perf.traffic.plan.parse_shapes``)."""
    from .traffic.plan import parse_shapes

    try:
        return parse_shapes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
