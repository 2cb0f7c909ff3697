from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep_dask.errors import ExpressionError
from mlaas4hep_dask.handle._expressions import FUNCTIONS, parse

X = np.array([0.5, 1.0, 2.0, 4.0, 9.0])
Y = np.array([3.0, -1.0, 0.25, 2.0, 1.5])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x + y * 2", X + Y * 2),
        ("(x + y) * 2", (X + Y) * 2),
        ("-x ** 2", -(X**2)),
        ("x ** -1", X**-1),
        ("x / y - 3 % 2", X / Y - 1),
        ("sqrt(x) + abs(y)", np.sqrt(X) + np.abs(Y)),
        ("arctan2(y, x)", np.arctan2(Y, X)),
        ("maximum(x, y) - minimum(x, 1.5)", np.maximum(X, Y) - np.minimum(X, 1.5)),
        ("power(x, 2) + log10(x) + exp(-x)", X**2 + np.log10(X) + np.exp(-X)),
        ("1e-3 * x", 1e-3 * X),
    ],
)
def test_arithmetic_matches_numpy(text: str, expected: np.ndarray) -> None:
    np.testing.assert_allclose(parse(text).evaluate({"x": X, "y": Y}), expected)


def test_chained_comparison() -> None:
    expr = parse("1 <= x**2 <= 16")
    assert expr.is_comparison
    np.testing.assert_array_equal(expr.evaluate({"x": X}), [False, True, True, True, False])
    np.testing.assert_array_equal(
        parse("y < x < 3 != x").evaluate({"x": X, "y": Y}), [False, True, True, False, False]
    )


def test_names_in_order_of_first_use() -> None:
    assert parse("log(b) + a * b - c").names == ("b", "a", "c")
    assert not parse("x + 1").is_comparison


def test_flat_broadcasts_against_jagged_per_event() -> None:
    jagged = ak.Array([[1.0, 2.0], [], [3.0]])
    flat = ak.Array([10.0, 20.0, 30.0])
    out = parse("jet / ht + 1").evaluate({"jet": jagged, "ht": flat})
    assert out.tolist() == [[1.1, 1.2], [], [1.1]]


def test_lazy_on_dask_awkward_equals_eager() -> None:
    import dask_awkward as dak

    jagged = ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0]])
    flat = ak.Array([10.0, 20.0, 30.0, 40.0])
    lazy = parse("log(jet) * ht").evaluate(
        {"jet": dak.from_awkward(jagged, 2), "ht": dak.from_awkward(flat, 2)}
    )
    assert isinstance(lazy, dak.Array)
    assert lazy.compute(scheduler="sync").tolist() == (np.log(jagged) * flat).tolist()


INJECTIONS = [
    (
        "__import__('os').system('rm -rf /')",
        "only whitelisted functions can be called, not \"__import__('os').system\"",
    ),
    ("os.system('ls')", "'os.system'"),
    (
        "().__class__.__bases__[0].__subclasses__()",
        "only whitelisted functions can be called, not '().__class",
    ),
    ("x.__class__", "attribute access is not allowed"),
    ("exec('print(1)')", "function 'exec' is not allowed"),
    ("eval('1+1')", "function 'eval' is not allowed"),
    ("open('/etc/passwd')", "function 'open' is not allowed"),
    ("getattr(x, 'real')", "function 'getattr' is not allowed"),
    ("(lambda: 1)()", "only whitelisted functions can be called, not 'lambda: 1'"),
    ("lambda: 1", "lambdas are not allowed"),
    ("x[0]", "subscripts are not allowed"),
    ("[i for i in x]", "comprehensions are not allowed"),
    ("'abc'", "only numbers are allowed as literals"),
    ("f'{x}'", "strings are not allowed"),
    ("(y := x)", "assignments are not allowed"),
    ("x > 1 and x < 2", "'and'/'or' are not allowed"),
    ("log(x, base=2)", "keyword arguments are not allowed"),
    ("log(x, 2)", "log() takes 1 argument(s), not 2"),
    ("__builtins__", "name '__builtins__' is not allowed"),
    ("x if x else 1", "conditional expressions are not allowed"),
    ("x +", "invalid syntax"),
    ("x; import os", "invalid syntax"),
    ("", "must be a non-empty string"),
]


@pytest.mark.parametrize(("text", "part"), INJECTIONS)
def test_anything_outside_the_grammar_is_rejected(text: str, part: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"expression {text.strip()!r}:")
    assert part in message


# --- property test: random expression trees, rendered to text, against NumPy on the same tree ---
UNARY = sorted(
    n
    for n, (_, k) in FUNCTIONS.items()
    if k == 1 and n in {"abs", "sqrt", "exp", "sin", "cos", "tanh", "square"}
)
BINARY_FUNCS = ["arctan2", "hypot", "minimum", "maximum"]
OPS = {"+": np.add, "-": np.subtract, "*": np.multiply}


def _trees(depth: int = 3):  # type: ignore[no-untyped-def]
    leaf = st.one_of(
        st.sampled_from(["x", "y"]).map(lambda n: (n, n)),
        st.floats(min_value=-5, max_value=5, allow_nan=False).map(lambda v: (repr(v), v)),
    )
    if depth == 0:
        return leaf

    def combine(children):  # type: ignore[no-untyped-def]
        return st.one_of(
            st.tuples(st.sampled_from(sorted(OPS)), children, children).map(
                lambda t: (f"({t[1][0]} {t[0]} {t[2][0]})", ("op", t[0], t[1][1], t[2][1]))
            ),
            st.tuples(st.sampled_from(UNARY), children).map(
                lambda t: (f"{t[0]}({t[1][0]})", ("f", t[0], t[1][1]))
            ),
            st.tuples(st.sampled_from(BINARY_FUNCS), children, children).map(
                lambda t: (f"{t[0]}({t[1][0]}, {t[2][0]})", ("f", t[0], t[1][1], t[2][1]))
            ),
            children.map(lambda c: (f"-{c[0]}", ("neg", c[1]))),
        )

    return st.recursive(leaf, combine, max_leaves=8)


def _reference(node, env):  # type: ignore[no-untyped-def]
    if isinstance(node, str):
        return env[node]
    if isinstance(node, float):
        return node
    if node[0] == "op":
        return OPS[node[1]](_reference(node[2], env), _reference(node[3], env))
    if node[0] == "neg":
        return np.negative(_reference(node[1], env))
    return FUNCTIONS[node[1]][0](*(_reference(a, env) for a in node[2:]))


@settings(max_examples=150, deadline=None)
@given(_trees())
def test_random_expressions_match_numpy(tree) -> None:  # type: ignore[no-untyped-def]
    text, structure = tree
    env = {"x": X, "y": Y}
    with np.errstate(all="ignore"):
        got = parse(text).evaluate(env)
        expected = _reference(structure, env)
    np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(expected, dtype=float), rtol=1e-12)


_COUNTS = np.array([3, 0, 1, 4, 2])
_ITEMS = np.linspace(-3.0, 7.0, int(_COUNTS.sum())).astype(np.float32)
_FLAT = np.array([0.5, -1.0, 2.0, 3.5, -0.25], dtype=np.float32)


@settings(max_examples=150, deadline=None)
@given(_trees(), st.sampled_from(["x", "y"]))
def test_jagged_numpy_evaluation_gives_awkwards_numbers(tree, jagged_name: str) -> None:  # type: ignore[no-untyped-def]
    # the serving path (Jagged: counts + content) against awkward's broadcasting, bit for bit
    from mlaas4hep_dask.handle._jagged import Jagged

    text, _ = tree
    flat_name = "y" if jagged_name == "x" else "x"
    on_ak = {jagged_name: ak.unflatten(_ITEMS, _COUNTS), flat_name: ak.Array(_FLAT)}
    on_np = {jagged_name: Jagged(_COUNTS, _ITEMS), flat_name: _FLAT}
    with np.errstate(all="ignore"):
        expected = parse(text).evaluate(on_ak)
        got = parse(text).evaluate(on_np)
    if isinstance(expected, ak.Array) and expected.ndim == 2:
        assert isinstance(got, Jagged)
        np.testing.assert_array_equal(got.counts, ak.to_numpy(ak.num(expected)))
        np.testing.assert_array_equal(got.content, ak.to_numpy(ak.flatten(expected)))
        assert got.content.dtype == ak.to_numpy(ak.flatten(expected)).dtype
        for how, reduce in (("any", ak.any), ("all", ak.all)):
            np.testing.assert_array_equal(
                Jagged(got.counts, got.content > 1).reduce(how), ak.to_numpy(reduce(expected > 1, axis=1))
            )
    else:
        np.testing.assert_array_equal(
            np.asarray(got), ak.to_numpy(expected) if isinstance(expected, ak.Array) else expected
        )


def test_jagged_lists_of_different_lengths_do_not_broadcast() -> None:
    from mlaas4hep_dask.handle._jagged import Jagged

    with pytest.raises(ValueError, match="lists of different lengths"):
        parse("a + b").evaluate(
            {"a": Jagged(np.array([1, 2]), np.ones(3)), "b": Jagged(np.array([2, 1]), np.ones(3))}
        )
