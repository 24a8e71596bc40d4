"""Where a bright marker is: how the alignment tests check that RGB and its depth/thermal moved together."""

import numpy as np


def marker_centroid(plane: np.ndarray, min_contrast: float) -> np.ndarray | None:
    """Centroid (y, x) of the bright marker (pixels above the midpoint between background and peak),
    or None when nothing stands `min_contrast` above the background (the marker was cropped away)."""
    a = plane.astype(np.float64)
    background = np.median(a)
    if a.max() - background < min_contrast:
        return None
    w = np.where(a >= background + 0.5 * (a.max() - background), a - background, 0.0)
    ys, xs = np.indices(a.shape)
    return np.array([(ys * w).sum() / w.sum(), (xs * w).sum() / w.sum()])
