"""Open any recording by its file name: the suffix registry's reader, EDF/BDF for unknown suffixes.

Readers of general formats (EDF/BDF, CNT, mne epochs, trial `.npz`) are imported here; readers that belong
to a release (BCIC-IV-2a's GDF labels, SHU-MI's `.mat`) register when the adapters are imported, which
happens here only for a suffix no general reader claims.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io import edf, mne_reader, trials  # noqa: F401  (their readers register on import)
from pipeline.io.edf_records import header_data_offset
from pipeline.io.recording import Recording, RecordingError
from pipeline.io.registry import READERS, reader_suffix

EDF_SUFFIXES = (".edf", ".bdf")


def _suffix(path: Path) -> str | None:
    suffix = reader_suffix(path)
    if suffix is None and path.suffix:
        import pipeline.io.adapters  # noqa: F401  (release-specific readers register on import)

        suffix = reader_suffix(path)
    return suffix


def open_recording(path: str | Path) -> Recording:
    """Open a recording by its suffix; raise RecordingError naming the file and the problem. Unknown
    suffixes are tried as EDF/BDF."""
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"{path}: no such file")
    suffix = _suffix(path)
    if suffix is None or suffix in EDF_SUFFIXES:
        return edf.open_edf(path)
    try:
        return READERS[suffix](path)
    except RecordingError:
        raise
    except Exception as exc:
        raise RecordingError(f"{path}: cannot read as {suffix.lstrip('.-_')} ({type(exc).__name__}: {exc})") from None


def data_offset(path: str | Path) -> int:
    """Byte offset of the first data record of an EDF/BDF file (also of a file of unknown suffix, which is
    read as EDF). Any other format gives 0, so its content hash covers the whole file: its header is not
    EDF's, and bytes 184:192 of a GDF/CNT could parse as a number by accident."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix is not None and suffix not in EDF_SUFFIXES:
        return 0
    return header_data_offset(path)
