"""MACI's correction of one prediction, step by step (paper Fig. 9).

Three sets of class probabilities for one sample of complete data:

1. *biased*: the MCM head with the TRAINING statistics (class priors and class-specific means),
   i.e. the prediction that leans on the dataset's label statistics;
2. *after MCM*: the backdoor-adjusted head (uniform priors, averaged class means);
3. *after counterfactual*: softmax(log p(y|x) - tau * log p(y|x_cf)), tau chosen on validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cider_mer.data.dataset import MerDataset
from cider_mer.data.labels import is_regression
from cider_mer.errors import CiderError
from cider_mer.io_utils import save_figure
from cider_mer.maci.mcm import MCMHead
from cider_mer.runs import Run


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@dataclass
class MaciSteps:
    """Class probabilities (C,) of one sample at the three steps, and the tau chosen on validation."""

    index: int
    label: int
    tau: float
    biased: np.ndarray
    after_mcm: np.ndarray
    after_cf: np.ndarray
    text: Optional[str]


def maci_steps(run: Run, data: MerDataset, index: int, split: str = "test") -> MaciSteps:
    """Probabilities of the three steps for sample ``index`` and the tau chosen on complete validation data."""
    run.check_compatible(data)
    if is_regression(run.cfg.task):
        raise CiderError("MACI's steps need classes; this run is a regression run")
    target = run.split(data, split)
    if not 0 <= index < target.n:
        raise CiderError(f"--index {index} is out of range: the {split} split has {target.n} samples")
    debiaser = run.debiaser
    tau, _ = debiaser.tune(run.model, run.split(data, "valid"))
    one = debiaser.predict(run.model, target.subset(torch.tensor([index], device=run.device)), return_joint=True)
    head = run.model.head
    with torch.no_grad():
        joint = torch.as_tensor(one.joint, device=run.device)
        if isinstance(head, MCMHead):
            biased = head.log_probs_with(joint, head.priors, head.class_means)[0].cpu().numpy()
        else:
            biased = one.log_probs[0]
    return MaciSteps(index=index, label=int(target.labels[index]), tau=tau, biased=_softmax(biased),
                     after_mcm=_softmax(one.log_probs[0]), after_cf=_softmax(debiaser.scores(one, tau)[0]),
                     text=None if data[split].raw_text is None else str(data[split].raw_text[index]))


def plot_maci(run: Run, data: MerDataset, index: int, out: str | Path, split: str = "test") -> tuple[Path, MaciSteps]:
    """Fig. 9: one sample's probabilities before MCM, after MCM and after the counterfactual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = maci_steps(run, data, index, split)
    names = run.class_names
    panels = (("biased (training statistics)", steps.biased), ("after MCM", steps.after_mcm),
              (f"after counterfactual (tau={steps.tau:.1f})", steps.after_cf))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=120, sharey=True)
    for ax, (title, probs) in zip(axes, panels):
        colors = ["tab:red" if k == steps.label else "tab:gray" for k in range(len(names))]
        bars = ax.bar(names, probs, color=colors)
        for bar, p in zip(bars, probs):
            ax.text(bar.get_x() + bar.get_width() / 2, p + 0.01, f"{100 * p:.1f}%", ha="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.1)
    text = (steps.text or "")[:90]
    fig.suptitle(f"{split} sample {index} (true class in red): {text}", fontsize=9)
    return save_figure(fig, out), steps
