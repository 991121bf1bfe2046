"""``python -m backend serve``: the line-delimited JSON service that Blender drives.

stdin carries requests and stdout carries events (see :mod:`backend.protocol`); stderr is
the log. There is no network listener. The process claims stdout for the protocol before
anything else runs, so library output cannot corrupt the channel.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from backend.pipeline.model_source import BUNDLED_MINI_MODEL, BUNDLED_MINI_RELEASE
from backend.server import channel
from backend.server.generators import DEFAULT_GENERATOR, import_by_name
from backend.server.service import ServerConfig, Service

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, metavar="MODULE:ATTR",
                        help="generator factory, called with a LoadSpec (default: the TRELLIS.2 pipeline)")
    parser.add_argument("--device", default="auto", help="auto, cpu, mps, cuda or cuda:N (default: auto)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="Hugging Face cache folder for model downloads (default: the hub's own)")
    parser.add_argument("--offline", action="store_true", help="never use the network; only local models")
    parser.add_argument("--bundled-release", type=Path, default=BUNDLED_MINI_RELEASE, metavar="DIR",
                        help="the bundled mini release folder, loaded for the model source "
                             f"'{BUNDLED_MINI_MODEL}' and in place of unavailable official weights "
                             "(default: backend/mini_release)")


def run(args: argparse.Namespace) -> int:
    protocol_stream = channel.claim_stdout()
    config = ServerConfig(generator=args.generator, device=args.device, cache_dir=args.cache_dir,
                          offline=args.offline, bundled_release=args.bundled_release)
    try:
        factory = import_by_name(config.generator)
    except (ImportError, AttributeError, ValueError) as exc:
        log.error("cannot import the generator factory %s: %s", config.generator, exc)
        return 2
    log.info("backend service ready (pid %s, generator %s)", os.getpid(), config.generator)
    service = Service(config, channel.Writer(protocol_stream), factory)  # type: ignore[arg-type]
    code = service.serve(sys.stdin.buffer)
    log.info("backend service stopped")
    return code
