"""Open napari with the Segment and Fine-tune widgets docked and the synthetic 2D nuclei sample."""

from __future__ import annotations

import napari


def main() -> None:
    viewer = napari.Viewer(title="napari-unet demo")
    viewer.open_sample("napari-unet", "nuclei_2d")
    viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    napari.run()


if __name__ == "__main__":
    main()
