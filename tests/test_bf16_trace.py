"""experiments/tools/bf16_trace.py: the fp32 wrapper of sensitive modules and the tracer that names the
first module whose output or gradient is non-finite."""
import math

import torch
from torch import nn

from experiments.tools.bf16_trace import Tracer, group_maxima, keep_fp32, module_group


def test_kept_modules_run_fp32_under_bf16_autocast_and_the_others_do_not():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert keep_fp32(model) == ["1"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model[0](torch.randn(3, 4))
        normalised = model[1](hidden)
        out = model[2](normalised)
    assert (hidden.dtype, normalised.dtype, out.dtype) == (torch.bfloat16, torch.float32, torch.bfloat16)


def test_tracer_names_the_first_non_finite_output_then_gradient():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
        model[0].bias.zero_()
    tracer = Tracer(model)
    tracer.begin_step(7)
    model(torch.tensor([[3.0, 1.0]])).sum().backward()
    assert tracer.activations["0"] == 3.0 and tracer.activations["1"] == 3.0  # |[3, -2]|, then ReLU's [3, 0]
    assert tracer.first_nonfinite is None
    tracer.begin_step(8)
    model(torch.tensor([[math.inf, 1.0]])).sum().backward()
    first = tracer.first_nonfinite
    assert math.isnan(first.pop("value"))  # inf times the weight 0 of the second row
    assert first == {"step": 8, "where": "output", "module": "0", "type": "Linear"}
    tracer.remove()
    tracer = Tracer(model)
    tracer.begin_step(9)
    model(torch.tensor([[1.0, 1.0]])).mul(math.nan).sum().backward()  # finite forward, NaN gradients
    assert tracer.first_nonfinite["where"] == "gradient" and tracer.first_nonfinite["module"] == "2"


def test_group_maxima_take_the_largest_per_group_and_keep_nan():
    model = nn.Module()
    model.regional = nn.Module()
    model.regional.encoder = nn.Sequential(nn.Conv1d(1, 1, 1), nn.Conv1d(1, 1, 1))
    groups = {name: module_group(name, m) for name, m in model.named_modules() if name}
    assert groups["regional.encoder.0"] == "regional.encoder Conv1d"
    recent = [{"activations": {"regional.encoder.0": 2.0, "regional.encoder.1": 5.0}},
              {"activations": {"regional.encoder.0": 3.0, "regional": math.nan}}]
    maxima = group_maxima(recent, groups, "activations")
    assert maxima["regional.encoder Conv1d"] == 5.0 and math.isnan(maxima["regional Module"])
