"""One training step of each update, with its losses (docs/METHOD.md, "Losses"), and the D-only step of the
pseudo-anomaly phase; labels real = 0, reconstruction = 1.

``--update standard``: (1) update D on the input and the *detached* reconstructions of its noisy
copy; (2) update both generators: reconstruction MSE plus fooling the (just updated) D.
``--update released``: the release's joint step (both losses back-propagated, then all three
optimizers step, so D also receives the generators' adversarial gradients).
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from network import GRLNet
from opts import PSEUDO_ANOMALY_SNR_DROP

# Per-step statistics, in the order every step returns them: the losses, the mean D outputs on the input
# and on the two reconstructions, and the L2 norm of the gradient each network's optimizer stepped on.
LOSSES = ("loss_d", "loss_g", "loss_rec")
STEP_STATS = (*LOSSES, "d_real", "d_regional", "d_local", "grad_d", "grad_regional", "grad_local")


@dataclass
class Networks:
    """The callables the training step uses: the plain modules, or their compiled / DDP wrappers."""

    regional: Callable[[torch.Tensor], torch.Tensor]
    local: Callable[[torch.Tensor], torch.Tensor]
    d_logits: Callable[[torch.Tensor], torch.Tensor]
    d_no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    cuda_graphs: bool = False  # compiled in torch.compile's "reduce-overhead" mode (bench.py --compile_mode)

    def d_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.d_logits(x))

    def begin_step(self) -> None:
        """Tell CUDA graph trees that a training step begins, so that they may reuse the memory of the
        previous step's outputs; nothing without CUDA graphs."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()


def noise_at_snr(x: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``x`` plus Gaussian noise at ``snr_db`` dB of each signal's power."""
    signal_power = x.pow(2).mean(dim=-1, keepdim=True)  # [B, 1, 1]
    return x + torch.randn_like(x) * torch.sqrt(signal_power / 10 ** (snr_db / 10))


def add_noise(x: torch.Tensor, opt: argparse.Namespace) -> torch.Tensor:
    """The generators' input: noise at ``--snr`` dB of each signal's power; ``--noise released``:
    unit variance."""
    if opt.noise == "released":
        return x + torch.randn_like(x)
    return noise_at_snr(x, opt.snr)


def discriminator_input(x: torch.Tensor, opt: argparse.Namespace) -> torch.Tensor:
    """What D sees in training: ``x``, or with ``--instance_noise_snr`` a fresh noisy copy of it."""
    return x if opt.instance_noise_snr is None else noise_at_snr(x, opt.instance_noise_snr)


def gradient_norm(module: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all of ``module``'s parameter gradients, kept on the device (no host sync)."""
    return torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def standard_step(nets: Networks, model: GRLNet, optimizers: dict, x: torch.Tensor,
                  opt: argparse.Namespace, autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """D on detached reconstructions, then the generators against the updated D; BCE on logits."""
    alpha, lam = opt.alpha, opt.adversarial_training_factor

    def d_logits(signal: torch.Tensor) -> torch.Tensor:
        return nets.d_logits(discriminator_input(signal, opt))

    nets.begin_step()
    noisy = add_noise(x, opt)
    with autocast:
        regional, local = nets.regional(noisy), nets.local(noisy)
        fake_r, fake_l = d_logits(regional.detach()), d_logits(local.detach())
        real = d_logits(x)
        loss_d = (alpha * _bce(real, opt.label_smoothing)
                  + (1 - alpha) * (_bce(fake_r, 1.0) + _bce(fake_l, 1.0)))
    optimizers["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    grad_d = gradient_norm(model.discriminator)
    optimizers["discriminator"].step()

    model.discriminator.requires_grad_(False)
    with autocast, nets.d_no_sync():
        adv_r, adv_l = d_logits(regional), d_logits(local)
        loss_rec = F.mse_loss(regional.float(), x) + F.mse_loss(local.float(), x)
        loss_g = (1 - lam) * loss_rec + lam * (_bce(adv_r, 0.0) + _bce(adv_l, 0.0))
    optimizers["regional"].zero_grad(set_to_none=True)
    optimizers["local"].zero_grad(set_to_none=True)
    loss_g.backward()
    grads = torch.stack([grad_d, gradient_norm(model.regional), gradient_norm(model.local)])
    optimizers["regional"].step()
    optimizers["local"].step()
    model.discriminator.requires_grad_(True)
    probs = torch.sigmoid(torch.stack([real, fake_r, fake_l]).detach().float()).mean(1)
    return torch.cat([torch.stack([loss_d, loss_g, loss_rec]).detach().float(), probs, grads])


def released_step(nets: Networks, model: GRLNet, optimizers: dict, x: torch.Tensor,
                  opt: argparse.Namespace, autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """The release's step: one forward, D loss then G loss back-propagated, all three step.

    Reconstructions are not detached, so D's gradient is that of the D loss plus that of the
    generators' adversarial terms (docs/METHOD.md, "The release's defects"). BCE is taken on the
    Sigmoid's output, as released.
    """
    alpha, lam = opt.alpha, opt.adversarial_training_factor
    nets.begin_step()
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    noisy = add_noise(x, opt)
    with autocast:
        regional, local = nets.regional(noisy), nets.local(noisy)
        p_r, p_l, p_real = (nets.d_prob(discriminator_input(signal, opt)).float()
                            for signal in (regional, local, x))
    fake, valid = torch.ones_like(p_real), torch.zeros_like(p_real)
    real_target = torch.full_like(p_real, opt.label_smoothing)
    loss_d = alpha * F.binary_cross_entropy(p_real, real_target) + (1 - alpha) * (
        F.binary_cross_entropy(p_r, fake) + F.binary_cross_entropy(p_l, fake))
    loss_d.backward(retain_graph=True)
    optimizers["regional"].zero_grad(set_to_none=True)
    optimizers["local"].zero_grad(set_to_none=True)
    loss_rec = F.mse_loss(regional.float(), x) + F.mse_loss(local.float(), x)
    loss_g = (1 - lam) * loss_rec + lam * (F.binary_cross_entropy(p_r, valid)
                                           + F.binary_cross_entropy(p_l, valid))
    loss_g.backward()
    grads = torch.stack([gradient_norm(model.discriminator), gradient_norm(model.regional),
                         gradient_norm(model.local)])
    for optimizer in optimizers.values():
        optimizer.step()
    probs = torch.stack([p_real, p_r, p_l]).detach().mean(1)
    return torch.cat([torch.stack([loss_d, loss_g, loss_rec]).detach(), probs, grads])


def pseudo_anomaly_step(nets: Networks, model: GRLNet, optimizers: dict, x: torch.Tensor,
                        opt: argparse.Namespace, autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """OGNet's second phase (Zaheer et al., CVPR 2020) with the generators frozen: D learns to call
    normal windows and their reconstructions normal (0), and pseudo-anomalies made of them anomalous
    (1): reconstructions of the windows noised ``PSEUDO_ANOMALY_SNR_DROP`` dB below ``--snr``, and
    the mean of two windows' reconstructions. Each group's BCE is averaged, and the two are added."""
    nets.begin_step()
    degraded = noise_at_snr(x, opt.snr - PSEUDO_ANOMALY_SNR_DROP)
    with torch.no_grad(), autocast:
        good = [nets.regional(x), nets.local(x)]
        poor = [nets.regional(degraded), nets.local(degraded)]
    mixed = [(r + r.roll(1, 0)) / 2 for r in good] if len(x) > 1 else []
    with autocast:
        real, good_r, good_l = (nets.d_logits(signal) for signal in (x, *good))
        pseudo = [nets.d_logits(signal) for signal in (*poor, *mixed)]
        loss_d = (sum(_bce(logits, 0.0) for logits in (real, good_r, good_l)) / 3
                  + sum(_bce(logits, 1.0) for logits in pseudo) / len(pseudo))
    optimizers["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    grad_d = gradient_norm(model.discriminator)
    optimizers["discriminator"].step()
    loss_rec = F.mse_loss(good[0].float(), x) + F.mse_loss(good[1].float(), x)
    probs = torch.sigmoid(torch.stack([real, good_r, good_l]).detach().float()).mean(1)
    frozen = torch.zeros_like(loss_rec)  # the generators take no step: no loss, no gradient
    return torch.cat([torch.stack([loss_d.detach().float(), frozen, loss_rec]), probs,
                      torch.stack([grad_d, frozen, frozen])])


STEPS = {"standard": standard_step, "released": released_step}
