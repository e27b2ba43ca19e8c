"""Pure-PyTorch references: what every kernel is tested against (run them in
float64), and the eager baselines of the benchmark (timm's arithmetic, in the
input's dtype, as the unfused modules run it)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .activations import act_forward, canonical_name, create_act_layer, gate_forward


def pool_reference(x: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "avg":
        return x.mean((2, 3))
    if pool == "max":
        return x.amax((2, 3))
    if pool == "avgmax":
        return 0.5 * x.mean((2, 3)) + 0.5 * x.amax((2, 3))
    raise ValueError(f"unknown pool {pool!r}")


def se_reference(x, w1, b1=None, w2=None, b2=None, *, pool="avg", act="relu", act_param=0.0, gate="sigmoid"):
    """SE in x's dtype; weights are cast to it."""
    dt = x.dtype
    p = pool_reference(x, pool)
    h = F.linear(p, w1.reshape(w1.shape[0], -1).to(dt), None if b1 is None else b1.to(dt))
    if w2 is not None:
        h = act_forward(h, canonical_name(act), act_param)
        h = F.linear(h, w2.reshape(w2.shape[0], -1).to(dt), None if b2 is None else b2.to(dt))
    g = gate_forward(h, canonical_name(gate))
    return x * g[:, :, None, None]


def eca_reference(x, w, b=None, *, circular=False, gate="sigmoid"):
    """ECA in x's dtype, with F.conv1d (independent of our shifted-add form)."""
    dt = x.dtype
    N, C = x.shape[:2]
    k = w.numel()
    pad = (k - 1) // 2
    s = x.mean((2, 3)).reshape(N, 1, C)
    wk = w.reshape(1, 1, k).to(dt)
    if circular:
        idx = (torch.arange(-pad, C + pad, device=x.device) % C) if C > 0 else torch.arange(0, device=x.device)
        z = F.conv1d(s.index_select(2, idx), wk)
    else:
        z = F.conv1d(s, wk, padding=pad)
    if b is not None:
        z = z + b.reshape(()).to(dt)
    g = gate_forward(z.reshape(N, C), canonical_name(gate))
    return x * g[:, :, None, None]


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """timm's adaptive k: odd, at least 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


class EagerSEModule(nn.Module):
    """timm's SEModule arithmetic (the eager baseline of the benchmark)."""

    def __init__(self, channels, rd_channels, act_layer=nn.ReLU, gate_layer="sigmoid", add_maxpool=False, bias=True):
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.fc1(x_se)))
        return x * self.gate(x_se)


class EagerEcaModule(nn.Module):
    """timm's EcaModule / CecaModule arithmetic (the eager baseline)."""

    def __init__(self, channels, kernel_size=None, circular=False, gate_layer="sigmoid"):
        super().__init__()
        k = kernel_size or eca_kernel_size(channels)
        self.circular = circular
        self.padding = (k - 1) // 2
        self.conv = nn.Conv1d(1, 1, k, padding=0 if circular else self.padding, bias=False)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x):
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        if self.circular:
            y = F.pad(y, (self.padding, self.padding), mode="circular")
        y = self.conv(y)
        y = self.gate(y).view(x.shape[0], -1, 1, 1)
        return x * y.expand_as(x)


def cbam_reference(x, w1=None, b1=None, w2=None, b2=None, *, channel_conv=None, spatial_weight, bn=None,
                   spatial_concat="mean_max", act="relu", act_param=0.0, gate="sigmoid", light=False):
    """CBAM in x's dtype (run it in float64 for tests); weights are cast to it.

    Channel attention: the shared MLP ``w1 [rd,C(,1,1)], b1, w2 [C,rd(,1,1)], b2``
    (timm, seed "FC"), or ``channel_conv`` (an odd 1-D filter over channels, seed
    "Conv"). ``bn``: None (seed) or a callable applied to the N×1×H×W conv output
    (a BatchNorm2d, float64 for a float64 reference). ``light``: timm's
    LightCbamModule (0.5*mean+0.5*amax pooling both ways, one-map spatial conv;
    timm's gates are then sigmoids whatever its gate_layer: pass gate="sigmoid").
    ``spatial_concat``: "mean_max" (timm) or "max_mean" (CBAM, seed)."""
    dt = x.dtype
    N, C = x.shape[:2]
    gate = canonical_name(gate)

    def channel_f(p):
        if channel_conv is not None:
            k = channel_conv.numel()
            return F.conv1d(p.reshape(N, 1, C), channel_conv.reshape(1, 1, k).to(dt), padding=(k - 1) // 2).reshape(N, C)
        h = F.linear(p, w1.reshape(w1.shape[0], -1).to(dt), None if b1 is None else b1.to(dt))
        h = act_forward(h, canonical_name(act), act_param)
        return F.linear(h, w2.reshape(w2.shape[0], -1).to(dt), None if b2 is None else b2.to(dt))

    if light:
        ca = gate_forward(channel_f(pool_reference(x, "avgmax")), gate)
    else:
        ca = gate_forward(channel_f(x.mean((2, 3))) + channel_f(x.amax((2, 3))), gate)
    x1 = x * ca[:, :, None, None]
    sm, sx = x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)
    if light:
        s = 0.5 * sm + 0.5 * sx
    elif spatial_concat == "mean_max":
        s = torch.cat([sm, sx], 1)
    elif spatial_concat == "max_mean":
        s = torch.cat([sx, sm], 1)
    else:
        raise ValueError(f"spatial_concat must be 'mean_max' or 'max_mean', got {spatial_concat!r}")
    k = spatial_weight.shape[-1]
    z = F.conv2d(s, spatial_weight.to(dt), padding=k // 2)
    if bn is not None:
        z = bn(z)
    return x1 * gate_forward(z, gate)


class _EagerConvBn(nn.Module):
    """timm's ConvNormAct(in, 1, k, apply_act=False): keys conv.weight, bn.*."""

    def __init__(self, in_channels, kernel_size, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1) if bn else nn.Identity()

    def forward(self, x):
        return self.bn(self.conv(x))


class _EagerChannelAttn(nn.Module):
    def __init__(self, channels, rd_channels, mlp_bias):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias)

    def forward(self, x):
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(x_avg + x_max)


class _EagerSpatialAttn(nn.Module):
    def __init__(self, kernel_size, concat, bn):
        super().__init__()
        if concat not in ("mean_max", "max_mean"):
            raise ValueError(f"concat must be 'mean_max' or 'max_mean', got {concat!r}")
        self.max_first = concat == "max_mean"
        self.conv = _EagerConvBn(2, kernel_size, bn)

    def forward(self, x):
        maps = [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)]
        if self.max_first:
            maps.reverse()
        return x * torch.sigmoid(self.conv(torch.cat(maps, dim=1)))


class EagerCbamModule(nn.Module):
    """timm's CbamModule arithmetic (the eager baseline), with timm's state_dict
    keys; ``concat="max_mean"`` and ``bn=False`` give the official CBAM / seed
    spatial branch."""

    def __init__(self, channels, rd_channels, spatial_kernel_size=7, concat="mean_max", bn=True, mlp_bias=False):
        super().__init__()
        self.channel = _EagerChannelAttn(channels, rd_channels, mlp_bias)
        self.spatial = _EagerSpatialAttn(spatial_kernel_size, concat, bn)

    def forward(self, x):
        return self.spatial(self.channel(x))


def attention_tail_reference(
    z, shortcut, bn_weight, bn_bias, running_mean, running_var, bn_training, momentum, eps,
    attn="none", w1=None, b1=None, w2=None, b2=None, *, pool="avg", attn_act="relu", attn_act_param=0.0,
    gate="sigmoid", circular=False, drop=None, act="relu", act_param=0.0,
):
    """The attention tail of a ResNet block, ``act(drop_path(attn(bn(z))) +
    shortcut)``, as timm computes it, in z's dtype (run it in float64 for
    tests): ``F.batch_norm`` (which updates the running statistics in place
    in training; ``momentum`` already resolved to a float), then SE
    (``attn="se"``: ``w1``/``b1``/``w2``/``b2``, ``w2=None`` for EffectiveSE)
    or ECA (``attn="eca"``: taps ``w1``, bias ``b1``, ``circular``) or
    nothing, the per-sample ``drop`` factor [N], the residual add and the
    activation."""
    w = F.batch_norm(z, running_mean, running_var, bn_weight, bn_bias, bn_training, momentum, eps)
    if attn == "se":
        o = se_reference(w, w1, b1, w2, b2, pool=pool, act=attn_act, act_param=attn_act_param, gate=gate)
    elif attn == "eca":
        o = eca_reference(w, w1, b1, circular=circular, gate=gate)
    elif attn == "none":
        o = w
    else:
        raise ValueError(f"attn must be 'se', 'eca' or 'none', got {attn!r}")
    if drop is not None:
        o = o * drop.to(o.dtype)[:, None, None, None]
    if shortcut is not None:
        o = o + shortcut
    return act_forward(o, canonical_name(act), act_param)
