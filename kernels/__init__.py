"""GPU kernels (Triton) with pure-torch references beside them.

Each op family lives in its own folder: ``kernel.py`` (the ``@triton.jit`` code),
``ops.py`` (launcher), ``configs.py`` (autotune configs as data) and
``reference.py`` (plain torch). This package imports only torch and triton.
"""
