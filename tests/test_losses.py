import time

import pytest
import torch
from conftest import NO_DOWNLOADS

from model.iqa_weights import IQAWeightsMissing
from model.losses import iqa_loss, load_iqa_model, masked_l1_loss
from model.masking import bernoulli_mask, make_generator

CPU = torch.device("cpu")


def test_l1_loss_sees_only_the_dropped_entries():
    noisy = torch.rand(1, 3, 32, 32)
    mask = bernoulli_mask((3, 32, 32), 0.5, [make_generator(CPU, 0)], CPU)
    output = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = masked_l1_loss(output, noisy, mask)
    dropped = mask == 0
    expected = (output - noisy).abs()[dropped].mean()
    assert torch.allclose(loss, expected)
    # changing kept entries leaves the loss unchanged; their gradient is exactly zero
    assert torch.equal(masked_l1_loss(output + 5.0 * mask, noisy, mask), loss)
    loss.backward()
    assert output.grad[~dropped].abs().max().item() == 0.0
    assert output.grad[dropped].abs().min().item() > 0.0


def test_iqa_loss_runs_the_real_pyiqa_paq2piq_and_is_differentiable(iqa_weights_dir):
    model = load_iqa_model(iqa_weights_dir, "cpu")
    assert load_iqa_model(iqa_weights_dir, "cpu") is model  # loaded once per process
    assert type(model).__module__.startswith("pyiqa")
    output = (torch.rand(1, 3, 64, 64) * 1.2 - 0.1).requires_grad_()  # unclamped, like the network's
    loss = iqa_loss(model, output)
    score = model(output.detach())
    assert torch.allclose(loss, (100 - score) ** 2)
    loss.backward()
    assert output.grad.abs().sum().item() > 0.0
    assert all(not p.requires_grad for p in model.parameters())


def test_iqa_loss_accepts_grayscale(iqa_weights_dir):
    model = load_iqa_model(iqa_weights_dir, "cpu")
    gray = torch.rand(1, 1, 64, 64)
    assert torch.allclose(iqa_loss(model, gray), iqa_loss(model, gray.expand(-1, 3, -1, -1)))


def test_missing_iqa_weights_fail_fast_with_one_line_naming_the_files(tmp_path, monkeypatch):
    for name, value in NO_DOWNLOADS.items():  # downloads fail whatever the network
        monkeypatch.setenv(name, value)
    started = time.perf_counter()
    with pytest.raises(IQAWeightsMissing) as error:
        load_iqa_model(str(tmp_path / "empty"), "cpu")
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "empty" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "P2P_RoIPoolModel-fit.10.bs.120-ca69882e.pth" in message
    assert "--iqa-weights" in message and "--lambda-iqa 0" in message
    assert time.perf_counter() - started < 60
