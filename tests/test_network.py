"""Networks: the release's state-dict table, the filter layer, output lengths, D's logits."""
import json

import numpy as np
import pytest
import torch

from conftest import REPO
from network import (D_Net, GlobalFilterLayer, GRLNet, LearnedGlobalFilterLayer, Local_G_Net,
                     Regional_G_Net, discriminator_feature_length)

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
    assert D_Net(1000).discriminator[12].in_features == 512 * 59


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
