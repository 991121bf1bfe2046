"""Deterministic procedural objects: ``generate_object(index, seed)``.

The object at (index, seed) depends only on those two integers: its random numbers come
from ``numpy.random.Generator(PCG64)`` seeded with a ``SeedSequence`` of
``[purpose tag, seed, index]``, no global random state, clock or string hashing is
involved, and the vertices are stored as float32. Indices are grouped in blocks of
``len(OBJECT_KINDS)``; within a block every kind appears exactly once, in an order drawn
from the seed, so any range of indices is balanced across kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend.geometry import TriangleMesh

from . import buildings, furniture, tools, toys, vessels
from .builder import ObjectBuilder

# Bumped whenever a change makes some (index, seed) produce a different object.
GENERATOR_VERSION = 1

# Purpose tags, the first word of every SeedSequence, so that streams for different uses never coincide.
_OBJECT_STREAM = 0x0B1EC7
_KIND_ORDER_STREAM = 0x0C1D3E
SPLIT_STREAM = 0x5B117

# (category, name) -> builder; the order is part of the seed -> object mapping.
OBJECT_KINDS: dict[tuple[str, str], Callable[[ObjectBuilder], None]] = {
    ("furniture", "table"): furniture.table,
    ("furniture", "chair"): furniture.chair,
    ("furniture", "stool"): furniture.stool,
    ("furniture", "shelf"): furniture.shelf,
    ("furniture", "lamp"): furniture.lamp,
    ("vessel", "vase"): vessels.vase,
    ("vessel", "cup"): vessels.cup,
    ("vessel", "bottle"): vessels.bottle,
    ("vessel", "bowl"): vessels.bowl,
    ("tool", "hammer"): tools.hammer,
    ("tool", "wrench"): tools.wrench,
    ("tool", "screwdriver"): tools.screwdriver,
    ("toy", "car"): toys.car,
    ("toy", "robot"): toys.robot,
    ("toy", "rocket"): toys.rocket,
    ("toy", "train"): toys.train,
    ("building", "house"): buildings.house,
    ("building", "tower"): buildings.tower,
}
KIND_NAMES: tuple[tuple[str, str], ...] = tuple(OBJECT_KINDS)
CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(c for c, _ in KIND_NAMES))


@dataclass
class ProceduralObject:
    """One generated object: a Z-up mesh centred at the origin (longest side 0.9) and what it is."""

    index: int
    seed: int
    category: str
    name: str
    part_count: int
    mesh: TriangleMesh

    @property
    def object_id(self) -> str:
        return object_id(self.index)


def object_id(index: int) -> str:
    """The file stem of object ``index``, e.g. ``proc_000123``."""
    return f"proc_{index:06d}"


def _check(index: int, seed: int) -> None:
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be non-negative integers, got index={index}, seed={seed}")


def kind_of(index: int, seed: int) -> tuple[str, str]:
    """(category, name) of object ``index`` without building it."""
    _check(index, seed)
    block, slot = divmod(index, len(KIND_NAMES))
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_KIND_ORDER_STREAM, seed, block])))
    return KIND_NAMES[int(order.permutation(len(KIND_NAMES))[slot])]


def generate_object(index: int, seed: int) -> ProceduralObject:
    """Build object ``index`` of the set drawn from ``seed`` (both non-negative integers)."""
    category, name = kind_of(index, seed)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_OBJECT_STREAM, seed, index])))
    builder = ObjectBuilder(rng)
    OBJECT_KINDS[(category, name)](builder)
    mesh = builder.build()
    return ProceduralObject(index=index, seed=seed, category=category, name=name,
                            part_count=builder.part_count, mesh=mesh)
