"""Every error text that names a command-line flag or an add-on setting names one that exists.

The texts are found statically: every string in a ``raise``, in a call whose name ends in
``Error`` or that reports to the user (``report``, ``poll_message_set``, ...), in a class whose
name ends in ``Error``, in a module constant named ``*HINT``/``*NOTICE``/``CHOOSE_*``, and in a
function whose name says it builds a hint or notice. Flags (``--name``) must be options of
``python -m backend generate``, ``retexture`` or ``serve``, or of the batch command; text inside
backquotes names another tool's command and is skipped. Settings are named as
``add-on preferences: Setting`` or ``add-on preferences: Setting: Choice``; each must be the label
of an add-on preference (and of one of its choices).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [*sorted((ROOT / "backend" / "pipeline").rglob("*.py")),
           *sorted((ROOT / "backend" / "server").rglob("*.py")), ROOT / "backend" / "__main__.py",
           *sorted((ROOT / "trellis2_blender").glob("*.py"))]
USER_FACING_CALLS = {"report", "poll_message_set", "_finish_with_error", "_finish_error_event", "Failure",
                     "InvalidRequest", "fail", "error", "warning"}
TEXT_FUNCTIONS = re.compile(r"hint|notice|describe|problem")
TEXT_CONSTANTS = re.compile(r"(HINT|NOTICE)$|^CHOOSE_")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
SETTING = re.compile(r"add-on preferences: ([^);,]+)")
# "preferences" not followed by the setting it means (Blender's own "Preferences > ..." paths are fine).
VAGUE_SETTING = re.compile(r"(?i)preferences(?!: [A-Z{])(?! >)")


def _strings(node: ast.AST) -> list[str]:
    """String constants under ``node``; an f-string counts as one text with ``{}`` for its fields."""
    if isinstance(node, ast.JoinedStr):
        return ["".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)]
    if isinstance(node, ast.Constant):
        return [node.value] if isinstance(node.value, str) else []
    return [text for child in ast.iter_child_nodes(node) for text in _strings(child)]


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def user_texts(source: str) -> list[str]:
    """The texts of ``source`` that reach a user (see the module docstring)."""
    tree = ast.parse(source)
    texts: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            texts += _strings(node.exc)
        elif isinstance(node, ast.Call) and (_call_name(node).endswith("Error")
                                             or _call_name(node) in USER_FACING_CALLS):
            texts += _strings(node)
        elif isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
            texts += _strings(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and TEXT_FUNCTIONS.search(node.name):
            texts += _strings(node)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and TEXT_CONSTANTS.search(t.id)
                                                  for t in node.targets):
            texts += _strings(node.value)
    return list(dict.fromkeys(texts))  # a raise of an ...Error call is seen twice


def _without_quoted_commands(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text)


def named_flags(text: str) -> set[str]:
    return set(FLAG.findall(_without_quoted_commands(text)))


def named_settings(text: str) -> list[tuple[str, list[str]]]:
    """``(setting, [choices])`` for each ``add-on preferences: Setting[: Choice[ or Choice]]``."""
    found = []
    for match in SETTING.findall(text):
        name, _, choices = match.partition(": ")
        found.append((name.strip(), [c.strip() for c in choices.split(" or ") if c.strip()]))
    return found


def _known_flags() -> set[str]:
    from backend.pipeline import cli_generate, cli_retexture
    from backend.server import main as serve
    from trellis2_blender import batch

    flags = set()
    parsers = [batch.build_parser()]
    for module in (cli_generate, cli_retexture, serve):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        parsers.append(parser)
    for parser in parsers:
        flags |= {s for action in parser._actions for s in action.option_strings}
    return flags


def _preference_labels() -> dict[str, set[str]]:
    """Add-on preference label -> labels of its choices (empty for non-enum settings)."""
    pytest.importorskip("bpy")
    from trellis2_blender import preferences

    labels = {}
    for annotation in preferences.TRELLIS2_AP_preferences.__annotations__.values():
        # The module postpones annotations: each is the text of a bpy.props call, evaluated as Blender does.
        prop = eval(annotation, vars(preferences)) if isinstance(annotation, str) else annotation
        keywords = getattr(prop, "keywords", {})
        if "name" in keywords:
            labels[keywords["name"].lower()] = {item[1].lower() for item in keywords.get("items", ())}
    return labels


def _all_texts() -> list[tuple[str, str]]:
    return [(str(path.relative_to(ROOT)), text) for path in SCANNED
            for text in user_texts(path.read_text(encoding="utf-8"))]


def test_every_flag_named_in_an_error_exists():
    known = _known_flags()
    unknown = sorted({f"{where}: {flag} in {text!r}" for where, text in _all_texts()
                      for flag in named_flags(text) if flag not in known})
    assert unknown == []


def test_every_setting_named_in_an_error_exists():
    labels = _preference_labels()
    unknown = []
    for where, text in _all_texts():
        for name, choices in named_settings(text):
            if "{}" in name:
                continue  # filled from the weight registry, checked below
            if name.lower() not in labels:
                unknown.append(f"{where}: setting {name!r} in {text!r}")
                continue
            unknown += [f"{where}: choice {c!r} of {name!r}" for c in choices
                        if c.lower() not in labels[name.lower()]]
    assert unknown == []


def test_no_error_points_at_the_preferences_without_naming_the_setting():
    vague = [f"{where}: {text!r}" for where, text in _all_texts() if VAGUE_SETTING.search(text)]
    assert vague == []


def test_the_weight_registry_names_real_flags_and_settings():
    from backend.pipeline.model_source import WEIGHT_REPOS

    known, labels = _known_flags(), _preference_labels()
    for repo in WEIGHT_REPOS.values():
        assert repo.cli_flag in known, repo
        ((name, choices),) = named_settings(f"add-on preferences: {repo.setting})")
        assert name.lower() in labels and all(c.lower() in labels[name.lower()] for c in choices), repo


def test_the_scan_catches_a_wrong_flag_and_a_wrong_setting():
    source = ('def f():\n'
              '    raise InputError("bad", "use --no-such-flag (add-on preferences: Nonexistent Thing)")\n'
              'OFFLINE_HINT = "turn offline mode off (add-on preferences: Model Source: Nope)"\n'
              'x = "--ignored outside error texts"\n')
    texts = user_texts(source)
    assert named_flags(" ".join(texts)) == {"--no-such-flag"}
    assert sorted(named_settings(" ".join(texts))) == [("Model Source", ["Nope"]), ("Nonexistent Thing", [])]
    assert named_flags("log in with `hf download x --local-dir D`") == set()
    assert VAGUE_SETTING.search("give it to the backend (add-on preferences)")
    assert not VAGUE_SETTING.search("(add-on preferences: Hugging Face Token), Preferences > System")
