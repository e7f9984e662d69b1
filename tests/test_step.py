"""The training step: the release's joint update against standard alternation, and noise."""
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import sgd_optimizers, step_options

from grlnet.steps import STEP_STATS, Networks, add_noise, released_step, standard_step
from network import GRLNet

LENGTH = 256


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = GRLNet(LENGTH).train()
    x = 0.05 * torch.randn(2, 1, LENGTH)
    return model, x


def _nets(model: GRLNet) -> Networks:
    return Networks(model.regional, model.local, model.discriminator.logits)


def _d_update(model: GRLNet, x: torch.Tensor, step, opt) -> list[torch.Tensor]:
    before = copy.deepcopy(model.discriminator)
    torch.manual_seed(1)
    step(_nets(model), model, sgd_optimizers(model), x, opt, contextlib.nullcontext())
    return [b - a for a, b in zip(model.discriminator.parameters(), before.parameters(), strict=True)]


def _reference_gradients(model: GRLNet, x: torch.Tensor, opt, include_generator_loss: bool):
    """Gradients of D's parameters computed independently from the step's definition: noise for the
    generators, then (with instance noise) one fresh draw per D input, in the order R, Lo, x."""
    def with_noise(signal, snr):
        return signal + torch.randn_like(signal) * torch.sqrt(signal.pow(2).mean(-1, keepdim=True) / 10 ** (snr / 10))

    def d_sees(signal):
        return signal if opt.instance_noise_snr is None else with_noise(signal, opt.instance_noise_snr)

    torch.manual_seed(1)
    noisy = with_noise(x, opt.snr)
    d = model.discriminator
    regional, local = model.regional(noisy), model.local(noisy)
    p_r, p_l, p_real = d(d_sees(regional)), d(d_sees(local)), d(d_sees(x))
    ones, zeros = torch.ones(2), torch.zeros(2)
    loss_d = 0.5 * F.binary_cross_entropy(p_real, torch.full((2,), opt.label_smoothing)) + 0.5 * (
        F.binary_cross_entropy(p_r, ones) + F.binary_cross_entropy(p_l, ones))
    loss = loss_d
    if include_generator_loss:
        loss = loss + 0.5 * (F.mse_loss(regional, x) + F.mse_loss(local, x)) + 0.5 * (
            F.binary_cross_entropy(p_r, zeros) + F.binary_cross_entropy(p_l, zeros))
    return torch.autograd.grad(loss, list(d.parameters()))


@pytest.mark.parametrize("regularisation", [{}, {"label_smoothing": 0.1, "instance_noise_snr": 6.0}],
                         ids=["paper", "smoothing_and_instance_noise"])
@pytest.mark.parametrize("step, joint", [(released_step, True), (standard_step, False)])
def test_discriminator_gradient(step, joint, regularisation):
    """Released: D steps on grad(D loss) + grad(G loss through D). Standard: grad(D loss) only.
    With the D-regularisation options, D's real target is the smoothing value and D sees noisy inputs."""
    model, x = _setup()
    opt = step_options(**regularisation)
    expected = _reference_gradients(copy.deepcopy(model), x, opt, include_generator_loss=joint)
    for change, gradient in zip(_d_update(model, x, step, opt), expected, strict=True):
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
    stats = standard_step(_nets(model), model, sgd_optimizers(model), x, step_options(), contextlib.nullcontext())
    assert stats.shape == (len(STEP_STATS),) and torch.isfinite(stats).all()
    assert all(p.requires_grad for p in model.discriminator.parameters())
    changed = [not torch.equal(d_before[k], v) for k, v in model.discriminator.state_dict().items()]
    assert any(changed)


GRADIENT_COLUMNS = {"discriminator": "grad_d", "regional": "grad_regional", "local": "grad_local"}


@pytest.mark.parametrize("step", [standard_step, released_step])
def test_gradient_norms_are_those_each_optimizer_stepped_on(step):
    """With SGD at learning rate 1 a parameter moves by minus its gradient, so each network's logged
    gradient norm is the L2 norm of its parameters' change (released: D's includes the G loss's part)."""
    model, x = _setup(2)
    before = copy.deepcopy(model)
    torch.manual_seed(1)
    stats = step(_nets(model), model, sgd_optimizers(model), x, step_options(), contextlib.nullcontext())
    for name, column in GRADIENT_COLUMNS.items():
        pairs = zip(getattr(before, name).parameters(), getattr(model, name).parameters(), strict=True)
        change = torch.linalg.vector_norm(torch.cat([(b - a).flatten() for b, a in pairs]))
        assert change > 0, name
        torch.testing.assert_close(stats[STEP_STATS.index(column)], change, rtol=1e-4, atol=0)


def test_snr_noise_has_the_stated_power():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 200_000) * torch.tensor([0.01, 0.05, 0.1, 1.0]).view(4, 1, 1)
    for snr in (2.0, 10.0, -3.0):
        noise = add_noise(x, step_options(snr=snr)) - x
        ratio_db = 10 * torch.log10(x.pow(2).mean(-1) / noise.pow(2).mean(-1))
        torch.testing.assert_close(ratio_db, torch.full_like(ratio_db, snr), atol=0.05, rtol=0)


def test_released_noise_is_unit_variance_whatever_the_snr():
    torch.manual_seed(0)
    x = 0.01 * torch.randn(2, 1, 100_000)
    noise = add_noise(x, step_options(noise="released", snr=30.0)) - x
    torch.testing.assert_close(noise.var(-1), torch.ones(2, 1), atol=0.02, rtol=0)
