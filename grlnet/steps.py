"""One training step of each update, with its losses (docs/METHOD.md, "Losses"); labels real = 0,
reconstruction = 1.

``--update standard``: (1) update D on the input and the *detached* reconstructions of its noisy
copy; (2) update both generators: reconstruction MSE plus fooling the (just updated) D.
``--update released``: the release's joint step (both losses back-propagated, then all three
optimizers step, so D also receives the generators' adversarial gradients).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F

from network import GRLNet


@dataclass(frozen=True)
class StepSettings:
    """What a training step computes with: the update (a key of ``STEPS``), the generators' input noise
    (``"snr"``: at ``snr`` dB of each signal's power; ``"released"``: unit variance), D's real-term weight
    ``alpha`` and G's adversarial weight."""

    update: str
    noise: str
    snr: float
    alpha: float
    adversarial_training_factor: float


def _statistic(label: str, number_format: str, loss: bool = False) -> Any:
    """A ``StepStats`` field: its label and number format in an epoch's log line; ``loss``: a loss, which a
    run checks to be finite."""
    return field(metadata={"label": label, "format": number_format, "loss": loss})


@dataclass(frozen=True)
class StepStats:
    """One step's statistics, each a detached 0-d tensor on the device: the losses, D's mean outputs on the input
    and on the two reconstructions, and the L2 norm of the gradient each network's optimizer stepped on.
    A new statistic is a new field here, set by the steps below."""

    loss_d: torch.Tensor = _statistic("loss_d", ".4f", loss=True)
    loss_g: torch.Tensor = _statistic("loss_g", ".4f", loss=True)
    loss_rec: torch.Tensor = _statistic("rec", ".5f", loss=True)
    d_real: torch.Tensor = _statistic("D(real)", ".3f")
    d_regional: torch.Tensor = _statistic("D(regional)", ".3f")
    d_local: torch.Tensor = _statistic("D(local)", ".3f")
    grad_d: torch.Tensor = _statistic("grad norm D", ".3g")
    grad_regional: torch.Tensor = _statistic("regional", ".3g")
    grad_local: torch.Tensor = _statistic("local", ".3g")

    def stacked(self) -> torch.Tensor:
        """The statistics as one float32 tensor [len(STEP_STATS)] in ``STEP_STATS`` order, still on the
        device (no host sync): the row a run keeps per step."""
        return torch.stack([getattr(self, name).float() for name in STEP_STATS])


STEP_STATS = tuple(f.name for f in fields(StepStats))  # the names, in the order of a stacked row
LOSSES = tuple(f.name for f in fields(StepStats) if f.metadata["loss"])


def format_step_stats(values: dict[str, float]) -> str:
    """Statistics by name (epoch means) as an epoch's log line shows them, in ``STEP_STATS`` order."""
    return "  ".join(f"{f.metadata['label']} {values[f.name]:{f.metadata['format']}}" for f in fields(StepStats))


@dataclass
class Networks:
    """The callables the training step uses: the plain modules, or their compiled / DDP wrappers."""

    regional: Callable[[torch.Tensor], torch.Tensor]
    local: Callable[[torch.Tensor], torch.Tensor]
    d_logits: Callable[[torch.Tensor], torch.Tensor]
    d_no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    cuda_graphs: bool = False  # compiled in torch.compile's "reduce-overhead" mode (experiments/bench.py --compile_mode)

    def d_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.d_logits(x))

    def begin_step(self) -> None:
        """Tell CUDA graph trees that a training step begins, so that they may reuse the memory of the
        previous step's outputs; nothing without CUDA graphs."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()


def add_noise(x: torch.Tensor, settings: StepSettings) -> torch.Tensor:
    """The generators' input: ``x`` plus Gaussian noise at ``settings.snr`` dB of each signal's power; with
    the released noise, of unit variance."""
    if settings.noise == "released":
        return x + torch.randn_like(x)
    signal_power = x.pow(2).mean(dim=-1, keepdim=True)  # [B, 1, 1]
    return x + torch.randn_like(x) * torch.sqrt(signal_power / 10 ** (settings.snr / 10))


def gradient_norm(module: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all of ``module``'s parameter gradients, kept on the device (no host sync)."""
    return torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def _mean_prob(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits.detach().float()).mean()


def standard_step(nets: Networks, model: GRLNet, optimizers: dict, x: torch.Tensor,
                  settings: StepSettings, autocast: contextlib.AbstractContextManager) -> StepStats:
    """D on detached reconstructions, then the generators against the updated D; BCE on logits."""
    alpha, lam = settings.alpha, settings.adversarial_training_factor
    nets.begin_step()
    noisy = add_noise(x, settings)
    with autocast:
        regional, local = nets.regional(noisy), nets.local(noisy)
        fake_r, fake_l = nets.d_logits(regional.detach()), nets.d_logits(local.detach())
        real = nets.d_logits(x)
        loss_d = alpha * _bce(real, 0.0) + (1 - alpha) * (_bce(fake_r, 1.0) + _bce(fake_l, 1.0))
    optimizers["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    grad_d = gradient_norm(model.discriminator)
    optimizers["discriminator"].step()

    model.discriminator.requires_grad_(False)
    with autocast, nets.d_no_sync():
        adv_r, adv_l = nets.d_logits(regional), nets.d_logits(local)
        loss_rec = F.mse_loss(regional.float(), x) + F.mse_loss(local.float(), x)
        loss_g = (1 - lam) * loss_rec + lam * (_bce(adv_r, 0.0) + _bce(adv_l, 0.0))
    optimizers["regional"].zero_grad(set_to_none=True)
    optimizers["local"].zero_grad(set_to_none=True)
    loss_g.backward()
    grad_regional, grad_local = gradient_norm(model.regional), gradient_norm(model.local)
    optimizers["regional"].step()
    optimizers["local"].step()
    model.discriminator.requires_grad_(True)
    return StepStats(loss_d=loss_d.detach(), loss_g=loss_g.detach(), loss_rec=loss_rec.detach(),
                     d_real=_mean_prob(real), d_regional=_mean_prob(fake_r), d_local=_mean_prob(fake_l),
                     grad_d=grad_d, grad_regional=grad_regional, grad_local=grad_local)


def released_step(nets: Networks, model: GRLNet, optimizers: dict, x: torch.Tensor,
                  settings: StepSettings, autocast: contextlib.AbstractContextManager) -> StepStats:
    """The release's step: one forward, D loss then G loss back-propagated, all three step.

    Reconstructions are not detached, so D's gradient is that of the D loss plus that of the
    generators' adversarial terms (docs/METHOD.md, "The release's defects"). BCE is taken on the
    Sigmoid's output, as released.
    """
    alpha, lam = settings.alpha, settings.adversarial_training_factor
    nets.begin_step()
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    noisy = add_noise(x, settings)
    with autocast:
        regional, local = nets.regional(noisy), nets.local(noisy)
        p_r, p_l, p_real = (nets.d_prob(signal).float() for signal in (regional, local, x))
    fake, valid = torch.ones_like(p_real), torch.zeros_like(p_real)
    loss_d = alpha * F.binary_cross_entropy(p_real, valid) + (1 - alpha) * (
        F.binary_cross_entropy(p_r, fake) + F.binary_cross_entropy(p_l, fake))
    loss_d.backward(retain_graph=True)
    optimizers["regional"].zero_grad(set_to_none=True)
    optimizers["local"].zero_grad(set_to_none=True)
    loss_rec = F.mse_loss(regional.float(), x) + F.mse_loss(local.float(), x)
    loss_g = (1 - lam) * loss_rec + lam * (F.binary_cross_entropy(p_r, valid)
                                           + F.binary_cross_entropy(p_l, valid))
    loss_g.backward()
    stats = StepStats(loss_d=loss_d.detach(), loss_g=loss_g.detach(), loss_rec=loss_rec.detach(),
                      d_real=p_real.detach().mean(),
                      d_regional=p_r.detach().mean(), d_local=p_l.detach().mean(),
                      grad_d=gradient_norm(model.discriminator), grad_regional=gradient_norm(model.regional),
                      grad_local=gradient_norm(model.local))
    for optimizer in optimizers.values():
        optimizer.step()
    return stats


STEPS = {"standard": standard_step, "released": released_step}
