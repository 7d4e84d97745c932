"""pytest plugin of the conformance suite: inert unless ``--tether-adapter`` is given."""
