"""Swap a timm model's attention blocks for triton_attn's fused ones and check
that nothing changed: same state_dict keys, same logits, same input gradients.

    python examples/convert_timm_model.py                        # seresnet18
    python examples/convert_timm_model.py --model ecaresnet26t
    python examples/convert_timm_model.py --model resnet18 --attn cbam
    python examples/convert_timm_model.py --model mobilenetv3_large_100 --size 64

Weights are random (pretrained=False): the comparison does not need trained
ones. Without a GPU the Triton kernels run under Triton's interpreter on the
CPU (slow: keep --size small).
"""
from __future__ import annotations

import argparse
import os

import torch

if not torch.cuda.is_available():  # must be set before triton_attn is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import timm  # noqa: E402

import triton_attn  # noqa: E402


def logits_and_input_grad(model, x):
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    logits.float().sum().backward()
    return logits.detach(), x.grad


def rel_err(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog="examples:\n" + __doc__.split("\n\n", 1)[1].rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="seresnet18", help="a timm model name (default seresnet18)")
    p.add_argument("--attn", default=None, help="timm ResNet attn_layer to build it with (se, eca, cbam, ...)")
    p.add_argument("--size", type=int, default=32, help="input height and width (default 32)")
    p.add_argument("--batch", type=int, default=2, help="batch size")
    args = p.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not triton_attn.INTERPRETED else "cpu"
    print(f"device {device}: the fused blocks run {triton_attn.runtime.where_it_runs(device)}")
    kwargs = dict(pretrained=False, num_classes=10)
    if args.attn:
        kwargs["block_args"] = dict(attn_layer=args.attn)
    model = timm.create_model(args.model, **kwargs).to(device).eval()

    fused, report = triton_attn.convert(model)  # a converted copy; inplace=True edits model
    print(report)
    assert fused.state_dict().keys() == model.state_dict().keys()

    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    ref_logits, ref_grad = logits_and_input_grad(model, x)
    logits, grad = logits_and_input_grad(fused, x)
    errors = {"logits": rel_err(logits, ref_logits), "input gradient": rel_err(grad, ref_grad)}
    for what, err in errors.items():
        print(f"{what}: max |fused - original| / max |original| = {err:.2e}")
    return errors


if __name__ == "__main__":
    main()
