"""A small, safe expression language for preproc.json: parsed with :mod:`ast`, never evaluated.

Grammar (Python syntax, a strict subset):

- numbers (``3``, ``1.5e3``) and branch names (``jetPt``; a branch name must be a Python
  identifier to appear in an expression);
- arithmetic ``+ - * / ** %`` and unary ``-``/``+``, with parentheses;
- comparisons ``< <= > >= == !=``, chained like ``1 <= nJets <= 16``;
- calls of whitelisted NumPy functions (:data:`FUNCTIONS`), all element-wise, so a flat
  branch broadcasts against a jagged one event by event.

Everything else (attributes, subscripts, lambdas, ``and``/``or``, strings, keyword
arguments, any other name called) is rejected with an :class:`~mlaas4hep_dask.errors.ExpressionError`
that quotes the expression and names the offending part.  The parsed tree is evaluated by
walking it with ``operator`` and NumPy ufuncs, on awkward or dask-awkward arrays alike.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mlaas4hep_dask.errors import ExpressionError

__all__ = ["FUNCTIONS", "Expression", "parse"]

#: Functions an expression may call: name -> (NumPy ufunc, number of arguments).
FUNCTIONS: dict[str, tuple[np.ufunc, int]] = {
    "abs": (np.absolute, 1),
    "absolute": (np.absolute, 1),
    "sqrt": (np.sqrt, 1),
    "square": (np.square, 1),
    "exp": (np.exp, 1),
    "expm1": (np.expm1, 1),
    "log": (np.log, 1),
    "log10": (np.log10, 1),
    "log2": (np.log2, 1),
    "log1p": (np.log1p, 1),
    "sin": (np.sin, 1),
    "cos": (np.cos, 1),
    "tan": (np.tan, 1),
    "arcsin": (np.arcsin, 1),
    "arccos": (np.arccos, 1),
    "arctan": (np.arctan, 1),
    "sinh": (np.sinh, 1),
    "cosh": (np.cosh, 1),
    "tanh": (np.tanh, 1),
    "arcsinh": (np.arcsinh, 1),
    "arccosh": (np.arccosh, 1),
    "arctanh": (np.arctanh, 1),
    "floor": (np.floor, 1),
    "ceil": (np.ceil, 1),
    "sign": (np.sign, 1),
    "arctan2": (np.arctan2, 2),
    "hypot": (np.hypot, 2),
    "power": (np.power, 2),
    "minimum": (np.minimum, 2),
    "maximum": (np.maximum, 2),
    "fmod": (np.fmod, 2),
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_DESCRIBE = {
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts are",
    ast.Lambda: "lambdas are",
    ast.IfExp: "conditional expressions are",
    ast.Dict: "dicts are",
    ast.List: "lists are",
    ast.Tuple: "tuples are",
    ast.Set: "sets are",
    ast.ListComp: "comprehensions are",
    ast.GeneratorExp: "comprehensions are",
    ast.NamedExpr: "assignments are",
    ast.Starred: "starred arguments are",
    ast.JoinedStr: "strings are",
    ast.Await: "await is",
}


@dataclasses.dataclass(frozen=True)
class Expression:
    """A parsed, validated expression.

    Attributes
    ----------
    text
        The expression as written.
    names
        Branch names it reads, in order of first use.
    is_comparison
        Whether its outermost operation is a (possibly chained) comparison.
    """

    text: str
    names: tuple[str, ...]
    is_comparison: bool
    _tree: ast.Expression = dataclasses.field(repr=False, compare=False)

    def evaluate(self, namespace: Mapping[str, Any]) -> Any:
        """Evaluate on arrays (NumPy, awkward, dask-awkward) given by branch name.

        Examples
        --------
        >>> import numpy as np
        >>> parse("1 <= x**2 <= 16").evaluate({"x": np.array([0, 2, 5])})
        array([False,  True, False])
        """
        return _Evaluator(namespace).visit(self._tree)


def _reject(text: str, what: str) -> ExpressionError:
    return ExpressionError(f"expression {text!r}: {what}")


class _Validator(ast.NodeVisitor):
    """Walk the tree; allow only the grammar above; collect the names read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.names: dict[str, None] = {}

    def generic_visit(self, node: ast.AST) -> None:
        what = _DESCRIBE.get(type(node), type(node).__name__)
        segment = ast.get_source_segment(self.text, node) if isinstance(node, ast.expr) else None
        where = f" (in {segment!r})" if segment and segment != self.text else ""
        raise _reject(self.text, f"{what} not allowed{where}")

    def visit_Expression(self, node: ast.Expression) -> None:
        self.visit(node.body)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        raise _reject(
            self.text,
            "'and'/'or' are not allowed: write separate cuts (cut_1, cut_2, ...), which all combine with AND",
        )

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise _reject(self.text, f"only numbers are allowed as literals, not {node.value!r}")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id.startswith("__"):
            raise _reject(self.text, f"name {node.id!r} is not allowed")
        self.names.setdefault(node.id)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) not in _BINARY:
            raise _reject(self.text, f"operator {type(node.op).__name__} is not allowed")
        self.visit(node.left)
        self.visit(node.right)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if type(node.op) not in _UNARY:
            raise _reject(self.text, f"operator {type(node.op).__name__} is not allowed")
        self.visit(node.operand)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise _reject(self.text, f"comparison {type(op).__name__} is not allowed")
        self.visit(node.left)
        for comparator in node.comparators:
            self.visit(comparator)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Name):
            segment = ast.get_source_segment(self.text, func)
            raise _reject(self.text, f"only whitelisted functions can be called, not {segment!r}")
        if func.id not in FUNCTIONS:
            raise _reject(
                self.text,
                f"function {func.id!r} is not allowed; allowed: {', '.join(sorted(FUNCTIONS))}",
            )
        if node.keywords:
            raise _reject(self.text, f"keyword arguments are not allowed in {func.id}()")
        nargs = FUNCTIONS[func.id][1]
        if len(node.args) != nargs:
            raise _reject(self.text, f"{func.id}() takes {nargs} argument(s), not {len(node.args)}")
        for arg in node.args:
            self.visit(arg)


class _Evaluator(ast.NodeVisitor):
    def __init__(self, namespace: Mapping[str, Any]) -> None:
        self.namespace = namespace

    def visit_Expression(self, node: ast.Expression) -> Any:
        return self.visit(node.body)

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        return self.namespace[node.id]

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        return _BINARY[type(node.op)](self.visit(node.left), self.visit(node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        return _UNARY[type(node.op)](self.visit(node.operand))

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        result = None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comparator)
            step = _COMPARE[type(op)](left, right)
            result = step if result is None else result & step
            left = right
        return result

    def visit_Call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        return FUNCTIONS[node.func.id][0](*(self.visit(a) for a in node.args))


def parse(text: str) -> Expression:
    """Parse and validate an expression.

    Raises
    ------
    ExpressionError
        The text is not valid syntax, or uses anything outside the grammar.

    Examples
    --------
    >>> parse("log(partonE) < 6.31").names
    ('partonE',)
    >>> parse("__import__('os')")
    Traceback (most recent call last):
    ...
    mlaas4hep_dask.errors.ExpressionError: expression "__import__('os')": function '__import__' ...
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"expression {text!r}: must be a non-empty string")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise _reject(text, f"invalid syntax ({err.msg}, column {err.offset})") from None
    validator = _Validator(text.strip())
    validator.visit(tree)
    body = tree.body
    return Expression(
        text=text.strip(),
        names=tuple(validator.names),
        is_comparison=isinstance(body, ast.Compare),
        _tree=tree,
    )
