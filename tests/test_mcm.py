"""MCM head: backdoor adjustment in train mode, label-free statistics in eval mode."""

from __future__ import annotations

import pytest
import torch

from cider_mer.maci.mcm import MCMHead

DIMS = (6, 3, 4)
D = sum(DIMS)


def make_head(num_classes=3, hidden=8, joint_dim=12, seed=0) -> MCMHead:
    torch.manual_seed(seed)
    head = MCMHead(joint_dim=joint_dim, feature_dims=DIMS, hidden=hidden, num_classes=num_classes)
    head.set_statistics(torch.tensor([0.5, 0.2, 0.3])[:num_classes], torch.randn(num_classes, D))
    return head


def embed(head: MCMHead, features: torch.Tensor) -> torch.Tensor:
    """(D,) class features -> (3E,) through the three class-shared MLPs."""
    parts = features.split(DIMS)
    return torch.cat([mlp(part) for mlp, part in zip(head.feature_mlps, parts)])


def test_eval_is_uniform_mixture_over_average_class_means():
    head = make_head().eval()
    joint = torch.randn(5, 12)
    e = embed(head, head.class_means.mean(dim=0))
    r = torch.cat([joint, e.expand(5, -1)], dim=-1)
    probs = torch.stack([torch.softmax(classifier(r), dim=-1) for classifier in head.classifiers]).mean(dim=0)
    torch.testing.assert_close(head(joint), probs.log())


def test_training_uses_priors_and_per_class_means():
    head = make_head().train()
    joint = torch.randn(5, 12)
    mixture = sum(
        head.priors[i]
        * torch.softmax(classifier(torch.cat([joint, embed(head, head.class_means[i]).expand(5, -1)], -1)), -1)
        for i, classifier in enumerate(head.classifiers)
    )
    torch.testing.assert_close(head(joint), mixture.log())


def test_eval_depends_only_on_the_average_class_mean():
    head = make_head()
    joint = torch.randn(5, 12)
    with torch.no_grad():
        train_before, eval_before = head.train()(joint), head.eval()(joint)
        shift = torch.randn(D)
        means = head.class_means.clone()
        means[0] += shift
        means[1] -= shift  # same average, different class-1 mean
        head.set_statistics(head.priors.clone(), means)
        train_after, eval_after = head.train()(joint), head.eval()(joint)
    assert not torch.allclose(train_before, train_after)
    torch.testing.assert_close(eval_after, eval_before)


def test_zero_prior_is_finite_with_finite_gradients():
    head = make_head()
    head.set_statistics(torch.tensor([0.0, 0.4, 0.6]), torch.randn(3, D))
    joint = torch.randn(4, 12, requires_grad=True)
    out = head.train()(joint)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(joint.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    torch.testing.assert_close(out.exp().sum(dim=-1), torch.ones(4))


def test_statistics_are_checked_and_saved_in_state_dict():
    head = make_head()
    with pytest.raises(ValueError, match="priors must have shape"):
        head.set_statistics(torch.ones(4) / 4, torch.zeros(3, D))
    with pytest.raises(ValueError, match="class_means must have shape"):
        head.set_statistics(torch.ones(3) / 3, torch.zeros(3, D + 1))
    with pytest.raises(ValueError, match="sum to 1"):
        head.set_statistics(torch.tensor([0.5, 0.5, 0.5]), torch.zeros(3, D))
    state = head.state_dict()
    assert {"priors", "class_means"} <= set(state)
    restored = MCMHead(joint_dim=12, feature_dims=DIMS, hidden=8, num_classes=3)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.class_means, head.class_means)


def test_log_probs_with_accepts_explicit_statistics():
    head = make_head().eval()
    joint = torch.randn(2, 12)
    explicit = head.log_probs_with(joint, head.priors, head.class_means)
    torch.testing.assert_close(explicit, head.train()(joint))


@pytest.mark.parametrize(("num_classes", "expected"), [(3, 33_545), (7, 41_265)])
def test_parameter_count_matches_reference(num_classes, expected):
    head = MCMHead(joint_dim=96, feature_dims=(768, 5, 20), hidden=32, num_classes=num_classes)
    assert sum(p.numel() for p in head.parameters()) == expected
