"""Pictures: embeddings under missing data (Fig. 8), MACI's correction (Fig. 9), and the shared saver."""

from __future__ import annotations

from pathlib import Path

from cider_mer.io_utils import atomic_path


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write atomically as PNG (creating the folder) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
