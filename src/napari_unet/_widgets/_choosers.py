"""Layer choosers: combo boxes that mirror the viewer's layers of one kind.

Both dock widgets list layers by name and remember them by ``unique_id`` (names change and
repeat); refreshing keeps the user's choice while that layer still exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fill_layer_combo(combo: Any, layers: Sequence[Any], prefer: Any = None, none: str | None = None) -> None:
    """List ``layers`` in ``combo`` (after a ``none`` entry, if given) without emitting signals.

    The current choice is kept if still listed, else ``prefer`` (a layer id), else the first.
    """
    current = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    if none is not None:
        combo.addItem(none, None)
    for layer in layers:
        combo.addItem(layer.name, layer.unique_id)
    ids = [combo.itemData(i) for i in range(combo.count())]
    pick = current if current in ids else prefer if prefer in ids else (ids[0] if ids else None)
    combo.setCurrentIndex(ids.index(pick) if ids else -1)
    combo.blockSignals(False)
