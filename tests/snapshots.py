"""A syrupy extension that stores each snapshot as one plain text file.

A multi-file export is joined into one file with a ``==> name <==`` line
before each part, so a pull request shows every exported config as a diff.
"""

from __future__ import annotations

from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode


class TextSnapshotExtension(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    file_extension = "txt"


def join_files(files: dict[str, str]) -> str:
    """Join exported files into one text, in path order."""
    if len(files) == 1:
        return next(iter(files.values()))
    parts = []
    for path in sorted(files):
        parts.append(f"==> {path} <==\n{files[path]}")
    return "\n".join(parts)
