"""Small drawing helpers shared by the sidebar panel and the preferences (``bpy`` layouts only).

Imports nothing else of the add-on, so every module that draws can use it.
"""

from __future__ import annotations

BACKEND_ICONS = {"STOPPED": "RADIOBUT_OFF", "STARTING": "SORTTIME", "LOADING": "IMPORT",
                 "READY": "CHECKMARK", "BUSY": "PLAY", "ERROR": "ERROR"}


def draw_backend_status(layout, context) -> None:
    status = context.window_manager.trellis2_status
    # A split, not a row: a row halves the width and cuts "Backend: Stopped" to "Backend: Stop...".
    row = layout.split(factor=0.65, align=True)
    state = status.backend_state
    text = {"LOADING": f"Loading {status.backend_percent:.0f}%"}.get(state, state.title())
    row.label(text=f"Backend: {text}", icon=BACKEND_ICONS.get(state, "QUESTION"))
    if state in ("STOPPED", "ERROR"):
        row.operator("trellis2.backend_start", text="Start", icon="PLAY")
    else:
        row.operator("trellis2.backend_stop", text="Stop", icon="X")
    if state == "LOADING" and status.backend_percent > 0:
        layout.progress(factor=status.backend_percent / 100, text=status.backend_message[:80])
    elif state == "ERROR" and status.backend_message:
        draw_message(layout.box(), context, status.backend_message)


def text_width(context, fallback: int = 40) -> int:
    """How many characters fit on one line of the current region (Blender draws ~7 px per char)."""
    region = getattr(context, "region", None)
    if region is None or region.width <= 1:
        return fallback
    scale = context.preferences.system.ui_scale or 1.0
    return max(16, int((region.width - 30) / (7.0 * scale)))


def _wrap(text: str, width: int, max_lines: int = 8) -> list[str]:
    lines = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            while len(word) > width:  # a long path or name: cut it rather than overflow the region
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:width])
                word = word[width:]
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        if line:
            lines.append(line)
    return lines[:max_lines]


def draw_message(layout, context, text: str, icon: str = "NONE") -> None:
    """``text`` wrapped to the region's width, one label per line (the first with ``icon``; the
    others indented by a blank icon so that the text stays in one column)."""
    col = layout.column(align=True)
    rest = "NONE" if icon == "NONE" else "BLANK1"
    for i, line in enumerate(_wrap(text, text_width(context))):
        col.label(text=line, icon=icon if i == 0 else rest)
