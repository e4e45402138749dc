"""Pure parts of the engine, tested without a server (``plpy`` is never imported)."""

from __future__ import annotations

import re
import sys
from decimal import Decimal

import pytest
from build_sql import build, engine_sources
from durable import errors, payloads, steps, workflows
from hypothesis import given
from hypothesis import strategies as st

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON)
def test_encode_decode_round_trip(value):
    assert payloads.decode(payloads.encode(value, "value")) == value


@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), b"bytes"])
def test_encode_refuses_non_json(value):
    with pytest.raises(errors.DurableError) as raised:
        payloads.encode(value, 'the result of step "x"')
    assert raised.value.sqlstate == errors.NOT_JSON
    assert 'the result of step "x" is not JSON-serialisable' in str(raised.value)


def test_json_value_converts_what_plpython_returns():
    assert payloads.json_value(Decimal("2")) == 2
    assert payloads.json_value(Decimal("1.25")) == 1.25
    assert payloads.json_value(b"\x01\xff") == "\\x01ff"
    assert payloads.json_value([Decimal("1"), {"a": b"\x00"}]) == [1, {"a": "\\x00"}]


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (True, "boolean"),
        (1, "bigint"),
        (1.5, "double precision"),
        ("x", "text"),
        (None, "text"),
        ({"a": 1}, "jsonb"),
        ([1, 2], "bigint[]"),
        (["a", None], "text[]"),
        ([True], "boolean[]"),
        ([1, "a"], "jsonb"),
        ([], "text[]"),
    ],
)
def test_value_type(value, type_name):
    assert steps.value_type(value) == type_name


def test_munge_matches_plpython():
    assert workflows.munge("a = 1\r\nreturn a") == (
        "def __durable_workflow__():\n\ta = 1\n\treturn a\n"
    )


def test_compiled_workflow_sees_its_globals():
    gd = {}
    compiled = workflows.compile_source(
        "app.w",
        1,
        "GD['seen'] = input\nreturn {'wf': wf, 'args': args}",
        "input",
        plpy=None,
        gd=gd,
    )
    assert compiled("ctx", {"n": 1}) == {"wf": "ctx", "args": [{"n": 1}]}
    assert gd == {"seen": {"n": 1}}


def test_compile_error_names_the_workflow():
    with pytest.raises(errors.DurableError) as raised:
        workflows.compile_source("app.bad", 1, "return (", "input", None, {})
    assert "workflow app.bad does not compile" in str(raised.value)


def test_error_info_of_a_plain_exception():
    try:
        {}["missing"]
    except KeyError as exc:
        info = errors.error_info(exc)
    assert info["sqlstate"] == errors.WORKFLOW_ERROR
    assert info["type"] == "KeyError"
    assert "missing" in info["message"]
    assert "Traceback" in info["traceback"]


def test_error_info_of_a_failed_step_keeps_the_step_error():
    failure = errors.StepFailed(
        "s", {"sqlstate": "22012", "message": "division by zero"}
    )
    assert errors.error_info(failure) == {
        "sqlstate": "22012",
        "message": "division by zero",
        "step": "s",
    }


def test_install_script_embeds_every_engine_module():
    script = build()
    assert script.count('\\echo Use "CREATE EXTENSION durable CASCADE"') == 1
    assert set(engine_sources()) >= {"durable", "durable.workers", "durable.context"}


def test_loader_installs_the_package_from_the_script(monkeypatch):
    script = build()
    body = re.search(
        r"as \$durable_loader\$\n(.*)\$durable_loader\$;", script, re.S
    ).group(1)
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "durable"}
    saved_path = list(sys.meta_path)
    gd: dict = {}
    try:
        exec(
            compile(f"def load():\n{_indent(body)}", "<loader>", "exec"),
            namespace := {"GD": gd},
        )
        key = namespace["load"]()
        package = gd[key]
        assert key.startswith("durable-")
        assert package.workers.__file__ == "<durable>/durable/workers.py"
        assert package.StepFailed is package.errors.StepFailed
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "durable"]:
            del sys.modules[name]
        sys.modules.update(saved)
        sys.meta_path[:] = saved_path


def _indent(text: str) -> str:
    return "".join("    " + line for line in text.splitlines(True))
