"""The learned embeddings: soft targets softmax(E), each class's nearest classes, heatmap classes."""
from __future__ import annotations

import numpy as np

from .paper import PAPER_HEATMAP_CLASSES
from .records import Run, _one_line

MAX_HEATMAP_CLASSES = 20
NEAREST_K = 3


def soft_targets(E: np.ndarray) -> np.ndarray:
    """softmax over each row of E: row y is the soft target of label y."""
    z = np.asarray(E, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def load_soft_targets(run: Run) -> np.ndarray:
    """softmax(E) after the run's last epoch; ValueError with the reason if the file is missing or wrong."""
    try:
        E = np.load(run.emb_path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError("no embedding file") from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"unreadable embedding ({_one_line(e)})") from None
    n = len(run.classes)
    if E.ndim != 3 or E.shape[1:] != (n, n) or E.shape[0] < 1:
        raise ValueError(f"embedding of shape {E.shape}, expected (epochs, {n}, {n})")
    if not np.all(np.isfinite(E[-1])):
        raise ValueError("embedding has non-finite values")
    return soft_targets(E[-1])


def nearest_classes(S: np.ndarray, classes: list[str], k: int = NEAREST_K) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """Per class: (name, own mass S[i, i], the k other classes with the most soft-target mass S[i, j])."""
    out = []
    for i, name in enumerate(classes):
        others = sorted((j for j in range(len(classes)) if j != i), key=lambda j: (-S[i, j], j))[:k]
        out.append((name, float(S[i, i]), [(classes[j], float(S[i, j])) for j in others]))
    return out


def _norm_name(s: str) -> str:
    return " ".join(s.replace("_", " ").split()).casefold()


def heatmap_classes(classes: list[str], wanted: list[str] | None) -> tuple[list[int], str]:
    """Indices of the classes to show and a note saying which they are.

    ``wanted`` (from --classes, matched ignoring case and '_' vs ' '): those of the names this
    group has; a group with none of them keeps its default selection.
    """
    if wanted:
        index = {_norm_name(c): i for i, c in enumerate(classes)}
        idx = [index[_norm_name(w)] for w in wanted if _norm_name(w) in index]
        if idx:
            return idx, f"{len(idx)} classes chosen with --classes"
    note = "" if not wanted else " (none of --classes is a class here)"
    if len(classes) <= MAX_HEATMAP_CLASSES:
        return list(range(len(classes))), f"all {len(classes)} classes{note}"
    index = {c: i for i, c in enumerate(classes)}
    if all(c in index for c in PAPER_HEATMAP_CLASSES):
        return [index[c] for c in PAPER_HEATMAP_CLASSES], (f"the {len(PAPER_HEATMAP_CLASSES)} labels of the "
                                                           f"paper's figure, of {len(classes)} classes{note}")
    n = len(PAPER_HEATMAP_CLASSES)
    return list(range(n)), f"the first {n} of {len(classes)} classes (pick others with --classes){note}"
