"""The two-backbone ensembles: learnable logit mix and feature concatenation + MLP head."""

import pytest
import torch
from torch import nn

from fgvc_lib.models import (
    FeatureConcatEnsemble,
    WeightedLogitEnsemble,
    create_ensemble,
    create_model,
)

K = 4


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def logit_ens():
    torch.manual_seed(0)
    return create_ensemble("logits", "resnet18", "tf_efficientnet_lite0", K).eval()


@pytest.fixture(scope="module")
def concat_ens():
    torch.manual_seed(0)
    return create_ensemble("concat", "resnet18", "efficientnet-b0", K).eval()


def test_logit_ensemble_structure(logit_ens):
    assert isinstance(logit_ens, WeightedLogitEnsemble)
    assert isinstance(logit_ens.w, nn.Parameter)
    assert logit_ens.w.requires_grad
    assert logit_ens.w.item() == pytest.approx(0.5)
    assert any(p is logit_ens.w for p in logit_ens.parameters())
    assert logit_ens.num_classes == K
    assert logit_ens.model_a.name == "resnet18" and logit_ens.model_b.name == "tf_efficientnet_lite0"
    assert logit_ens.data_config == logit_ens.model_a.data_config
    assert logit_ens.cam_layer is logit_ens.model_a.cam_layer


def test_logit_ensemble_mixes_with_w(logit_ens, images):
    with torch.no_grad():
        a = logit_ens.model_a(images)
        b = logit_ens.model_b(images)
        assert a.shape == b.shape == (2, K)
        torch.testing.assert_close(logit_ens(images), 0.5 * a + 0.5 * b)
        old = logit_ens.w.detach().clone()
        try:
            logit_ens.w.fill_(0.25)
            out = logit_ens(images)
        finally:
            logit_ens.w.copy_(old)
    torch.testing.assert_close(out, 0.25 * a + 0.75 * b)
    # not a symmetric mix: swapping the weights gives a different answer
    assert not torch.allclose(out, 0.75 * a + 0.25 * b)


def test_logit_ensemble_w_gets_gradient(logit_ens, images):
    logit_ens.zero_grad(set_to_none=True)
    out = logit_ens(images)
    out.sum().backward()
    with torch.no_grad():
        expected = (logit_ens.model_a(images) - logit_ens.model_b(images)).sum()
    assert logit_ens.w.grad is not None
    torch.testing.assert_close(logit_ens.w.grad, expected, rtol=1e-4, atol=1e-4)
    logit_ens.zero_grad(set_to_none=True)


def test_logit_ensemble_rejects_mismatched_classes(logit_ens):
    other = create_model("resnet18", K + 1)
    with pytest.raises(ValueError, match="num_classes"):
        WeightedLogitEnsemble(logit_ens.model_a, other)


def test_concat_ensemble_structure(concat_ens):
    assert isinstance(concat_ens, FeatureConcatEnsemble)
    a, b = concat_ens.model_a, concat_ens.model_b
    assert (a.num_classes, b.num_classes) == (0, 0)
    assert not isinstance(a.classifier(), nn.Linear)
    assert not isinstance(b.classifier(), nn.Linear)
    assert (a.num_features, b.num_features) == (512, 1280)
    mlp = concat_ens.classifier
    assert isinstance(mlp, nn.Sequential) and len(mlp) == 3
    assert isinstance(mlp[0], nn.Linear) and isinstance(mlp[1], nn.ReLU) and isinstance(mlp[2], nn.Linear)
    assert (mlp[0].in_features, mlp[0].out_features) == (512 + 1280, 2048)
    assert (mlp[2].in_features, mlp[2].out_features) == (2048, K)
    assert concat_ens.num_classes == K


def test_concat_ensemble_forward_is_mlp_on_concatenated_pools(concat_ens, images):
    a, b = concat_ens.model_a, concat_ens.model_b
    with torch.no_grad():
        pa = a.pool(a.forward_features(images))
        pb = b.pool(b.forward_features(images))
        # members without classifiers return exactly their pooled features
        torch.testing.assert_close(a(images), pa)
        expected = concat_ens.classifier(torch.cat([pa, pb], dim=1))
        out = concat_ens(images)
    assert out.shape == (2, K)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(concat_ens.features(images).detach(), torch.cat([pa, pb], dim=1))


def test_concat_ensemble_hidden_width():
    a, b = create_model("resnet18", 0), create_model("resnet18", 0)
    ens = FeatureConcatEnsemble(a, b, 3, hidden=16)
    assert (ens.classifier[0].in_features, ens.classifier[0].out_features) == (1024, 16)
    assert ens.classifier[2].out_features == 3
    with torch.no_grad():
        assert ens.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_unknown_ensemble_kind():
    with pytest.raises(ValueError, match="Unknown ensemble 'average'"):
        create_ensemble("average", "resnet18", "resnet18", K)
