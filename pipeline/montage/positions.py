"""Electrode positions, brought into one comparable frame.

Montages come in different frames and scales: mne's ideal cap layouts
(BioSemi, EasyCap, ...) are spheres of radius 95 mm centred 40 mm above the
fiducial plane, realistic templates (fsaverage, GSN-HydroCel) follow a real
scalp, and digitized BIDS files may be in metres or millimetres. To compare them:

1. rotate/translate into the head frame (x: LPA->RPA, y: towards the nasion,
   z: up) using the nasion/LPA/RPA fiducials when they are known;
2. fit a sphere by least squares and keep only each electrode's *direction*
   from the sphere centre (a unit vector): offset, scale and units drop out;
3. measure distances between directions as arcs on a sphere of
   `HEAD_RADIUS_MM` (a typical adult head), i.e. millimetres on the scalp.

The 10-05 target sites come from mne's `spherical_1005` (mne >= 1.13, from the
eeg_positions package), whose 10 % steps are 18 deg of polar angle (the
Nz-T10-Iz-T9 ring on the equator). Cap makers and BESA/EEGLAB use 23 deg steps
instead (the Fpz-T7-Oz-T8 ring 92 deg from the vertex), and real heads seen
from their fitted sphere centre agree with that convention:
with it, the 10-20 electrodes of biosemi64/easycap-M1/brainproducts-RNP-BA-128
land on their own sites within 3.3 mm and fsaverage's within 6.6 mm, versus
up to 36 mm with the raw 18 deg sites and up to 19 mm with the colin27 head
(whose 10-20 electrodes, unlike fsaverage's, sit ~10 mm off). So the
template's polar angles are stretched by 23/18 (`CAP_POLAR_STRETCH`).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

HEAD_RADIUS_MM = 95.0
TEN_FIVE_TEMPLATE = "spherical_1005"
CAP_POLAR_STRETCH = 23.0 / 18.0  # degrees per 10 % step: cap convention / mne spherical_1005

# BIDS coordinate systems whose axes are ALS (x anterior, y left, z up); the
# rest of the BIDS EEG/MEG/template systems are RAS. 'Other' has no known axes.
_ALS_SYSTEMS = frozenset({"CTF", "4DBti", "KitYokogawa", "EEGLAB"})
_UNIT_TO_M = {"m": 1.0, "cm": 0.01, "mm": 0.001}


@dataclass(frozen=True, eq=False)
class ElectrodePositions:
    """Electrode directions on a fitted head sphere, in the head frame."""

    names: tuple[str, ...]
    directions: np.ndarray  # (n, 3) unit vectors from the fitted sphere centre, head frame
    source: str             # montage name or file the positions came from

    def index_of(self, channel: str) -> int | None:
        """Row of `channel`: its exact name, else a unique case-insensitive match, else the same for its electrode
        label (readers' 'EEG ' prefix and reference suffix dropped: 'EEG A1' finds BioSemi's A1)."""
        from pipeline.montage.names import electrode_label

        for name in dict.fromkeys((channel, electrode_label(channel))):
            if name in self.names:
                return self.names.index(name)
            folded = [i for i, n in enumerate(self.names) if n.casefold() == name.casefold()]
            if len(folded) == 1:
                return folded[0]
        return None


def arc_distance_mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise arc lengths (mm on a `HEAD_RADIUS_MM` sphere) between unit vectors a (m,3) and b (k,3)."""
    return HEAD_RADIUS_MM * np.arccos(np.clip(a @ b.T, -1.0, 1.0))


def load_electrode_positions(spec: str | Path) -> ElectrodePositions:
    """Positions from an mne standard montage name or a BIDS `*_electrodes.tsv`.

    For a BIDS file the sibling `*_coordsystem.json` is consulted: its
    NAS/LPA/RPA landmarks (if given) define the head frame; otherwise its
    EEGCoordinateSystem fixes the axis orientation (RAS assumed when the JSON
    is absent; 'Other' without landmarks is rejected).
    """
    import mne

    builtin = mne.channels.get_builtin_montages()
    if isinstance(spec, str) and spec in builtin:
        return _montage_positions(spec)
    path = Path(spec)
    if path.is_file():
        return _bids_positions(path.resolve())
    raise ValueError(
        f"positions={str(spec)!r} is neither an mne standard montage nor an existing file; "
        f"use one of {', '.join(builtin)} or a path to a BIDS *_electrodes.tsv"
    )


@lru_cache(maxsize=1)
def ten_five_template() -> ElectrodePositions:
    """10-05 site directions in the ideal-cap convention (see module docstring)."""
    import mne

    if TEN_FIVE_TEMPLATE not in mne.channels.get_builtin_montages():
        raise RuntimeError(
            f"mne {mne.__version__} has no {TEN_FIVE_TEMPLATE!r} montage, needed to place 10-05 sites; "
            "upgrade to mne >= 1.13 or plan the montage by channel name (positions=None)"
        )
    template = _montage_positions(TEN_FIVE_TEMPLATE)
    d = template.directions
    polar = np.arccos(np.clip(d[:, 2], -1.0, 1.0)) * CAP_POLAR_STRETCH
    azimuth = np.arctan2(d[:, 1], d[:, 0])
    stretched = np.column_stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)])
    stretched.flags.writeable = False
    return ElectrodePositions(template.names, stretched, f"{TEN_FIVE_TEMPLATE} (polar x 23/18)")


@lru_cache(maxsize=16)
def _montage_positions(name: str) -> ElectrodePositions:
    import mne

    pos = mne.channels.make_standard_montage(name).get_positions()
    names = tuple(pos["ch_pos"])
    xyz = np.array([pos["ch_pos"][n] for n in names], dtype=float)
    fiducials = (pos["nasion"], pos["lpa"], pos["rpa"])
    if all(f is not None for f in fiducials):
        xyz = _to_head_frame(xyz, *fiducials)
    return _on_sphere(names, xyz, source=name)


def _bids_positions(path: Path) -> ElectrodePositions:
    names, xyz = _read_electrodes_tsv(path)
    coordsystem = path.with_name(path.name.replace("_electrodes.tsv", "_coordsystem.json"))
    if coordsystem != path and coordsystem.is_file():
        meta = json.loads(coordsystem.read_text(encoding="utf-8"))
        xyz = _bids_to_head_frame(xyz, meta, where=coordsystem)
    return _on_sphere(names, xyz, source=str(path))


def _read_electrodes_tsv(path: Path) -> tuple[tuple[str, ...], np.ndarray]:
    with path.open(encoding="utf-8-sig", newline="") as fh:  # BIDS files often carry a BOM
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or not {"name", "x", "y", "z"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a BIDS electrodes TSV with columns name, x, y, z")
    names, xyz = [], []
    for row in rows:
        coords = [row[k].strip() for k in ("x", "y", "z")]
        if any(c.lower() in ("n/a", "nan", "") for c in coords):
            continue  # electrode without a digitized position
        names.append(row["name"].strip())
        xyz.append([float(c) for c in coords])
    return tuple(names), np.array(xyz, dtype=float).reshape(-1, 3)


def _bids_to_head_frame(xyz: np.ndarray, meta: dict, *, where: Path) -> np.ndarray:
    system = str(meta.get("EEGCoordinateSystem", ""))
    landmarks = meta.get("AnatomicalLandmarkCoordinates") or {}
    same_system = meta.get("AnatomicalLandmarkCoordinateSystem", system) == system
    if same_system and all(k in landmarks for k in ("NAS", "LPA", "RPA")):
        scale = _UNIT_TO_M.get(meta.get("AnatomicalLandmarkCoordinateUnits", ""), 1.0) / _UNIT_TO_M.get(
            meta.get("EEGCoordinateUnits", ""), 1.0
        )
        nas, lpa, rpa = (np.asarray(landmarks[k], dtype=float) * scale for k in ("NAS", "LPA", "RPA"))
        return _to_head_frame(xyz, nas, lpa, rpa)
    if system in _ALS_SYSTEMS:
        return np.column_stack([-xyz[:, 1], xyz[:, 0], xyz[:, 2]])  # ALS -> RAS
    if system == "Other" or not system:
        raise ValueError(
            f"{where}: EEGCoordinateSystem {system or '(missing)'!r} has no known axis orientation and no "
            "NAS/LPA/RPA landmarks; add AnatomicalLandmarkCoordinates or pass an mne montage name as positions"
        )
    return xyz


def _to_head_frame(xyz: np.ndarray, nasion, lpa, rpa) -> np.ndarray:
    from mne.transforms import apply_trans, get_ras_to_neuromag_trans

    trans = get_ras_to_neuromag_trans(np.asarray(nasion), np.asarray(lpa), np.asarray(rpa))
    return apply_trans(trans, xyz)


def _on_sphere(names: tuple[str, ...], xyz: np.ndarray, *, source: str) -> ElectrodePositions:
    if len(names) < 4:
        raise ValueError(f"{source}: need at least 4 electrode positions to fit a head sphere, got {len(names)}")
    center, _ = fit_sphere(xyz)
    offsets = xyz - center
    directions = offsets / np.linalg.norm(offsets, axis=1)[:, None]
    directions.flags.writeable = False
    return ElectrodePositions(names, directions, source)


def fit_sphere(xyz: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere (centre, radius) through points (n, 3).

    |p - c|^2 = r^2 is linear in (c, r^2 - |c|^2): 2 p.c + k = |p|^2.
    """
    design = np.column_stack([2 * xyz, np.ones(len(xyz))])
    solution, *_ = np.linalg.lstsq(design, (xyz**2).sum(axis=1), rcond=None)
    center = solution[:3]
    r2 = solution[3] + center @ center
    if not np.isfinite(r2) or r2 <= 0:
        raise ValueError("electrode positions do not determine a sphere (coplanar or degenerate)")
    return center, float(np.sqrt(r2))
