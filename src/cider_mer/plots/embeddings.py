"""Joint representations under missing data, projected to 2-D and coloured by class (paper Fig. 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cider_mer.data.dataset import MerDataset
from cider_mer.errors import CiderError
from cider_mer.inference import predict
from cider_mer.io_utils import save_figure
from cider_mer.missing import EvalMissingness
from cider_mer.runs import Run


def joint_embeddings(run: Run, data: MerDataset, rates: Sequence[float], split: str = "test",
                     seed: int = 0) -> dict[float, np.ndarray]:
    """{rate: (N, J) joint representations} under RMFM at each rate (seeded, nested masks)."""
    run.check_compatible(data)
    target = run.split(data, split)
    masks = EvalMissingness("RMFM", *target.padding_masks(), seed=seed, aligned=data.aligned)
    return {r: predict(run.model, target, masks.masks(r), batch_size=run.cfg.eval_batch_size, return_joint=True,
                       autocast_dtype=run.autocast_dtype).joint
            for r in rates}


def project_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(N, J) -> (N, 2) with scikit-learn's t-SNE (perplexity adapted to N) or PCA."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method != "tsne":
        raise CiderError(f"unknown projection '{method}': expected tsne or pca")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def plot_embeddings(run: Run, data: MerDataset, rates: Sequence[float], out: str | Path,
                    split: str = "test", method: str = "tsne", seed: int = 0) -> Path:
    """One scatter per missing rate; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = run.cfg.task
    labels = data[split].labels(task)
    names = run.class_names
    embeds = joint_embeddings(run, data, rates, split, seed)
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 4.0), dpi=120, squeeze=False)
    cmap = plt.get_cmap("coolwarm" if task == "binary" else "viridis")
    for ax, rate in zip(axes[0], rates):
        xy = project_2d(embeds[rate], method, seed)
        for k, name in enumerate(names):
            sel = labels == k
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=7, alpha=0.7, color=cmap(k / max(1, len(names) - 1)), label=name)
        ax.set_title(f"missing rate {rate:.1f}")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(markerscale=2, fontsize=8)
    fig.suptitle(f"joint representations ({method.upper()}), {split} split, {run.run_dir.name}")
    return save_figure(fig, out)
