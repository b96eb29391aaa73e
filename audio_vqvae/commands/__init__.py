"""The ``audio-vqvae`` command line: thin front ends over the library, one module per group of sub-commands.

:mod:`audio_vqvae.commands.main` builds the parser from every module's ``register(subparsers)`` and is
the console script's entry point. The commands sit above the library: they import it, and no module
outside this package imports them (``tests/test_layout.py`` checks it).
"""
