"""Registers the batch tool as a Blender command: ``blender -c trellis2 --input ... --output ...``.

Blender runs the command in the background with the installed extension enabled, so the batch
uses the same preferences (backend Python, model, token, local folders) as the add-on's panel.
"""

from __future__ import annotations

import bpy

from . import batch

# The handle Blender returns, needed to unregister the command again.
_handles: list[object] = []


def register() -> None:
    _handles.append(bpy.utils.register_cli_command(batch.COMMAND, batch.main))


def unregister() -> None:
    while _handles:
        bpy.utils.unregister_cli_command(_handles.pop())
