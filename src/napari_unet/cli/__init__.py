"""The ``napari-unet`` command: one module per subcommand, all driving the core's generators.

May import everything but the widgets.
"""
