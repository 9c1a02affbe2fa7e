"""One linear layer under the local reparameterisation trick (Kingma, Salimans and Welling 2015,
eq. 6; Molchanov et al. 2017 train Sparse VD with it): for independent Gaussian weights with means W,
b and variances V, vb, the pre-activation of each example is itself Gaussian, so it is drawn as

    out = x W^T + b + sqrt(x^2 V^T + vb) * eps,    eps ~ N(0, 1) of shape [B, n_out].

One autograd.Function with a hand-written backward instead of autograd over ~10 separate ops: x^2 is
formed once, the epilogue (clamp, sqrt, noise) writes the output and the one [B, n_out] factor the
backward needs, r = eps / (2 std), and the backward runs only the four products it must. With g the
output's gradient and gv = g * r (the gradient w.r.t. the variance pre-activation):
    dW = g^T x,  db = sum_B g,  dV = gv^T x^2,  dvb = sum_B gv,  dx = g W + 2 x (gv V).
The variance is clamped to >= 1e-16 before the sqrt (so std > 0); where the clamp binds the
variance path gets no gradient, as autograd's clamp_min gives (r is 0 there).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

MIN_VAR = 1e-16


class _LocalReparam(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor, v: Tensor, vb: Tensor, eps: Tensor) -> Tensor:
        x2 = x * x
        s = torch.addmm(vb, x2, v.t())
        clamped = s < MIN_VAR
        std = s.clamp_min_(MIN_VAR).sqrt_()
        out = torch.addmm(b, x, w.t()).addcmul_(std, eps)
        r = torch.div(eps, std).mul_(0.5).masked_fill_(clamped, 0.0)
        ctx.save_for_backward(x, x2, w, v, r)
        return out

    @staticmethod
    @once_differentiable  # r is saved as a constant: a second derivative through it would be wrong
    def backward(ctx, g: Tensor):
        x, x2, w, v, r = ctx.saved_tensors
        gv = g * r
        need_x, need_w, need_b, need_v, need_vb, _ = ctx.needs_input_grad
        gx = torch.mm(g, w).addcmul_(x, torch.mm(gv, v), value=2.0) if need_x else None
        return (gx, g.t().mm(x) if need_w else None, g.sum(0) if need_b else None,
                gv.t().mm(x2) if need_v else None, gv.sum(0) if need_vb else None, None)


def local_reparam_linear(x: Tensor, w: Tensor, b: Tensor, v: Tensor, vb: Tensor, eps: Tensor | None = None) -> Tensor:
    """x [B, n_in], weight means w [n_out, n_in] and b [n_out], variances v and vb of the same
    shapes -> one sample of the pre-activation [B, n_out]. eps: the standard normal noise [B, n_out];
    by default drawn here with torch.randn, which takes the same numbers from the generator as
    torch.randn_like of the output would (the draw of the unfused formula this replaced)."""
    if eps is None:
        eps = torch.randn(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device)
    return _LocalReparam.apply(x, w, b, v, vb, eps)
