"""MCM, MACI's multimodal causal module: a classifier head with backdoor adjustment.

For each class i, the class's mean features c_i = [text | audio | vision] (training split) pass
through three class-shared MLPs to e_i = [e_l,i; e_a,i; e_v,i] (3E), and classifier_i sees
r_i = [z; e_i]. The output is log sum_i P(i) softmax(classifier_i(r_i)).

- Training mode: P = the training class priors, class i uses its own mean features.
- Eval mode: P uniform and every classifier gets the average of the training class means, so no
  label of the evaluated split is ever needed.

The statistics are persistent buffers (they travel in checkpoints); set them with
:meth:`MCMHead.set_statistics`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _feature_mlp(dim_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)
    )


class MCMHead(nn.Module):
    """(B, J) joint representation -> (B, C) class log-probabilities, backdoor-adjusted."""

    def __init__(self, joint_dim: int, feature_dims: Sequence[int], hidden: int, num_classes: int):
        super().__init__()
        if len(feature_dims) != 3:
            raise ValueError(f"feature_dims must be (text, audio, vision) widths, got {tuple(feature_dims)}")
        self.feature_dims = tuple(int(d) for d in feature_dims)
        self.num_classes = num_classes
        self.feature_mlps = nn.ModuleList(_feature_mlp(d, hidden) for d in self.feature_dims)
        self.classifiers = nn.ModuleList(nn.Linear(joint_dim + 3 * hidden, num_classes) for _ in range(num_classes))
        self.register_buffer("priors", torch.full((num_classes,), 1.0 / num_classes))
        self.register_buffer("class_means", torch.zeros(num_classes, sum(self.feature_dims)))

    def set_statistics(self, priors: torch.Tensor, class_means: torch.Tensor) -> None:
        """Store the training class priors (C,) (non-negative, summing to 1) and class means (C, D)."""
        priors = torch.as_tensor(priors, dtype=self.priors.dtype)
        class_means = torch.as_tensor(class_means, dtype=self.class_means.dtype)
        if priors.shape != self.priors.shape:
            raise ValueError(f"priors must have shape {tuple(self.priors.shape)}, got {tuple(priors.shape)}")
        if class_means.shape != self.class_means.shape:
            raise ValueError(
                f"class_means must have shape {tuple(self.class_means.shape)}, got {tuple(class_means.shape)}"
            )
        if not torch.isfinite(class_means).all():
            raise ValueError("class_means contain NaN or inf")
        if not torch.isfinite(priors).all() or (priors < 0).any() or abs(float(priors.sum()) - 1.0) > 1e-4:
            raise ValueError(f"priors must be non-negative and sum to 1, got {priors.tolist()}")
        self.priors.copy_(priors)
        self.class_means.copy_(class_means)

    def forward(self, joint: torch.Tensor) -> torch.Tensor:
        """joint (B, J) -> (B, C): training statistics in train mode, label-free ones in eval mode."""
        if self.training:
            return self.log_probs_with(joint, self.priors, self.class_means)
        uniform = torch.full_like(self.priors, 1.0 / self.num_classes)
        average = self.class_means.mean(dim=0, keepdim=True).expand_as(self.class_means)
        return self.log_probs_with(joint, uniform, average)

    def log_probs_with(self, joint: torch.Tensor, priors: torch.Tensor, class_feats: torch.Tensor) -> torch.Tensor:
        """joint (B, J), priors (C,), class_feats (C, D) -> log sum_i P(i) softmax(classifier_i(r_i)), (B, C).

        A zero prior drops its class's term exactly (log 0 = -inf inside a logsumexp).
        """
        parts = class_feats.to(joint.dtype).split(self.feature_dims, dim=-1)
        embedded = torch.cat([mlp(part) for mlp, part in zip(self.feature_mlps, parts)], dim=-1)  # (C, 3E)
        logits = torch.stack(
            [
                classifier(torch.cat([joint, embedded[i].expand(joint.shape[0], -1)], dim=-1))
                for i, classifier in enumerate(self.classifiers)
            ],
            dim=1,
        )  # (B, C classifiers, C classes)
        log_priors = torch.log(priors.to(joint.dtype))[None, :, None]
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + log_priors, dim=1)
