"""Fixed electrode-site lists the vocabulary and the named channel sets are built from.

These are data, not logic: the channel vocabulary ids depend on their order, so
entries may only ever be appended (see `vocabulary.build_vocabulary_rows`).
"""

from __future__ import annotations

# The 19 classic 10-20 sites, in the order that fixes vocabulary ids 0..18.
STANDARD_1020: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8",
    "T7", "C3", "Cz", "C4", "T8",
    "P7", "P3", "Pz", "P4", "P8",
    "O1", "O2",
)

# Ear-lobe (A) and mastoid (M) reference electrodes: not on the cap grid.
REFERENCE_SITES: tuple[str, ...] = ("A1", "A2", "M1", "M2")

# Pre-1990s 10-20 names (Jasper 1958) that the modified combinatorial
# nomenclature (ACNS 2006) renamed. They are aliases, never vocabulary entries.
OLD_1020_ALIASES: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

# TUAB/TUEV "double banana" (TCP) longitudinal montage, 16 channels, modern names.
TUH_DOUBLE_BANANA: tuple[tuple[str, str], ...] = (
    ("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("Fp2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
)

# CHB-MIT scalp EEG bipolar set (the 23-channel files list T8-P8 twice; kept once).
CHBMIT_BIPOLAR: tuple[tuple[str, str], ...] = (
    ("Fp1", "F7"), ("F7", "T7"), ("T7", "P7"), ("P7", "O1"),
    ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
    ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2"),
    ("Fp2", "F8"), ("F8", "T8"), ("T8", "P8"), ("P8", "O2"),
    ("Fz", "Cz"), ("Cz", "Pz"),
    ("P7", "T7"), ("T7", "FT9"), ("FT9", "FT10"), ("FT10", "T8"),
)


def bipolar_name(anode: str, cathode: str) -> str:
    """Canonical bipolar channel name: anode minus cathode."""
    return f"{anode}-{cathode}"
