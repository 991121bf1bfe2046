"""Screenshots of the TRELLIS.2 sidebar panel in a real Blender window (run by Blender, not Python).

Installs the extension zip the way a user does (Install from Disk, here
``bpy.ops.extensions.package_install_files``), opens the 3D view's sidebar on the TRELLIS.2 tab and
saves PNG screenshots of the window as the panel goes through its states:

1. ``01_first_run.png``: a fresh install, nothing set up: the Getting Started guide.
2. ``02_ready.png`` (with ``--backend-python`` and ``--model``): the backend found and started, the
   picture chosen, the settings.
3. ``03_progress.png`` (with ``--generate``): a Generate job running, its progress in words.
4. ``04_result.png`` (with ``--generate``): the generated object, its Game-Ready Check.

Blender's own ``screen.screenshot`` reads back a black frame under Xvfb with Mesa's llvmpipe, so the
screen is grabbed from the X server with ImageMagick's ``import`` (``--grabber``), cropped to the 3D
view with its sidebar (``--crop``). Each shot is taken a moment after the panel was asked to redraw,
from a timer, so Blender's event loop keeps running; the job runs modally, as for a user.

The screenshots in ``scripts/assets/screenshots/`` (01, 03 and 04, shown in the README's Usage)
were made with Blender 4.3.2 from Debian trixie (package ``blender`` 4.3.2+dfsg-2, with
``python3-numpy``; Mesa llvmpipe) in a trixie chroot on a Debian bookworm host, under Xvfb with a
1400x1050x24 screen, the backend running in the host's virtualenv (Python 3.11, torch CPU,
bind-mounted into the chroot) on the tiny random-weight test checkpoint from
``scripts/make_tiny_checkpoint.py`` (its meshes are noise by construction)::

    # host (as root): the chroot
    apt-get install -y debootstrap
    debootstrap --variant=minbase trixie /tmp/trixie http://deb.debian.org/debian
    mount -t proc proc /tmp/trixie/proc; mount --rbind /dev /tmp/trixie/dev
    cp /etc/resolv.conf /tmp/trixie/etc/
    chroot /tmp/trixie apt-get install -y --no-install-recommends blender python3-numpy xvfb xauth imagemagick
    mkdir -p /tmp/trixie/work /tmp/trixie/root/.pyenv
    mount --bind /work /tmp/trixie/work; mount --bind /root/.pyenv /tmp/trixie/root/.pyenv   # (then ro)
    .venv/bin/python scripts/make_tiny_checkpoint.py /tmp/trixie/tmp/tiny_ckpt
    # in the chroot, from the checkout:
    HOME=/tmp/home BLENDER_USER_RESOURCES=/tmp/shots_user xvfb-run -a -s "-screen 0 1400x1050x24" \\
        blender --factory-startup --python scripts/screenshot_panel.py -- --out /tmp/shots \\
        --backend-python /work/main/.venv/bin/python --model /tmp/tiny_ckpt --generate --quit

(``/work/main/.venv/bin/python`` is the host venv's interpreter, a pyenv build under ``/root/.pyenv``.)
``BLENDER_USER_RESOURCES`` gives Blender an empty user folder, so the add-on is installed fresh and
nothing reaches a real configuration. Without ``--zip`` the zip is built from this checkout with
``scripts/build_extension.py`` (standard library only, so Blender's Python runs it). The job uses
pipeline 512, 512 px textures and 20,000 faces (``--pipeline``, ``--texture-size``, ``--faces``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
import traceback
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parent.parent
PKG = "bl_ext.user_default.trellis2_blender"
CATEGORY = "TRELLIS.2"
SETTLE_S = 1.5  # between asking for a redraw and grabbing the screen


def parse_args(argv: list[str]) -> argparse.Namespace:
    argv = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="blender --python scripts/screenshot_panel.py --",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG screenshots")
    parser.add_argument("--zip", type=Path,
                        help="extension zip to install (default: build one from this checkout)")
    parser.add_argument("--backend-python", help="the add-on's Backend Python preference")
    parser.add_argument("--model", help="a local TRELLIS.2 folder (Model Source: Local folder)")
    parser.add_argument("--device", default="cpu", help="the add-on's Device preference (default: cpu)")
    parser.add_argument("--image", type=Path, default=ROOT / "scripts" / "assets" / "demo.png",
                        help="the picture to generate from")
    parser.add_argument("--jobs", type=Path, help="the add-on's Output Folder (default: OUT/jobs)")
    parser.add_argument("--generate", action="store_true",
                        help="run Generate and shoot its progress and result")
    parser.add_argument("--pipeline", default="512", help="the panel's Pipeline (default: 512)")
    parser.add_argument("--texture-size", default="512", help="the panel's Texture Size (default: 512)")
    parser.add_argument("--faces", type=int, default=20_000, help="the panel's Faces (default: 20000)")
    parser.add_argument("--progress-at", type=float, default=0.3,
                        help="take the progress shot once the job is this far (0-1)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds to wait for the backend and the job")
    parser.add_argument("--crop", choices=("area", "sidebar", "window"), default="area",
                        help="what each screenshot shows: the 3D view with its sidebar (default), the "
                             "sidebar alone or the whole window")
    parser.add_argument("--grabber", default="import -window root -crop {geometry} +repage {path}",
                        help="command that saves the X screen's rectangle {geometry} (WxH+X+Y) to {path} "
                             "(default: ImageMagick's import)")
    parser.add_argument("--quit", action="store_true", help="quit Blender when done")
    return parser.parse_args(argv)


def load_build_extension():
    spec = importlib.util.spec_from_file_location("build_extension", ROOT / "scripts" / "build_extension.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def view3d_area():
    window = bpy.context.window_manager.windows[0]
    areas = [a for a in window.screen.areas if a.type == "VIEW_3D"]
    return window, max(areas, key=lambda a: a.width * a.height)


def sidebar(area):
    return next(r for r in area.regions if r.type == "UI")


def show_sidebar() -> None:
    """Open the 3D view's sidebar on our tab and redraw it."""
    _, area = view3d_area()
    area.spaces.active.show_region_ui = True
    region = sidebar(area)
    if region.active_panel_category != CATEGORY:
        try:  # writable in Blender 5.0; read-only in 4.3, which showed our tab after the install anyway
            region.active_panel_category = CATEGORY
        except (TypeError, ValueError, AttributeError) as exc:
            print(f"screenshot_panel: cannot choose the sidebar tab: {exc}")
    region.tag_redraw()
    area.tag_redraw()


def status():
    return bpy.context.window_manager.trellis2_status


class Shooter:
    """A timer-driven sequence of steps; each step returns seconds to wait, or None when it is done."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.steps = [self.install, self.open_sidebar, self.wait_redraw, self.shoot("01_first_run")]
        if args.backend_python and args.model:
            self.steps += [self.configure, self.start_backend, self.wait_backend, self.wait_redraw,
                           self.shoot("02_ready")]
            if args.generate:
                self.steps += [self.generate, self.wait_progress, self.wait_redraw, self.shoot("03_progress"),
                               self.wait_result, self.wait_redraw, self.shoot("04_result")]
        self.steps.append(self.finish)
        self.deadline = 0.0
        self.shots: list[Path] = []

    def __call__(self):
        try:
            while self.steps:
                if not self.deadline:
                    print(f"screenshot_panel: step {self.steps[0].__name__}")
                wait = self.steps[0]()
                if wait is not None:
                    return wait
                self.steps.pop(0)
                self.deadline = 0.0
                return 0.1
        except Exception:
            traceback.print_exc()
            self.steps = [self.finish]
            return 0.1
        return None

    # --- steps ---------------------------------------------------------------------------

    def install(self):
        prefs = bpy.context.preferences
        zip_path = self.args.zip or load_build_extension().build(self.args.out / "dist")
        print(f"screenshot_panel: installing {zip_path}")
        ret = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                       enable_on_install=True)
        if ret != {"FINISHED"} or PKG not in prefs.addons:
            raise RuntimeError(f"installing the extension failed: {ret}")

    def open_sidebar(self):
        show_sidebar()

    def wait_redraw(self):
        if not self.deadline:
            show_sidebar()
            self.deadline = time.monotonic() + SETTLE_S
        return 0.2 if time.monotonic() < self.deadline else None

    def shoot(self, name: str):
        def step():
            path = self.args.out / f"{name}.png"
            window, area = view3d_area()
            region = sidebar(area)
            if region.active_panel_category != CATEGORY:
                raise RuntimeError(f"the sidebar shows {region.active_panel_category!r}, not {CATEGORY!r}")
            box = {"area": area, "sidebar": region, "window": window}[self.args.crop]
            x, y = (0, 0) if box is window else (box.x, box.y)  # Blender counts y from the bottom
            geometry = f"{box.width}x{box.height}+{x}+{window.height - y - box.height}"
            cmd = [part.replace("{path}", str(path)).replace("{geometry}", geometry)
                   for part in self.args.grabber.split()]
            subprocess.run(cmd, check=True)
            print(f"screenshot_panel: saved {path} (window {window.width}x{window.height}, sidebar "
                  f"{region.width}x{region.height} at x={region.x}, "
                  f"category {region.active_panel_category!r})")
            self.shots.append(path)
        step.__name__ = f"shoot_{name}"
        return step

    def configure(self):
        prefs = bpy.context.preferences.addons[PKG].preferences
        prefs.backend_python = self.args.backend_python
        prefs.model_kind = "LOCAL"
        prefs.model_source = self.args.model
        prefs.device = self.args.device
        jobs = self.args.jobs or self.args.out / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        prefs.output_dir = str(jobs)
        settings = bpy.context.scene.trellis2
        settings.image_source = "FILE"
        settings.image_path = str(self.args.image)
        settings.pipeline_type = self.args.pipeline
        settings.texture_size = self.args.texture_size
        settings.face_target = self.args.faces

    def _override(self):
        window, area = view3d_area()
        return bpy.context.temp_override(window=window, area=area, region=sidebar(area))

    def start_backend(self):
        with self._override():
            print("screenshot_panel: start backend", bpy.ops.trellis2.backend_start("INVOKE_DEFAULT"))

    def _waiting(self, done: bool, what: str):
        if done:
            return None
        if not self.deadline:
            self.deadline = time.monotonic() + self.args.timeout
        if time.monotonic() > self.deadline:
            st = status()
            raise TimeoutError(f"gave up waiting for {what} (backend {st.backend_state}: "
                               f"{st.backend_message!r}; job {st.job_state}: {st.message!r})")
        return 0.5

    def wait_backend(self):
        state = status().backend_state
        if state == "ERROR":
            raise RuntimeError(f"the backend failed: {status().backend_message}")
        return self._waiting(state == "READY", "the backend to load the model")

    def generate(self):
        with self._override():
            ret = bpy.ops.trellis2.generate("INVOKE_DEFAULT")
        print(f"screenshot_panel: generate {ret}")
        if ret != {"RUNNING_MODAL"}:
            raise RuntimeError(f"Generate did not start: {ret}")

    def wait_progress(self):
        st = status()
        if st.job_state in ("FAILED", "CANCELLED"):
            raise RuntimeError(f"the job ended: {st.job_state} {st.message}")
        return self._waiting(st.job_state == "RUNNING" and st.fraction >= self.args.progress_at
                             or st.job_state == "FINISHED", "the job's progress")

    def wait_result(self):
        st = status()
        if st.job_state in ("FAILED", "CANCELLED"):
            raise RuntimeError(f"the job ended: {st.job_state} {st.message}")
        return self._waiting(st.job_state == "FINISHED", "the job to finish")

    def finish(self):
        print(f"screenshot_panel: done, {len(self.shots)} screenshots in {self.args.out}")
        if self.args.quit:
            bpy.ops.wm.quit_blender()


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    args = parse_args(sys.argv)
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    bpy.context.preferences.view.show_splash = False  # read after this script runs, before the first draw
    bpy.app.timers.register(Shooter(args), first_interval=2.0)


main()
