"""MACI's correction of one prediction, step by step (paper Fig. 9).

Three sets of class probabilities for one sample of complete data:

1. *biased*: the MCM head with the TRAINING statistics (class priors and class-specific means),
   i.e. the prediction that leans on the dataset's label statistics;
2. *after MCM*: the backdoor-adjusted head (uniform priors, averaged class means);
3. *after counterfactual*: softmax(log p(y|x) - tau * log p(y|x_cf)), tau chosen on validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cider_mer.data.dataset import MerDataset
from cider_mer.data.labels import CLASS_NAMES
from cider_mer.evaluation.predict import predict
from cider_mer.evaluation.protocol import LoadedRun, eval_split
from cider_mer.maci.mcm import MCMHead
from cider_mer.maci.tau import debias, select_tau
from cider_mer.plots import save_figure


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def maci_steps(run: LoadedRun, data: MerDataset, index: int, split: str = "test",
               data_path: Optional[str | Path] = None) -> dict:
    """Probabilities of the three steps for sample ``index`` and the tau chosen on validation."""
    target = eval_split(run, data, split, data_path)
    if not 0 <= index < target.n:
        raise ValueError(f"--index {index} is out of range: the {split} split has {target.n} samples")
    valid = eval_split(run, data, "valid", data_path)
    cf_ids = None if run.cf_vocab is None else torch.as_tensor(run.cf_vocab.token_ids, device=run.device)
    pv = predict(run.model, valid, None, cf_ids, run.cfg.eval_batch_size)
    tau, _ = select_tau(run.cfg.task, pv.log_probs, pv.cf_log_probs, valid.labels.cpu().numpy())
    sample = target.subset(torch.tensor([index], device=run.device))
    pt = predict(run.model, sample, None, cf_ids, 1, return_joint=True)
    head = run.model.head
    with torch.no_grad():
        joint = torch.as_tensor(pt.joint, device=run.device)
        if isinstance(head, MCMHead):
            biased = head.log_probs_with(joint, head.priors, head.class_means)[0].cpu().numpy()
        else:
            biased = pt.log_probs[0]
    adjusted = pt.log_probs[0]
    final = debias(pt.log_probs, pt.cf_log_probs, tau)[0]
    return {"index": index, "label": int(target.labels[index]), "tau": tau,
            "biased": _softmax(biased), "after_mcm": _softmax(adjusted), "after_cf": _softmax(final),
            "text": None if data[split].raw_text is None else str(data[split].raw_text[index])}


def plot_maci(run: LoadedRun, data: MerDataset, index: int, out: str | Path, split: str = "test",
              data_path: Optional[str | Path] = None) -> tuple[Path, dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = maci_steps(run, data, index, split, data_path)
    names = CLASS_NAMES[run.cfg.task]
    panels = (("biased (training statistics)", "biased"), ("after MCM", "after_mcm"),
              (f"after counterfactual (tau={steps['tau']:.1f})", "after_cf"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=120, sharey=True)
    for ax, (title, key) in zip(axes, panels):
        colors = ["tab:red" if k == steps["label"] else "tab:gray" for k in range(len(names))]
        bars = ax.bar(names, steps[key], color=colors)
        for bar, p in zip(bars, steps[key]):
            ax.text(bar.get_x() + bar.get_width() / 2, p + 0.01, f"{100 * p:.1f}%", ha="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0, 1.1)
    text = (steps["text"] or "")[:90]
    fig.suptitle(f"{split} sample {index} (true class in red): {text}", fontsize=9)
    return save_figure(fig, out), steps
