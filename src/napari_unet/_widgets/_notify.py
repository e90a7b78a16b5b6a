"""The docks' napari notifications, in one place.

Every message starts with ``napari-unet:`` so the user knows which plugin speaks; the tests
replace ``show_error`` / ``show_warning`` / ``show_info`` here to read what the user was told.
"""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info, show_warning

PREFIX = "napari-unet: "


def error(message: str) -> None:
    show_error(PREFIX + message)


def warning(message: str) -> None:
    show_warning(PREFIX + message)


def info(message: str) -> None:
    show_info(PREFIX + message)
