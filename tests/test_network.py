"""Networks: the release's state-dict table, the filter layer, output lengths, D's logits."""
import copy
import json

import numpy as np
import pytest
import torch
from conftest import REPO
from torch import nn

from grlnet.channels_last import ChannelsLastBatchNorm1d, ChannelsLastConv1d, use_channels_last
from network import (
    D_Net,
    GlobalFilterLayer,
    GRLNet,
    LearnedGlobalFilterLayer,
    Local_G_Net,
    Regional_G_Net,
    discriminator_feature_length,
)

KEYS_FILE = REPO.parent / "shared" / "state_dict_keys_233472.json"
RELEASE_LENGTH = 233472


@pytest.mark.parametrize("cls, parameters", [(Regional_G_Net, 2_880_513), (Local_G_Net, 1_503_745),
                                             (D_Net, 8_798_849)])
def test_state_dict_matches_release_table(cls, parameters):
    if not KEYS_FILE.is_file():
        pytest.skip(f"{KEYS_FILE} not found")
    expected = json.loads(KEYS_FILE.read_text())[cls.__name__]
    model = cls(RELEASE_LENGTH)
    found = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert found == expected
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_discriminator_linear_size_follows_length():
    assert discriminator_feature_length(RELEASE_LENGTH) == 14589
    # By hand: 1000 -> 498 -> 247 -> 122 -> 59.
    assert discriminator_feature_length(1000) == 59
    assert D_Net(1000).linear.in_features == 512 * 59


def test_discriminator_parts_are_the_released_sequential_in_order():
    d = D_Net(1000)
    parts = [*d.convolutions, *d.head, d.discriminator[-1]]
    assert [id(layer) for layer in parts] == [id(layer) for layer in d.discriminator]
    assert isinstance(d.convolutions[-1], nn.ReLU) and isinstance(d.head[0], nn.Flatten)
    assert d.linear is d.discriminator[12] and isinstance(d.discriminator[-1], nn.Sigmoid)


def test_global_filter_equals_numpy_fft_of_layernorm():
    torch.manual_seed(0)
    layer = GlobalFilterLayer(300)
    with torch.no_grad():
        layer.layernorm.weight.uniform_(0.5, 1.5)
        layer.layernorm.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 1, 300, dtype=torch.float32) * 3 + 1
    signal = x.numpy().astype(np.float64)
    normalised = (signal - signal.mean(-1, keepdims=True)) / np.sqrt(signal.var(-1, keepdims=True) + 1e-5)
    normalised = normalised * layer.layernorm.weight.detach().numpy() + layer.layernorm.bias.detach().numpy()
    expected = np.abs(np.fft.fft(normalised, axis=-1)) / np.sqrt(300)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_learned_filter_starts_as_identity_after_layernorm():
    layer = LearnedGlobalFilterLayer(257)
    x = torch.randn(3, 1, 257)
    torch.testing.assert_close(layer(x), layer.layernorm(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [256, 1000, 1024, 4096])
@pytest.mark.parametrize("global_filter", ["released", "learned"])
def test_output_shapes(length, global_filter):
    model = GRLNet(length, global_filter).eval()
    x = torch.randn(2, 1, length)
    with torch.no_grad():
        assert model.regional(x).shape == (2, 1, length)
        assert model.local(x).shape == (2, 1, length)
        probability = model.discriminator(x)
        assert probability.shape == (2,)
        torch.testing.assert_close(probability, torch.sigmoid(model.discriminator.logits(x)))
        assert torch.all((probability >= 0) & (probability <= 1))


def test_too_short_signal_is_refused():
    with pytest.raises(ValueError, match="too short"):
        D_Net(40)


def _functional_reference(state: dict, x: torch.Tensor, kind: str) -> torch.Tensor:
    """The release's forward written out with torch.nn.functional from its state-dict table."""
    import torch.nn.functional as F

    length = x.shape[-1]
    h = F.layer_norm(x, (length,), state["gfl.layernorm.weight"], state["gfl.layernorm.bias"])
    h = torch.fft.fft(h, norm="ortho").abs()

    def bn(h, name):
        return F.batch_norm(h, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                            state[f"{name}.weight"], state[f"{name}.bias"], training=False)

    if kind == "discriminator":
        for conv, norm in (("0", "1"), ("3", "4"), ("6", "7")):
            h = F.relu(bn(F.conv1d(h, state[f"discriminator.{conv}.weight"],
                                   state[f"discriminator.{conv}.bias"], stride=2), f"discriminator.{norm}"))
        h = F.relu(F.conv1d(h, state["discriminator.9.weight"], state["discriminator.9.bias"], stride=2))
        return torch.sigmoid(F.linear(h.flatten(1), state["discriminator.12.weight"],
                                      state["discriminator.12.bias"])).squeeze(1)
    for conv, norm, relu_first in (("0", "1", False), ("3", "4", False), ("6", "8", True), ("9", "11", True)):
        h = F.conv1d(h, state[f"encoder.{conv}.weight"], state[f"encoder.{conv}.bias"])
        h = bn(F.relu(h), f"encoder.{norm}") if relu_first else F.relu(bn(h, f"encoder.{norm}"))
    for conv, norm in (("0", "1"), ("3", "4"), ("6", "7")):
        h = F.relu(bn(F.conv_transpose1d(h, state[f"decoder.{conv}.weight"], state[f"decoder.{conv}.bias"]),
                      f"decoder.{norm}"))
    return torch.tanh(F.conv_transpose1d(h, state["decoder.9.weight"], state["decoder.9.bias"]))


def test_eval_outputs_equal_a_functional_reimplementation_of_the_release():
    torch.manual_seed(0)
    model = GRLNet(500)
    with torch.no_grad():  # non-trivial BatchNorm statistics and LayerNorm affine parameters
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_var", "layernorm.weight")):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith(("running_mean", "layernorm.bias")):
                tensor.uniform_(-0.3, 0.3)
    model.eval()
    x = torch.randn(3, 1, 500) * 0.1
    with torch.no_grad():
        for kind, module in (("generator", model.regional), ("generator", model.local),
                             ("discriminator", model.discriminator)):
            expected = _functional_reference(module.state_dict(), x, kind)
            torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-6)


def _stacks(model: GRLNet) -> dict[str, nn.Sequential]:
    return {"regional": nn.Sequential(*model.regional.encoder, *model.regional.decoder),
            "discriminator": model.discriminator.convolutions}


@pytest.mark.parametrize("stack_name", ["regional", "discriminator"])
def test_channels_last_stack_computes_the_same_function_in_float64(stack_name):
    torch.manual_seed(1)
    plain = _stacks(GRLNet(640))[stack_name].double().train()
    as_images = use_channels_last(copy.deepcopy(plain))
    x = torch.randn(2, 1, 640, dtype=torch.float64, requires_grad=True)
    expected, found = plain(x), as_images(x)
    assert found.shape == expected.shape
    assert {ChannelsLastConv1d, ChannelsLastBatchNorm1d} <= {type(layer) for layer in as_images}
    torch.testing.assert_close(found, expected, rtol=1e-10, atol=1e-10)
    # Gradients of the input and of every parameter; a conv bias just before a BatchNorm has a true
    # gradient of zero, so the tolerance is scaled by the largest gradient of the stack.
    wrt = [x, *plain.parameters()], [x, *as_images.parameters()]
    grads_plain = torch.autograd.grad(expected.square().sum(), wrt[0])
    grads_images = torch.autograd.grad(found.square().sum(), wrt[1])
    scale = max(g.abs().max().item() for g in grads_plain)
    for g_plain, g_images in zip(grads_plain, grads_images, strict=True):
        torch.testing.assert_close(g_images, g_plain, rtol=0, atol=1e-10 * scale)
    # BatchNorm's running statistics and batch counter move exactly as the module's own forward moves them.
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(as_images.state_dict()[key], value, rtol=1e-12, atol=1e-12)
    assert int(as_images.state_dict()[_first_batch_counter(as_images)]) == 1


def _first_batch_counter(stack: nn.Sequential) -> str:
    return next(key for key in stack.state_dict() if key.endswith("num_batches_tracked"))


def test_channels_last_model_keeps_its_state_dict_and_outputs():
    torch.manual_seed(2)
    plain = GRLNet(1024).eval()
    fast = use_channels_last(copy.deepcopy(plain))
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    x = torch.randn(3, 1, 1024)
    with torch.no_grad():
        # Channels innermost from the first layer to the last: the stacks make no layout copies.
        assert fast.regional.encode(x).stride(1) == 1 and fast.discriminator.features(x).stride(1) == 1
        assert plain.regional.encode(x).stride(-1) == 1
        for name in ("regional", "local"):
            torch.testing.assert_close(getattr(fast, name)(x), getattr(plain, name)(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.discriminator(x), plain.discriminator(x), rtol=1e-4, atol=1e-6)


def test_sync_batchnorm_layers_run_channels_last_too():
    torch.manual_seed(3)
    plain = nn.SyncBatchNorm.convert_sync_batchnorm(GRLNet(512)).train()  # one process: no synchronisation
    fast = use_channels_last(copy.deepcopy(plain))
    x = torch.randn(2, 1, 512)
    found, expected = fast.discriminator.features(x), plain.discriminator.features(x)
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-5)
    assert found.stride(1) == 1
    torch.testing.assert_close(fast.state_dict(), plain.state_dict(), rtol=1e-5, atol=1e-6)  # buffers moved alike
