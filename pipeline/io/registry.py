"""The two registries of `pipeline.io`: readers by file-name suffix, dataset adapters by format name.

Reader modules (`edf`, `mne_reader`, `trials`) and adapters that bring a format of their release
(BCIC-IV-2a's GDF, SHU-MI's `.mat`) register here when imported; `pipeline.io.readers.open_recording`
looks a file up by its suffix, and `pipeline.io.discover` looks a dataset's format up in ADAPTERS. This
module imports nothing of the package, so registering never forms an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

Opener = Callable[[Path], object]  # path → a pipeline.io.recording.Recording
Adapter = Callable[[Path], list]  # release root → list[SourceFile]

READERS: dict[str, Opener] = {}
ADAPTERS: dict[str, Adapter] = {}


def _add(table: dict, key: str, fn: Callable, what: str) -> None:
    old = table.get(key)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ValueError(f"{what} {key!r} registered twice: {old.__module__}.{old.__qualname__} and "
                         f"{fn.__module__}.{fn.__qualname__}")
    table[key] = fn


def register_reader(*suffixes: str) -> Callable[[Opener], Opener]:
    """Decorator: `fn` opens files whose lower-cased name ends with one of `suffixes` ('.edf', '-epo.fif')."""
    def wrap(fn: Opener) -> Opener:
        for s in suffixes:
            _add(READERS, s.lower(), fn, "reader for")
        return fn

    return wrap


def register_adapter(name: str) -> Callable[[Adapter], Adapter]:
    def wrap(fn: Adapter) -> Adapter:
        _add(ADAPTERS, name, fn, "dataset adapter")
        return fn

    return wrap


def reader_suffix(path: str | Path) -> str | None:
    """The registered suffix a file's name ends with (the longest), or None."""
    name = Path(path).name.lower()
    return max((s for s in READERS if name.endswith(s)), key=len, default=None)
