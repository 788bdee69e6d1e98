"""Greedy one-to-one assignment of target sites to the nearest electrodes."""

from __future__ import annotations

import numpy as np


def assign_nearest(distance_mm: np.ndarray, *, max_distance_mm: float) -> list[tuple[int, float] | None]:
    """For each row (target site) of a (sites, electrodes) distance matrix, the
    chosen `(electrode column, distance)` or None.

    Pairs are taken in order of increasing distance, so the closest matches are
    settled first and no electrode serves two sites. Ties break by site order,
    then electrode order, which keeps the result deterministic. Pairs farther
    than `max_distance_mm` are never taken.
    """
    n_sites, n_electrodes = distance_mm.shape
    chosen: list[tuple[int, float] | None] = [None] * n_sites
    rows, cols = np.nonzero(distance_mm <= max_distance_mm)
    order = np.lexsort((cols, rows, distance_mm[rows, cols]))
    used_sites: set[int] = set()
    used_electrodes: set[int] = set()
    for k in order:
        site, electrode = int(rows[k]), int(cols[k])
        if site in used_sites or electrode in used_electrodes:
            continue
        chosen[site] = (electrode, float(distance_mm[site, electrode]))
        used_sites.add(site)
        used_electrodes.add(electrode)
        if len(used_sites) == n_sites:
            break
    return chosen
