"""End a dock's run when the user closes the dock or napari's window.

Closing a dock (its x) only takes the widget out of the window: Qt sends a ParentChange, not a
close event. napari's window closing sends no close event to its children at all, so the
window is watched, for the run only (no reference to it is kept after).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QWidget


class CloseGuard(QObject):
    """An event filter on a dock (and, during a run, on its window) that calls ``dock.stop()``.

    The dock is this object's Qt parent and is reached through ``parent()``: no Python
    reference to the dock is held, so the guard never keeps a closed viewer alive.
    """

    def __init__(self, dock: QWidget, stop_when_undocked: bool) -> None:
        super().__init__(dock)
        self._undocked = stop_when_undocked
        self._window: Any = None
        dock.installEventFilter(self)

    def _dock(self) -> Any:
        return self.parent()

    def watch_window(self) -> None:
        """Learn when napari's window closes (its children get no close event of their own)."""
        dock = self._dock()
        win = dock.window()
        if win is not dock and win is not self._window:
            win.installEventFilter(self)
            self._window = win

    def release_window(self) -> None:
        """The run ended: stop watching the window."""
        if self._window is not None:
            self._window.removeEventFilter(self)
            self._window = None

    def eventFilter(self, obj: Any, event: QEvent) -> bool:
        dock = self._dock()
        kind = event.type()
        if dock is None:
            return False
        if obj is dock:
            if kind == QEvent.Type.Close or (
                self._undocked and kind == QEvent.Type.ParentChange and dock.parent() is None
            ):
                dock.stop()
        elif obj is self._window and kind == QEvent.Type.Close and dock.worker is not None:
            if event.spontaneous():  # the user's x: napari may still ask to confirm
                QTimer.singleShot(0, self._stop_if_window_gone)
            else:
                dock.stop()
        return False

    def _stop_if_window_gone(self) -> None:
        if self._window is not None and not self._window.isVisible():
            self._dock().stop()
