"""The one JSON-to-dataclass builder (``backend.protocol.build_dataclass``): its checks, and that the job
contract and the training configs both read through it."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from backend import protocol as p
from backend.protocol import build_dataclass
from backend.train.config import ConfigError, LoopArgs, OptimizerArgs, split_args
from backend.train.objectives import FlowArgs
from tests.train.training_data import tiny_config_dict


# ------------------------------------------------------- one format for both the wire and the configs
def _known(cls: type) -> str:
    return ", ".join(sorted(f.name for f in dataclasses.fields(cls)))


def _config_error(edit) -> str:
    """The error for the tiny shape flow's ``trainer.args`` with ``edit`` applied, read as a trainer does."""
    args = copy.deepcopy(tiny_config_dict("shape_flow")["trainer"]["args"])
    edit(args)
    with pytest.raises(ConfigError) as info:
        split_args(args, FlowArgs, "x.json: trainer.args")
    return str(info.value)


def _request_error(request: dict[str, Any]) -> str:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(json.dumps(request))
    assert info.value.code == "bad_message"
    return str(info.value)


GENERATE = {"type": "generate", "id": "g", "images": ["/a.png"], "output_dir": "/o"}


@pytest.mark.parametrize("config_edit, config_text, request_line, request_text", [
    (lambda a: a["optimizer"].update(lr="fast"),
     "x.json: trainer.args.optimizer.lr: expected a number, got 'fast'",
     {**GENERATE, "shape": {"guidance_strength": "fast"}},
     "generate.shape.guidance_strength: expected a number, got 'fast'"),
    (lambda a: a.update(max_steps=1.5), "x.json: trainer.args.max_steps: expected an integer, got 1.5",
     {**GENERATE, "seed": 1.5}, "generate.seed: expected an integer, got 1.5"),
    (lambda a: a.update(gradient_checkpointing="yes"),
     "x.json: trainer.args.gradient_checkpointing: expected true or false, got 'yes'",
     {**GENERATE, "export": {"write_glb": "yes"}},
     "generate.export.write_glb: expected true or false, got 'yes'"),
    (lambda a: a["optimizer"].update(lrr=1), f"x.json: trainer.args.optimizer: unknown key 'lrr'; known: "
     f"{_known(OptimizerArgs)}",
     {**GENERATE, "shape": {"stepz": 3}}, f"generate.shape: unknown key 'stepz'; known: {_known(p.Sampler)}"),
    (lambda a: a.pop("max_steps"), "x.json: trainer.args: missing key 'max_steps'",
     {"type": "cancel", "id": "c"}, "cancel: missing key 'job'"),
])
def test_a_training_config_and_a_request_word_the_same_mistake_alike(config_edit, config_text, request_line,
                                                                     request_text):
    assert _config_error(config_edit) == config_text
    assert _request_error(request_line) == request_text


def test_a_training_config_and_an_event_word_an_object_expected_alike():
    assert _config_error(lambda a: a.update(release_names=[])) == \
        "x.json: trainer.args.release_names: expected an object, got []"
    reply = {"type": "hello", "job": "h", "version": 1, "server": "s", "pid": 1, "capabilities": []}
    with pytest.raises(p.ProtocolError) as info:
        p.decode_event(json.dumps(reply))
    assert str(info.value) == "hello.capabilities: expected an object, got []"


def test_a_value_the_config_class_refuses_names_the_section():
    text = _config_error(lambda a: a.update(batch_split=99))
    assert text == "x.json: trainer.args: batch_split 99 exceeds batch_size_per_gpu " \
                   f"{tiny_config_dict('shape_flow')['trainer']['args']['batch_size_per_gpu']}"


# -------------------------------------------------------------------------------- the builder itself
@dataclass(frozen=True)
class Inner:
    size: int = field(default=1, metadata={"range": (1, 8)})


@dataclass(frozen=True)
class Outer:
    name: str
    scale: float = 1.0
    mode: str = field(default="a", metadata={"choices": ("a", "b")})
    inner: Inner = Inner()
    maybe: Inner | None = None
    sizes: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")


class Malformed(Exception):
    pass


class Refused(Exception):
    pass


def _build(obj: Any, **bounds: int) -> Outer:
    return build_dataclass(Outer, obj, "o", error=Malformed, limit_error=Refused, **bounds)


def test_builds_nested_dataclasses_and_takes_integers_as_floats():
    built = _build({"name": "n", "scale": 2, "inner": {"size": 3}, "maybe": {}, "sizes": [1, 2],
                    "extra": {"k": [1]}})
    assert built == Outer(name="n", scale=2.0, inner=Inner(3), maybe=Inner(), sizes=[1, 2], extra={"k": [1]})
    assert type(built.scale) is float


@pytest.mark.parametrize("obj, raised, text", [
    ([1], Malformed, "o: expected an object, got [1]"),
    ({"name": "n", "maybe": 3}, Malformed, "o.maybe: expected an object, got 3"),
    ({"name": "n", "sizes": [1, "2"]}, Malformed, "o.sizes[1]: expected an integer, got '2'"),
    ({"name": "n", "scale": True}, Malformed, "o.scale: expected a number, got True"),
    ({"name": "n", "extra": {"k\ud800": 1}}, Malformed,
     "o.extra: expected keys that are valid Unicode strings"),
    ({"name": "\ud800"}, Malformed, "o.name: the string holds an unpaired surrogate"),
    ({"name": "n", "d": 4, "c": 3, "b": 2, "a": 1}, Malformed,
     "o: unknown keys 'a', 'b', 'c' and 1 more; known: extra, inner, maybe, mode, name, scale, secret, "
     "sizes"),
    ({"name": "n", "mode": "c"}, Refused, "o.mode must be one of a, b, got 'c'"),
    ({"name": "n", "inner": {"size": 9}}, Refused, "o.inner.size must be in 1..8, got 9"),
    ({"name": "n", "scale": -1}, Refused, "o: scale must be >= 0, got -1.0"),
])
def test_mistakes_raise_the_callers_exception_naming_the_path(obj, raised, text):
    with pytest.raises(raised) as info:
        _build(obj)
    assert str(info.value).startswith(text)


def test_bounds_apply_only_when_given():
    long = {"name": "x" * 100, "sizes": list(range(30))}
    assert _build(long) == Outer(name="x" * 100, sizes=list(range(30)))
    with pytest.raises(Malformed) as info:
        _build(long, max_string_chars=50)
    assert str(info.value) == "o.name: expected a string of at most 50 chars, got a string of 100 chars"
    with pytest.raises(Malformed) as info:
        _build(long, max_list_items=4)
    assert str(info.value) == "o.sizes: expected a list of at most 4 items, got a list of 30 items"


def test_a_secret_field_is_never_quoted():
    token = "hf_" + "s" * 40
    for bad, kind in ((token * 300, "a string of"), ([token], "a list of 1 items"), (7, "a number")):
        with pytest.raises(Malformed) as info:
            _build({"name": "n", "secret": bad}, max_string_chars=8192)
        assert kind in str(info.value) and "hf_" not in str(info.value)
    load = {"type": "load", "id": "l", "source": "a/b", "token": token * 300}
    assert token[:8] not in _request_error(load)


def test_an_unsupported_type_hint_is_a_bug_not_a_bad_value():
    @dataclass(frozen=True)
    class Odd:
        pair: tuple[int, int] = (0, 0)

    with pytest.raises(TypeError, match="o.pair: unsupported type hint"):
        build_dataclass(Odd, {"pair": [1, 2]}, "o", error=Malformed)


def test_the_default_exceptions_are_value_errors():
    with pytest.raises(ValueError, match="o: missing key 'max_steps'"):
        build_dataclass(LoopArgs, {}, "o")
