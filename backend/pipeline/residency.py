"""Which networks are on the accelerator, and moving them there and back within a VRAM budget.

With a budget (``Runtime.vram_budget_gib``) the model store keeps a :class:`Residency`. Before a
stage runs, the least recently used networks that the stage does not need go back to host memory
until the networks on the device, the stage's own included, fit the budget
(:func:`plan_evictions`). Networks that fit stay on the device after their stage, so a job whose
networks all fit moves nothing.

Moves are cheap because inference never changes a weight. The first time a tensor leaves the
device it gets a host copy (pinned memory when the device is CUDA), and the copy is kept: a
later eviction only points the tensor back at it (no allocation, no device -> host copy), and
bringing it back is one asynchronous copy from that pinned memory (:class:`HostCopies`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

log = logging.getLogger(__name__)

GIB = 2**30
Name = TypeVar("Name", bound=Hashable)


def plan_evictions(resident: Mapping[Name, int], incoming: int, needed: Collection[Name],
                   budget: int | None) -> list[Name]:
    """The networks to move to host memory before a stage runs, in the order to move them.

    Args:
        resident: bytes each network holds on the device now, least recently used first.
        incoming: bytes the stage's networks still have to bring onto the device.
        needed: the stage's networks: never evicted, even when they alone exceed ``budget``.
        budget: bytes of networks the device may hold; None: no limit.

    Returns:
        Networks of ``resident`` outside ``needed``, least recently used first, up to the first
        one after whose eviction ``resident`` plus ``incoming`` fits ``budget``; every such network
        when nothing makes the stage fit; none when it fits already or ``budget`` is None.
    """
    if budget is None:
        return []
    total = sum(resident.values()) + incoming
    evicted = []
    for name, size in resident.items():
        if total <= budget:
            break
        if name not in needed:
            evicted.append(name)
            total -= size
    return evicted


@dataclass(frozen=True)
class Transfers:
    """Bytes of network weights moved onto the device and back to host memory."""

    to_device: int = 0
    to_host: int = 0

    def __add__(self, other: Transfers) -> Transfers:
        return Transfers(self.to_device + other.to_device, self.to_host + other.to_host)

    def __sub__(self, other: Transfers) -> Transfers:
        return Transfers(self.to_device - other.to_device, self.to_host - other.to_host)


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module``, each once (a tensor registered twice is one)."""
    return [*module.parameters(), *module.buffers()]


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and (device.index is None or t.device.index == device.index)


def _storage_key(t: torch.Tensor) -> tuple[torch.device, int]:
    return t.device, t.untyped_storage().data_ptr()


def _by_storage(tensors: Iterable[torch.Tensor]) -> dict[tuple[torch.device, int], list[torch.Tensor]]:
    """``tensors`` grouped by the storage they view (tied weights share one)."""
    groups: dict[tuple[torch.device, int], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(_storage_key(t), []).append(t)
    return groups


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages ``tensors`` view, each storage counted once."""
    return sum(group[0].untyped_storage().nbytes() for group in _by_storage(tensors).values())


def _view_like(storage: torch.UntypedStorage, like: torch.Tensor) -> torch.Tensor:
    """A tensor on ``storage`` with ``like``'s dtype, offset, shape and strides."""
    return torch.empty(0, dtype=like.dtype, device=storage.device).set_(
        storage, like.storage_offset(), like.size(), like.stride())


def _as_bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.storage_offset() == b.storage_offset())


class HostCopies:
    """One host copy per tensor, made at its first eviction and kept from then on.

    A tensor is moved by assigning ``tensor.data``, which is what ``Module.to`` itself does for
    plain tensors: parameters and buffers keep their identity, so compiled blocks and FP8 blocks
    (whose weights are ordinary float8 buffers) see what they would see after ``.to()``. Tensors
    are moved a whole storage at a time, so tensors that share one (tied or viewed weights) share
    one on either side and are counted once.

    A copy is only valid while the weights do not change, which holds in inference; a tensor whose
    shape, strides or dtype no longer match its copy gets a new one.

    Args:
        pin: allocate the host copies in pinned memory (for CUDA: asynchronous copies back).
    """

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self._copies: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> its host copy

    def copy_of(self, t: torch.Tensor) -> torch.Tensor | None:
        """``t``'s host copy (None before its first eviction or when it no longer matches ``t``)."""
        copy = self._copies.get(t)
        return copy if copy is not None and _same_layout(copy, t) else None

    def is_out(self, t: torch.Tensor) -> bool:
        """Whether ``t`` points at its host copy now."""
        copy = self.copy_of(t)
        return copy is not None and _storage_key(copy) == _storage_key(t)

    def evict(self, tensors: Iterable[torch.Tensor], device: torch.device) -> int:
        """Point each of ``tensors`` that is on ``device`` at its host copy (made now if it has
        none: one synchronous copy); returns the bytes of device storage given up."""
        leaving = [t for t in tensors if _on(t, device) and not self.is_out(t)]
        for group in _by_storage(leaving).values():
            copies = [c for c in map(self.copy_of, group) if c is not None]
            # A storage whose tensors were evicted before keeps its host storage (and stays tied).
            host = copies[0].untyped_storage() if copies else self._copy_out(group[0].untyped_storage())
            for t in group:
                if self.copy_of(t) is None:
                    self._copies[t] = _view_like(host, t)
        freed = storage_bytes(leaving)
        for t in leaving:
            t.data = self._copies[t]
        return freed

    def _copy_out(self, storage: torch.UntypedStorage) -> torch.UntypedStorage:
        host = torch.empty(storage.nbytes(), dtype=torch.uint8, pin_memory=self.pin)
        host.copy_(_as_bytes(storage))
        return host.untyped_storage()

    def restore(self, tensors: Iterable[torch.Tensor], device: torch.device) -> int:
        """Bring each of ``tensors`` that is off ``device`` or on its host copy onto ``device``, a
        fresh storage per host storage; returns the bytes copied."""
        arriving = [t for t in tensors if not _on(t, device) or self.is_out(t)]
        copied = storage_bytes(arriving)
        for group in _by_storage(arriving).values():
            source = group[0].untyped_storage()
            target = torch.empty(source.nbytes(), dtype=torch.uint8, device=device)
            # Ordered before any kernel that reads the weights (same stream); the pinned source
            # stays alive and unchanged, so the copy need not be waited for.
            target.copy_(_as_bytes(source), non_blocking=True)
            for t in group:
                t.data = _view_like(target.untyped_storage(), t)
        return copied


def _moves_by_data(module: nn.Module) -> bool:
    """Whether every tensor of ``module`` is a plain tensor or parameter. A tensor subclass (a
    ``__torch_dispatch__`` wrapper) may not survive having its ``.data`` re-pointed, so such a
    network is moved with ``Module.to`` instead (allocating on every move)."""
    return all(type(t) in (torch.Tensor, nn.Parameter) for t in _tensors(module))


class Residency:
    """The networks of a model store, least recently used first, kept within a byte budget on one
    device.

    Args:
        device: where the networks run.
        budget: bytes of network parameters and buffers the device may hold at once.
    """

    def __init__(self, device: torch.device | str, budget: int) -> None:
        self.device = torch.device(device)
        self.budget = budget
        self.moved = Transfers()  # everything moved since the residency was made
        self.host = HostCopies(pin=self.device.type == "cuda")
        self._networks: OrderedDict[int, tuple[str, nn.Module]] = OrderedDict()  # id -> (name, network)
        self._reported: set[frozenset[str]] = set()  # stages already logged as larger than the budget

    def track(self, name: str, module: nn.Module) -> None:
        """Count ``module`` among the networks the budget governs, as the most recently used one
        (a network tracked already keeps its place)."""
        self._networks.setdefault(id(module), (name, module))

    def names(self) -> list[str]:
        """Every tracked network, least recently used first."""
        return [name for name, _ in self._networks.values()]

    def resident(self) -> dict[str, int]:
        """Bytes on the device per network that has any there, least recently used first."""
        found = {name: self._bytes_on_device(module) for name, module in self._networks.values()}
        return {name: size for name, size in found.items() if size}

    def place(self, modules: Iterable[nn.Module]) -> list[str]:
        """Put ``modules`` on the device, first moving least recently used other networks to host
        memory as far as the budget needs (:func:`plan_evictions`); ``modules`` become the most
        recently used. Returns the names of the networks evicted, in eviction order."""
        modules = list({id(m): m for m in modules}.values())
        for m in modules:
            if id(m) not in self._networks:
                self.track(f"{type(m).__name__}#{len(self._networks)}", m)
        needed = {id(m) for m in modules}
        resident = {key: self._bytes_on_device(m) for key, (_, m) in self._networks.items()}
        resident = {key: size for key, size in resident.items() if size}
        incoming = sum(self._bytes_off_device(m) for m in modules)
        self._report_oversized(modules, incoming + sum(resident.get(key, 0) for key in needed))
        evicted = plan_evictions(resident, incoming, needed, self.budget)
        to_host = sum(self._evict(self._networks[key][1]) for key in evicted)
        if evicted and self.device.type == "cuda":
            torch.cuda.empty_cache()  # the freed weights leave the allocator's cache, not only the tensors
        to_device = 0
        for m in modules:
            to_device += self._restore(m)
            self._networks.move_to_end(id(m))
        self.moved = self.moved + Transfers(to_device, to_host)
        names = [self._networks[key][0] for key in evicted]
        if evicted or to_device:
            log.debug("VRAM budget: %s in (%d bytes), %s out (%d bytes)",
                      ", ".join(self._networks[id(m)][0] for m in modules), to_device,
                      ", ".join(names) or "nothing", to_host)
        return names

    def _report_oversized(self, modules: list[nn.Module], need: int) -> None:
        names = frozenset(self._networks[id(m)][0] for m in modules)
        if need > self.budget and names not in self._reported:
            self._reported.add(names)
            log.info("the VRAM budget of %.3g GiB is below the %.3g GiB this stage's networks need (%s): "
                     "they run anyway, with every other network in host memory",
                     self.budget / GIB, need / GIB, ", ".join(sorted(names)))

    def _bytes_on_device(self, module: nn.Module) -> int:
        return storage_bytes(t for t in _tensors(module) if _on(t, self.device) and not self.host.is_out(t))

    def _bytes_off_device(self, module: nn.Module) -> int:
        return storage_bytes(t for t in _tensors(module) if not _on(t, self.device) or self.host.is_out(t))

    def _evict(self, module: nn.Module) -> int:
        if _moves_by_data(module):
            return self.host.evict(_tensors(module), self.device)
        size = self._bytes_on_device(module)
        module.to("cpu")
        return size

    def _restore(self, module: nn.Module) -> int:
        if _moves_by_data(module):
            return self.host.restore(_tensors(module), self.device)
        size = self._bytes_off_device(module)
        module.to(self.device)
        return size
