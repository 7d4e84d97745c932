"""Built-in adapters, each registered through the ``tether`` entry-point group."""
