"""The fuzz suite's CI slice: hostile files for the readers, hostile lines for ``serve``.

Every case must end well: used, or refused with a typed error naming the cause; nothing
crashes, hangs, escapes its folder or damages an earlier result (see ``tests/fuzz/checks.py``).
Derandomized, so CI runs the same cases each time; ``scripts/fuzz_long.py`` runs the same
strategies for many more cases.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import checks, strategies
from tests.fuzz.harness import ServiceHarness

CI = settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                     HealthCheck.data_too_large, HealthCheck.large_base_example])


@pytest.fixture
def sandbox(tmp_path):
    return checks.make_sandbox(tmp_path)


def _assert_good(outcome: str, detail: str) -> None:
    assert checks.is_good(outcome), f"{outcome}: {detail}"


@CI
@given(case=strategies.mesh_files)
def test_mesh_files(sandbox, case):
    _assert_good(*checks.check_mesh_file(sandbox["inputs"], *case))


@CI
@given(case=strategies.ovoxel_files())
def test_ovoxel_files(sandbox, case):
    _assert_good(*checks.check_ovoxel_file(sandbox["inputs"], *case))


@CI
@given(case=strategies.image_files())
def test_image_files(sandbox, case):
    _assert_good(*checks.check_image_file(sandbox["inputs"], *case))


@pytest.fixture
def harness(sandbox):
    h = ServiceHarness(sandbox["server"])
    yield h
    h.close()


@CI
@given(data=st.data())
def test_serve_lines(sandbox, harness, data):
    files = {k: str(sandbox[k]) for k in ("image", "mesh", "bad_image", "bad_mesh")}
    files["outside"] = str(sandbox["inputs"].parent / strategies.SECRET_NAME)
    line = data.draw(strategies.protocol_lines(files, str(sandbox["out"])))
    _assert_good(*checks.check_line(harness, line, sandbox["inputs"].parent, sandbox["out"], sandbox["keep"]))
    status = harness.send(b'{"type": "status", "id": "alive?"}')
    assert status[-1].status == "ok"  # the server still answers
