"""What a killed run leaves behind: when a temporary file or store is stale, and removing it.

Every write of ours goes through a hidden temporary (:func:`napari_unet.common.atomic.atomic_write`,
the OME-Zarr writer, the chunked engine's probabilities) that a clean exit renames or removes; a
killed process (SIGKILL, a crash, a closed laptop) leaves it. The clean-ups built on this module
remove only what is surely dead: a name of ours, untouched for ``QUIET`` seconds before the run
began (a live run touches its stores more often than that, see ``napari_unet.scale.chunked``),
and, where the name or an owner record gives a process id on this machine, that process gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

QUIET = 60.0  # s: a temporary untouched this long before a run began is no live run's


def newest_change(path: str | os.PathLike, after: float | None = None) -> float:
    """The latest modification time of ``path`` and, for a folder, of everything inside it.

    Parameters
    ----------
    path : str or os.PathLike
        A file or a folder (walked; links are not followed).
    after : float, optional
        Stop walking as soon as a time later than this is found (the answer is then that
        time): enough to know that something is recent, without listing a large store whole.

    Returns
    -------
    float
        Seconds since the epoch; 0.0 for a path that vanished meanwhile.
    """
    try:
        newest = os.lstat(path).st_mtime
    except OSError:
        return 0.0
    if after is not None and newest > after:
        return newest
    if not os.path.isdir(path) or os.path.islink(path):
        return newest
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                if after is not None and newest > after:
                    return newest
    return newest


def pid_alive(pid: int) -> bool:
    """Whether a process of that id runs on this machine (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # Windows: no such process, or a signal it does not take
        return False
    return True


def this_host() -> str:
    """The name of the machine we run on, as owner records write it."""
    return socket.gethostname()


def remove(path: str | os.PathLike) -> int:
    """Delete a file or a folder tree; the bytes freed (0 when it could not be removed)."""
    path = Path(path)
    size = 0
    try:
        if path.is_dir() and not path.is_symlink():
            for folder, _, files in os.walk(path):
                for name in files:
                    with contextlib.suppress(OSError):
                        size += os.lstat(os.path.join(folder, name)).st_size
            shutil.rmtree(path)
        else:
            size = path.lstat().st_size
            path.unlink()
    except OSError:
        return 0
    return size
