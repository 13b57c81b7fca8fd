"""The heartbeat models (1-D CNN + GRU, 2-D CNN): shapes, learning, padding invariance, hparam checks."""

import inspect

import h5py
import numpy as np
import pytest
import torch

from tests.test_convert import write_beats_csv
from videns.data import layout
from videns.data.tabular import convert_tables
from videns.errors import ConfigError
from videns.models.cnn1d_gru import CNN1DGRUClassifier
from videns.models.cnn2d_resnet import CNN2DResNetClassifier

# small settings so every test runs in well under a second on CPU
SMALL = {
    "gru": (CNN1DGRUClassifier, dict(hidden_dim=8, gru_hidden=8, gru_layers=2, num_blocks=2, dropout=0.1)),
    "cnn2d": (CNN2DResNetClassifier, dict(hidden_dim=16, channels=4, num_blocks=1, dropout=0.1)),
    "cnn2d_image": (
        CNN2DResNetClassifier,
        dict(hidden_dim=16, channels=4, num_blocks=1, dropout=0.1, image_shape=(16, 12)),
    ),
}
VARIABLE_LENGTH = ["gru", "cnn2d"]


def build(name, feature_dim=1, num_classes=5, **overrides):
    cls, hparams = SMALL[name]
    return cls(feature_dim, num_classes, **(hparams | overrides))


def padded_batch(lengths, feature_dim, seed=0):
    """(x (B, max_len, D) zero-padded past each length, lengths (B,))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths), feature_dim)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, feature_dim, generator=g)
    return x, torch.tensor(lengths, dtype=torch.int64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def beats(tmp_path_factory):
    """Train split of converted sine beats: (x (N, 187, 1), lengths (N,), labels (N,))."""
    tmp = tmp_path_factory.mktemp("beats")
    csv_path = write_beats_csv(tmp, "beats.csv", 80)
    convert_tables(csv_path, csv_path, tmp / "out")
    with h5py.File(layout.split_path(tmp / "out", "train"), "r") as f:
        return (
            torch.from_numpy(f[layout.FEATURES][()]),
            torch.from_numpy(f[layout.NUM_FRAMES][()]).long(),
            torch.from_numpy(f[layout.LABELS][()]),
        )


@pytest.mark.parametrize("name", SMALL)
def test_forward_shape(name):
    model = build(name, feature_dim=1, num_classes=5)
    x, lengths = padded_batch([192, 150, 97], 1)
    assert model(x, lengths).shape == (3, 5)


@pytest.mark.parametrize("name", SMALL)
def test_loss_decreases_on_converted_beats(name, beats):
    torch.manual_seed(0)
    x, lengths, labels = beats
    model = build(name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


@pytest.mark.parametrize("feature_dim", [1, 3])
@pytest.mark.parametrize("name", VARIABLE_LENGTH)
def test_padding_invariance_in_eval(name, feature_dim):
    torch.manual_seed(0)
    model = build(name, feature_dim=feature_dim)
    # train briefly so BatchNorm's running stats are not the identity
    x, lengths = padded_batch([40, 33, 20], feature_dim, seed=1)
    for _ in range(5):
        model(3 * x + 1, lengths)
    model.eval()
    lengths_list = [40, 17, 1, 2, 31, 8]  # odd, even and length-1 items, padded to 40
    x, lengths = padded_batch(lengths_list, feature_dim, seed=2)
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths_list):
            alone = model(x[i : i + 1, :n], lengths[i : i + 1])
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=0)


def test_padding_invariance_in_eval_image_mode():
    torch.manual_seed(0)
    model = build("cnn2d_image").eval()
    lengths_list = [192, 187, 100]
    x, lengths = padded_batch(lengths_list, 1)
    x[1, 187:] = 5.0  # garbage past the length must not leak into the image
    with torch.no_grad():
        batched = model(x, lengths)
        for i, n in enumerate(lengths_list):
            torch.testing.assert_close(model(x[i : i + 1, :n], lengths[i : i + 1])[0], batched[i], atol=1e-5, rtol=0)


def test_gru_runs_over_the_pooled_time_axis():
    model = build("gru").eval()
    seen = {}
    model.gru.register_forward_hook(lambda mod, args, out: seen.update(shape=tuple(args[0].shape)))
    x, lengths = padded_batch([50, 21], 1)
    with torch.no_grad():
        model(x, lengths)
    assert seen["shape"][:2] == (2, 25)  # 50 steps pooled by 2; on CPU the padded batch runs unpacked


def test_the_gru_runs_in_fp32_under_bf16_autocast():
    model = build("gru")
    seen = {}
    model.gru.register_forward_hook(lambda mod, args, out: seen.update(dtype=out[1].dtype))
    x, lengths = padded_batch([50, 21], 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x, lengths)
    assert seen["dtype"] == torch.float32 and logits.dtype == torch.bfloat16


def test_image_mode_lays_the_signal_out_row_by_row():
    model = build("cnn2d_image").eval()
    seen = {}
    model.blocks[0].register_forward_hook(lambda mod, args, out: seen.update(image=args[0]))
    x = torch.arange(1, 188, dtype=torch.float32).reshape(1, 187, 1)  # (1, T, 1)
    with torch.no_grad():
        model(torch.nn.functional.pad(x, (0, 0, 0, 5)), torch.tensor([187]))
    image = seen["image"][0, 0]  # (16, 12)
    assert image[0].tolist() == list(range(1, 13)) and image[1, 0] == 13
    assert image.flatten()[187:].eq(0).all()


@pytest.mark.parametrize(
    "cls, hparams, field",
    [
        (CNN1DGRUClassifier, dict(gru_layers=0), "model.gru_layers"),
        (CNN1DGRUClassifier, dict(gru_hidden=0), "model.gru_hidden"),
        (CNN1DGRUClassifier, dict(hidden_dim=0), "model.hidden_dim"),
        (CNN1DGRUClassifier, dict(num_blocks=0), "model.num_blocks"),
        (CNN1DGRUClassifier, dict(dropout=1.0), "model.dropout"),
        (CNN2DResNetClassifier, dict(channels=0), "model.channels"),
        (CNN2DResNetClassifier, dict(num_blocks=-1), "model.num_blocks"),
        (CNN2DResNetClassifier, dict(dropout=-0.1), "model.dropout"),
        (CNN2DResNetClassifier, dict(image_shape=(16,)), "model.image_shape"),
        (CNN2DResNetClassifier, dict(image_shape=(1, 12)), "model.image_shape"),
    ],
)
def test_bad_hparams_raise_config_error_naming_the_field(cls, hparams, field):
    with pytest.raises(ConfigError, match=field):
        cls(1, 5, **hparams)


def test_image_mode_refuses_to_crop_multi_feature_steps():
    model = build("cnn2d_image", feature_dim=2)
    x, lengths = padded_batch([100], 2)  # 200 values > 16 * 12
    with pytest.raises(ConfigError, match="model.image_shape"):
        model(x, lengths)


@pytest.mark.parametrize("cls", [CNN1DGRUClassifier, CNN2DResNetClassifier])
def test_every_hparam_has_a_docstring_entry(cls):
    doc = inspect.getdoc(cls.__init__)
    for name in inspect.signature(cls).parameters:
        assert f"\n    {name}: " in doc, name
