"""TRELLIS.2 for Blender: image-to-3D generation and retexturing with a local backend.

This module only registers the add-on. ``bpy`` is imported by the UI modules,
which are loaded inside :func:`register`, so the ``bpy``-free core (``core/``: client,
session, jobs, results, history) and the job contract (``protocol``) can be imported and
tested without Blender.
"""

from __future__ import annotations

import importlib

# UI modules, registered in this order and unregistered in reverse.
_MODULE_NAMES = ("preferences", "properties", "operators", "weights_ops", "ui", "cli_command")


def _modules():
    return [importlib.import_module(f".{name}", __package__) for name in _MODULE_NAMES]


def register() -> None:
    from . import logging_setup

    logging_setup.configure()
    for module in _modules():
        module.register()


def unregister() -> None:
    from . import logging_setup

    for module in reversed(_modules()):
        module.unregister()
    logging_setup.shutdown()
