"""The pseudo-anomaly phase (--pseudo_anomaly_epochs): D's gradient, frozen generators, and a run."""
import contextlib
import copy
import csv

import torch
import torch.nn.functional as F
from conftest import TINY, run_script, sgd_optimizers, step_options

from grlnet.checkpoint import load_file
from grlnet.steps import STEP_STATS, Networks, pseudo_anomaly_step
from network import GRLNet

LENGTH = 256


def _model_and_batch():
    torch.manual_seed(4)
    model = GRLNet(LENGTH).train()
    model.regional.eval()  # frozen, as the trainer runs them in this phase
    model.local.eval()
    return model, 0.05 * torch.randn(2, 1, LENGTH)


def _reference_gradients(model: GRLNet, x: torch.Tensor, snr: float) -> list[torch.Tensor]:
    """D's gradient from the phase's definition: normals x, R(x), Lo(x) (target 0); pseudo-anomalies
    R and Lo of x noised 10 dB below the SNR, and the mean of the two windows' R and of their Lo (1)."""
    torch.manual_seed(1)
    power = x.pow(2).mean(-1, keepdim=True)
    degraded = x + torch.randn_like(x) * torch.sqrt(power / 10 ** ((snr - 10) / 10))
    with torch.no_grad():
        good = [model.regional(x), model.local(x)]
        poor = [model.regional(degraded), model.local(degraded)]
    swapped = [r.flip(0) for r in good]  # with two windows, the other window's reconstruction
    d = model.discriminator
    normal = [d(x), d(good[0]), d(good[1])]
    pseudo = [d(poor[0]), d(poor[1]), d((good[0] + swapped[0]) / 2), d((good[1] + swapped[1]) / 2)]
    loss = (sum(F.binary_cross_entropy(p, torch.zeros(2)) for p in normal) / 3
            + sum(F.binary_cross_entropy(p, torch.ones(2)) for p in pseudo) / 4)
    return torch.autograd.grad(loss, list(d.parameters()))


def test_pseudo_anomaly_step_trains_d_as_defined_and_leaves_the_generators_alone():
    model, x = _model_and_batch()
    expected = _reference_gradients(copy.deepcopy(model), x, snr=2.0)
    d_before = copy.deepcopy(model.discriminator)
    generators_before = copy.deepcopy({"regional": model.regional.state_dict(), "local": model.local.state_dict()})
    torch.manual_seed(1)
    nets = Networks(model.regional, model.local, model.discriminator.logits)
    stats = pseudo_anomaly_step(nets, model, sgd_optimizers(model), x, step_options(), contextlib.nullcontext())
    changes = [b - a for a, b in zip(model.discriminator.parameters(), d_before.parameters(), strict=True)]
    for change, gradient in zip(changes, expected, strict=True):
        torch.testing.assert_close(change, gradient, rtol=2e-3, atol=1e-6)
    for name, before in generators_before.items():
        after = getattr(model, name).state_dict()
        assert all(torch.equal(before[key], after[key]) for key in before), name
    assert stats[1] == 0 and torch.isfinite(stats).all()  # no generator loss in this phase
    d_gradient = torch.linalg.vector_norm(torch.cat([g.flatten() for g in expected]))
    torch.testing.assert_close(stats[STEP_STATS.index("grad_d")], d_gradient, rtol=2e-3, atol=0)
    assert stats[STEP_STATS.index("grad_regional")] == stats[STEP_STATS.index("grad_local")] == 0


def test_run_with_a_pseudo_anomaly_epoch_keeps_the_adversarially_trained_generators(tmp_path):
    """Same seed, one adversarial epoch, with and without a pseudo-anomaly epoch after it: the
    generators end identical, D does not, and metrics.csv has a row for each epoch."""
    plain, phased = tmp_path / "plain", tmp_path / "phased"
    run_script("train.py", *TINY, "--output_dir", str(plain))
    out = run_script("train.py", *TINY, "--pseudo_anomaly_epochs", "1", "--output_dir", str(phased))
    assert "then 1 pseudo-anomaly epochs" in out.stdout
    assert "epoch 2/2 (pseudo-anomalies)" in (phased / "train.log").read_text()
    with (phased / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1"] and float(rows[1]["loss_g"]) == 0.0
    models = [load_file(folder / "checkpoints" / "last.pt")["models"] for folder in (plain, phased)]
    for name in ("regional", "local"):
        assert all(torch.equal(models[0][name][k], models[1][name][k]) for k in models[0][name]), name
    assert not all(torch.equal(models[0]["discriminator"][k], models[1]["discriminator"][k])
                   for k in models[0]["discriminator"])
