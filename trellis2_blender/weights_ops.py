"""The "Check Access" operator: which model repositories the Hugging Face token can read."""

from __future__ import annotations

import time

import bpy
from bpy.props import BoolProperty

from . import preferences
from .core import access


class TRELLIS2_OT_check_access(bpy.types.Operator):
    """Ask Hugging Face, per model the chosen weights need, whether your token can read it, where to
    accept its licence, and how much there is to download (nothing is downloaded)"""

    bl_idname = "trellis2.check_access"
    bl_label = "Check Access"

    then_download: BoolProperty(
        name="Then Download", options={"HIDDEN", "SKIP_SAVE"},
        description="When every model is usable, ask to download, showing the sizes")

    _timer = None
    _check: access.AccessCheck | None = None

    def execute(self, context):
        settings = preferences.backend_settings(context)
        self._check = access.AccessCheck(settings)
        self._check.start()
        if bpy.app.background or context.window is None:
            while self._check.state == access.RUNNING:
                time.sleep(0.1)
            return self._finish()
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER" or self._check.state == access.RUNNING:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish()

    def _finish(self):
        check = self._check
        if check.state == access.ERROR:
            self.report({"ERROR"}, check.message)
            return {"CANCELLED"}
        for repo in check.repos:
            level, line = access.describe(repo)
            self.report({level}, line)
        self.report({"INFO"}, check.message)
        if self.then_download:
            ready, summary = access.download_summary(check.repos)
            if not ready:
                self.report({"ERROR"}, f"Not downloading: {summary}")
                return {"CANCELLED"}
            bpy.ops.trellis2.download_weights("INVOKE_DEFAULT", sizes=summary)
        return {"FINISHED"}


classes = (TRELLIS2_OT_check_access,)


# Blender's own register/unregister pair for a class tuple (unregistered in reverse).
register, unregister = bpy.utils.register_classes_factory(classes)
