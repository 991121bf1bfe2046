"""Operators (filled in by the generate/retexture work)."""

from __future__ import annotations

import bpy

classes: tuple[type, ...] = ()


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
