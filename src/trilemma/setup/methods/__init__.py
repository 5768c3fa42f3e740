"""One setup module per built-in method (each defines ``SETUP``; discovered by
:mod:`trilemma.setup.registry`)."""
