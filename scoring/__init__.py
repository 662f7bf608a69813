"""Entry points: the ``scoring`` command line, ``scoring up`` and the demo."""
