"""Import torch's optimiser machinery in the background when Fine-tune opens.

Measured with benchmarks/bench_gui_finetune.py: done by the first training step, those
imports held the GIL for 100-270 ms at a time (unmarshalling code, registering ops), which
froze the GUI right after Fine-tune was clicked. Here it happens once, while the user is
still choosing layers.
"""

from __future__ import annotations

import threading

_WARMED = threading.Event()
WARM_DONE = threading.Event()  #: set when the warm-up imports are finished


def warm_up_torch_training() -> None:
    """Import what torch's first optimiser imports (~800 modules: torch._dynamo, sympy ...),
    in a background thread, once per process."""
    if _WARMED.is_set():
        return
    _WARMED.set()

    def work() -> None:
        import torch  # local: the import itself is the warm-up, run in a background thread

        try:
            torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
        finally:
            WARM_DONE.set()

    threading.Thread(target=work, name="napari-unet warm-up", daemon=True).start()
