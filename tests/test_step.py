"""The training step: the release's joint update against standard alternation, noise, and the named
statistics a step returns."""
import contextlib
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from grlnet.steps import (
    LOSSES,
    STEP_STATS,
    Networks,
    StepSettings,
    StepStats,
    add_noise,
    format_step_stats,
    released_step,
    standard_step,
)
from network import GRLNet

LENGTH = 256
SETTINGS = StepSettings(update="standard", noise="snr", snr=2.0, alpha=0.5, adversarial_training_factor=0.5)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = GRLNet(LENGTH).train()
    x = 0.05 * torch.randn(2, 1, LENGTH)
    return model, x


def _sgd(model: GRLNet) -> dict:
    # Plain SGD with lr 1: a parameter's change is minus the gradient its optimizer received.
    return {name: torch.optim.SGD(module.parameters(), lr=1.0) for name, module in model.named_children()}


def _nets(model: GRLNet) -> Networks:
    return Networks(model.regional, model.local, model.discriminator.logits)


def _d_update(model: GRLNet, x: torch.Tensor, step) -> list[torch.Tensor]:
    before = copy.deepcopy(model.discriminator)
    torch.manual_seed(1)
    step(_nets(model), model, _sgd(model), x, SETTINGS, contextlib.nullcontext())
    return [b - a for a, b in zip(model.discriminator.parameters(), before.parameters(), strict=True)]


def _reference_gradients(model: GRLNet, x: torch.Tensor, include_generator_loss: bool):
    """Gradients of D's parameters computed independently from the step's definition, with the
    generators' input noise at 2 dB drawn as the step draws it."""
    torch.manual_seed(1)
    noisy = x + torch.randn_like(x) * torch.sqrt(x.pow(2).mean(-1, keepdim=True) / 10 ** (2.0 / 10))
    d = model.discriminator
    regional, local = model.regional(noisy), model.local(noisy)
    p_r, p_l, p_real = d(regional), d(local), d(x)
    ones, zeros = torch.ones(2), torch.zeros(2)
    loss_d = 0.5 * F.binary_cross_entropy(p_real, zeros) + 0.5 * (
        F.binary_cross_entropy(p_r, ones) + F.binary_cross_entropy(p_l, ones))
    loss = loss_d
    if include_generator_loss:
        loss = loss + 0.5 * (F.mse_loss(regional, x) + F.mse_loss(local, x)) + 0.5 * (
            F.binary_cross_entropy(p_r, zeros) + F.binary_cross_entropy(p_l, zeros))
    return torch.autograd.grad(loss, list(d.parameters()))


@pytest.mark.parametrize("step, joint", [(released_step, True), (standard_step, False)])
def test_discriminator_gradient(step, joint):
    """Released: D steps on grad(D loss) + grad(G loss through D). Standard: grad(D loss) only."""
    model, x = _setup()
    expected = _reference_gradients(copy.deepcopy(model), x, include_generator_loss=joint)
    for change, gradient in zip(_d_update(model, x, step), expected, strict=True):
        torch.testing.assert_close(change, gradient, rtol=2e-3, atol=1e-6)


def test_released_fake_terms_cancel_toward_one_half():
    """With alpha = lam = 0.5, the release's fake-term gradient on a logit z is
    0.5 * (sigmoid(z) - 1) + 0.5 * sigmoid(z) = sigmoid(z) - 0.5: it pushes D(R) toward 0.5, not 1."""
    z = torch.tensor([2.0, -1.0, 0.3], requires_grad=True)
    p = torch.sigmoid(z)
    loss = 0.5 * F.binary_cross_entropy(p, torch.ones(3), reduction="sum") + \
        0.5 * F.binary_cross_entropy(p, torch.zeros(3), reduction="sum")
    loss.backward()
    torch.testing.assert_close(z.grad, torch.sigmoid(z.detach()) - 0.5)


def test_standard_step_updates_d_and_restores_its_gradient_flags():
    model, x = _setup(3)
    d_before = copy.deepcopy(model.discriminator.state_dict())
    torch.manual_seed(1)
    stats = standard_step(_nets(model), model, _sgd(model), x, SETTINGS, contextlib.nullcontext())
    values = [getattr(stats, name) for name in STEP_STATS]
    assert all(value.shape == () and not value.requires_grad and torch.isfinite(value) for value in values)
    assert all(p.requires_grad for p in model.discriminator.parameters())
    changed = [not torch.equal(d_before[k], v) for k, v in model.discriminator.state_dict().items()]
    assert any(changed)


GRADIENT_STATS = {"discriminator": "grad_d", "regional": "grad_regional", "local": "grad_local"}


@pytest.mark.parametrize("step", [standard_step, released_step])
def test_gradient_norms_are_those_each_optimizer_stepped_on(step):
    """With SGD at learning rate 1 a parameter moves by minus its gradient, so each network's logged
    gradient norm is the L2 norm of its parameters' change (released: D's includes the G loss's part)."""
    model, x = _setup(2)
    before = copy.deepcopy(model)
    torch.manual_seed(1)
    stats = step(_nets(model), model, _sgd(model), x, SETTINGS, contextlib.nullcontext())
    for name, statistic in GRADIENT_STATS.items():
        pairs = zip(getattr(before, name).parameters(), getattr(model, name).parameters(), strict=True)
        change = torch.linalg.vector_norm(torch.cat([(b - a).flatten() for b, a in pairs]))
        assert change > 0, name
        torch.testing.assert_close(getattr(stats, statistic), change, rtol=1e-4, atol=0)


def test_snr_noise_has_the_stated_power():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 200_000) * torch.tensor([0.01, 0.05, 0.1, 1.0]).view(4, 1, 1)
    for snr in (2.0, 10.0, -3.0):
        noise = add_noise(x, dataclasses.replace(SETTINGS, snr=snr)) - x
        ratio_db = 10 * torch.log10(x.pow(2).mean(-1) / noise.pow(2).mean(-1))
        torch.testing.assert_close(ratio_db, torch.full_like(ratio_db, snr), atol=0.05, rtol=0)


def test_released_noise_is_unit_variance_whatever_the_snr():
    torch.manual_seed(0)
    x = 0.01 * torch.randn(2, 1, 100_000)
    noise = add_noise(x, dataclasses.replace(SETTINGS, noise="released", snr=30.0)) - x
    torch.testing.assert_close(noise.var(-1), torch.ones(2, 1), atol=0.02, rtol=0)



@pytest.mark.parametrize("step", [standard_step, released_step])
def test_statistics_are_the_losses_and_outputs_of_the_step(step):
    """Each named statistic recomputed from a copy of the networks before the step (same noise): the
    reconstruction loss, D's mean outputs and D's loss, and for the joint step G's loss; the stacked row
    holds them in STEP_STATS order."""
    model, x = _setup(4)
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    stats = step(_nets(model), model, _sgd(model), x, SETTINGS, contextlib.nullcontext())
    torch.manual_seed(1)
    noisy = x + torch.randn_like(x) * torch.sqrt(x.pow(2).mean(-1, keepdim=True) / 10 ** (2.0 / 10))
    with torch.no_grad():
        regional, local = reference.regional(noisy), reference.local(noisy)
        p_real, p_r, p_l = (reference.discriminator(signal) for signal in (x, regional, local))
    ones, zeros = torch.ones(2), torch.zeros(2)
    loss_rec = F.mse_loss(regional, x) + F.mse_loss(local, x)
    expected = {"loss_rec": loss_rec, "d_real": p_real.mean(), "d_regional": p_r.mean(), "d_local": p_l.mean(),
                "loss_d": 0.5 * F.binary_cross_entropy(p_real, zeros) + 0.5 * (
                    F.binary_cross_entropy(p_r, ones) + F.binary_cross_entropy(p_l, ones))}
    if step is released_step:  # the standard step's G loss is taken against the updated D
        expected["loss_g"] = 0.5 * loss_rec + 0.5 * (F.binary_cross_entropy(p_r, zeros)
                                                     + F.binary_cross_entropy(p_l, zeros))
    for name, value in expected.items():
        torch.testing.assert_close(getattr(stats, name), value, rtol=1e-5, atol=1e-7, msg=name)
    row = stats.stacked()
    assert row.dtype == torch.float32 and row.shape == (len(STEP_STATS),) == (len(dataclasses.fields(StepStats)),)
    for index, name in enumerate(STEP_STATS):
        assert row[index] == getattr(stats, name), name


def test_the_log_line_shows_each_statistic_by_name_and_the_losses_are_the_checked_ones():
    values = {name: 0.123456 * (index + 1) for index, name in enumerate(STEP_STATS)}
    assert format_step_stats(values) == ("loss_d 0.1235  loss_g 0.2469  rec 0.37037  D(real) 0.494  D(regional) "
                                         "0.617  D(local) 0.741  grad norm D 0.864  regional 0.988  local 1.11")
    assert LOSSES == ("loss_d", "loss_g", "loss_rec")
