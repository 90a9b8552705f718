"""BBN (spec §1): cumulative alpha, mixed loss, shared trunk with duplicated last block, one 2D classifier."""

import math

import pytest
import torch
from torch import nn

from fgvc_lib.models import Classifier, PretrainedWeightsUnavailable, create_model
from fgvc_lib.models.bbn import BBN, alpha_schedule, bbn_mixed_loss, create_bbn, cumulative_alpha

K = 3
B = 2
SIZE = 64


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(B, 3, SIZE, SIZE, generator=gen), torch.rand(B, 3, SIZE, SIZE, generator=gen)


@pytest.fixture(scope="module", params=["resnet18", "antialiased_resnet50"])
def bbn(request):
    torch.manual_seed(0)
    return create_bbn(request.param, K).eval()


# --- alpha -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(1, 1.0), (2, 0.999975), (100, 0.754975), (120, 0.645975), (160, 0.367975), (200, 0.009975)],
)
def test_cumulative_alpha_200_epochs(epoch, expected):
    assert cumulative_alpha(epoch, 200) == pytest.approx(expected, abs=1e-9)


def test_cumulative_alpha_inat_schedules_use_100_and_200():
    assert cumulative_alpha(90, 90) == pytest.approx(0.2079, abs=1e-9)  # div 100
    assert cumulative_alpha(180, 180) == pytest.approx(0.198975, abs=1e-9)  # div 200
    assert cumulative_alpha(100, 100) == pytest.approx(1 - (99 / 100) ** 2)  # other lengths: div = max_epoch


def test_cumulative_alpha_rejects_zero_indexed_epochs():
    with pytest.raises(ValueError, match="1-indexed"):
        cumulative_alpha(0, 200)


def test_alpha_schedules():
    cumulative = alpha_schedule("cumulative", 200)
    assert [cumulative(e) for e in (1, 100, 200)] == [cumulative_alpha(e, 200) for e in (1, 100, 200)]
    assert {alpha_schedule("0", 200)(e) for e in (1, 50, 200)} == {0.0}
    assert {alpha_schedule("1", 200)(e) for e in (1, 50, 200)} == {1.0}
    assert alpha_schedule("0.5", 200)(7) == 0.5
    short = alpha_schedule("cumulative", 200, t_max=100)
    assert short(51) == pytest.approx(0.75) and short(101) == 0.0 and short(150) == 0.0
    for bad in ("linear", "1.5", "-0.1", "nan"):
        with pytest.raises(ValueError, match="cumulative"):
            alpha_schedule(bad, 200)


def test_mixed_loss_spec_numbers():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    y_c, y_r = torch.tensor([0]), torch.tensor([2])
    assert float(nn.functional.cross_entropy(logits, y_c)) == pytest.approx(0.407606, abs=1e-6)
    assert float(nn.functional.cross_entropy(logits, y_r)) == pytest.approx(2.407606, abs=1e-6)
    assert float(bbn_mixed_loss(logits, y_c, y_r, 0.75)) == pytest.approx(0.907606, abs=1e-6)
    # batch mean, as F.cross_entropy: two copies of the same row give the same value
    assert float(bbn_mixed_loss(logits.repeat(2, 1), y_c.repeat(2), y_r.repeat(2), 0.75)) == pytest.approx(
        0.907606, abs=1e-6
    )


# --- architecture ------------------------------------------------------------------------------------------


def test_branch_blocks_are_distinct_copies_of_the_last_block(bbn):
    cb, rb = dict(bbn.cb_block.named_parameters()), dict(bbn.rb_block.named_parameters())
    assert cb.keys() == rb.keys() and len(cb) > 0
    for key in cb:
        assert cb[key].data_ptr() != rb[key].data_ptr(), key  # no shared storage
        torch.testing.assert_close(cb[key], rb[key], rtol=0, atol=0)  # initialised equal
    # the trunk no longer holds the last block: no parameter of the BBN appears twice
    ptrs = [p.data_ptr() for p in bbn.parameters()]
    assert len(ptrs) == len(set(ptrs))
    trunk_ids = {id(m) for m in bbn.trunk.modules()}
    assert id(bbn.cb_block) not in trunk_ids and id(bbn.rb_block) not in trunk_ids


def test_trunk_loses_exactly_one_block():
    full = create_model("resnet18", 0)
    assert len(full.net.layer4) == 2
    model = create_bbn("resnet18", K)
    assert len(model.trunk.net.layer4) == 1
    assert model.trunk.net.layer4[0].downsample is not None  # the stride-2 block stays shared


def test_one_linear_classifier_over_both_branches(bbn):
    linears = [m for m in bbn.modules() if isinstance(m, nn.Linear)]
    assert linears == [bbn.fc]
    assert bbn.fc.in_features == 2 * bbn.num_features
    assert bbn.fc.out_features == K and bbn.fc.bias is not None
    assert bbn.num_features == {"bbn_resnet18": 512, "bbn_antialiased_resnet50": 2048}[bbn.name]


def test_attributes_follow_the_backbone(bbn):
    assert bbn.num_classes == K
    assert bbn.name.startswith("bbn_")
    assert bbn.data_config == bbn.trunk.data_config and "mean" in bbn.data_config


def test_forward_is_mix_at_one_half_and_concat(bbn, images):
    x, _ = images
    with torch.no_grad():
        f_c, f_r = bbn.branch_features(x, "c"), bbn.branch_features(x, "r")
        out = bbn(x)
        manual = f_c @ bbn.fc.weight[:, : bbn.num_features].T + f_r @ bbn.fc.weight[:, bbn.num_features :].T
    assert f_c.shape == f_r.shape == (B, bbn.num_features)
    assert out.shape == (B, K)
    torch.testing.assert_close(out, bbn.mix(f_c, f_r, 0.5))
    torch.testing.assert_close(out, manual + bbn.fc.bias)


def test_mix_scales_by_two_alpha(bbn):
    f_c = torch.randn(B, bbn.num_features)
    f_r = torch.randn(B, bbn.num_features)
    with torch.no_grad():
        only_c = bbn.mix(f_c, f_r, 1.0)
        expected = 2 * f_c @ bbn.fc.weight[:, : bbn.num_features].T + bbn.fc.bias
    torch.testing.assert_close(only_c, expected, rtol=1e-5, atol=1e-5)


def test_forward_features_and_cam_layer(bbn, images):
    x, _ = images
    seen = []
    handle = bbn.feature_tap.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        with torch.no_grad():
            fmap = bbn.forward_features(x)
            bbn(x)  # inference passes the conventional map through the same tap
    finally:
        handle.remove()
    # the CAM layer is the shared trunk's stride-16 stage (docs/cam_layers.md), read by both branches
    assert bbn.cam_layer_name.startswith("trunk.") and bbn.cam_layer is not bbn.feature_tap
    assert fmap.shape == (B, bbn.num_features, 2, 2)
    assert seen == [fmap.shape, fmap.shape]
    with torch.no_grad():
        torch.testing.assert_close(bbn.branch_features(x, "c"), fmap.mean(dim=(2, 3)))


def test_unknown_branch_name(bbn, images):
    with pytest.raises(ValueError, match="'c'"):
        bbn.branch_features(images[0], "x")


# --- gradients ---------------------------------------------------------------------------------------------


def _grads(model: BBN, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }


def _norm(grads: dict[str, torch.Tensor], prefix: str) -> float:
    return float(sum(g.abs().sum() for n, g in grads.items() if n.startswith(prefix)))


def test_shared_trunk_gets_gradient_from_both_branches(images):
    """Loss on f_c alone -> trunk grads A, on f_r alone -> B, on the alpha mix -> alpha A + (1 - alpha) B."""
    torch.manual_seed(0)
    model = create_bbn("resnet18", K).eval()  # eval: BatchNorm uses fixed statistics, passes are repeatable
    x_c, x_r = images
    alpha = 0.3
    u = torch.randn(B, model.num_features)
    v = torch.randn(B, model.num_features)

    def loss_c():
        return (model.branch_features(x_c, "c") * u).sum()

    def loss_r():
        return (model.branch_features(x_r, "r") * v).sum()

    a, b = _grads(model, loss_c()), _grads(model, loss_r())
    mixed = _grads(model, alpha * loss_c() + (1 - alpha) * loss_r())
    trunk = [n for n in a if n.startswith("trunk.")]
    assert trunk and "trunk.net.conv1.weight" in trunk
    for name in trunk:
        torch.testing.assert_close(mixed[name], alpha * a[name] + (1 - alpha) * b[name], rtol=1e-4, atol=1e-6)
    # both branches reach the first convolution, and their contributions differ
    assert a["trunk.net.conv1.weight"].abs().sum() > 0 and b["trunk.net.conv1.weight"].abs().sum() > 0
    assert not torch.allclose(a["trunk.net.conv1.weight"], b["trunk.net.conv1.weight"])
    # each branch block only learns from its own branch (timm zero-initialises the block's last BN scale,
    # so only that scale and the shortcut side carry gradient at first)
    assert _norm(a, "cb_block.") > 0 and _norm(a, "rb_block.") == 0
    assert _norm(b, "rb_block.") > 0 and _norm(b, "cb_block.") == 0
    assert a["cb_block.bn2.weight"].abs().sum() > 0 and b["rb_block.bn2.weight"].abs().sum() > 0


def test_training_step_with_the_mixed_loss(images):
    """A BBN step as the engine does it: two trunk passes (train-mode BatchNorm), one logit tensor, two labels."""
    torch.manual_seed(0)
    model = create_bbn("resnet18", K).train()
    x_c, x_r = images
    y_c, y_r = torch.tensor([0, 1]), torch.tensor([2, 2])
    alpha = alpha_schedule("cumulative", 10)(4)
    logits = model.mix(model.branch_features(x_c, "c"), model.branch_features(x_r, "r"), alpha)
    loss = bbn_mixed_loss(logits, y_c, y_r, alpha)
    grads = _grads(model, loss)
    assert math.isfinite(loss.item())
    assert grads["fc.weight"].abs().sum() > 0
    assert grads["trunk.net.conv1.weight"].abs().sum() > 0
    assert _norm(grads, "cb_block.") > 0 and _norm(grads, "rb_block.") > 0


# --- construction ------------------------------------------------------------------------------------------


def test_backbone_without_last_residual_stage_is_rejected():
    with pytest.raises(ValueError, match="efficientnet-b0"):
        create_bbn("efficientnet-b0", K)


def test_bbn_from_a_classifier_and_num_classes_check():
    backbone = create_model("resnet18", 0)
    assert isinstance(backbone, Classifier)
    with pytest.raises(ValueError, match="num_classes"):
        BBN(backbone, 0)


def test_pretrained_without_download_raises():
    with pytest.raises(PretrainedWeightsUnavailable):
        create_bbn("resnet18", K, pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailable):
        create_bbn("antialiased_resnet50", K, pretrained=True)


def test_local_weights_reach_both_branch_blocks(tmp_path):
    torch.manual_seed(1)
    source = create_model("resnet18", 10)
    path = tmp_path / "resnet18.pth"
    torch.save(source.net.state_dict(), path)
    model = create_bbn("resnet18", K, pretrained=True, weights=str(path))
    expected = source.net.layer4[1].conv1.weight
    torch.testing.assert_close(model.cb_block.conv1.weight, expected)
    torch.testing.assert_close(model.rb_block.conv1.weight, expected)
    torch.testing.assert_close(model.trunk.net.conv1.weight, source.net.conv1.weight)


def test_bbn_on_a_pretrained_timm_efficientnet():
    from fgvc_lib.models import create_model

    bbn = create_bbn("tf_efficientnet_lite0", 4, pretrained=True).eval()
    reference = create_model("tf_efficientnet_lite0", 0, pretrained=True).eval()
    # the branch copies start from the pretrained last block + head conv; the trunk lost them
    torch.testing.assert_close(bbn.cb_block[1].weight, reference.net.conv_head.weight)
    assert bbn.cb_block[1].weight.data_ptr() != bbn.rb_block[1].weight.data_ptr()
    assert isinstance(bbn.trunk.net.conv_head, torch.nn.Identity)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bbn.branch_features(x, "c"), reference.pool(reference.forward_features(x)))
        torch.testing.assert_close(
            bbn(x), bbn.mix(bbn.branch_features(x, "c"), bbn.branch_features(x, "r"), 0.5)
        )
