"""Parses the text printer.py writes, in its custom form or the generic form
(`%r = "tensor.add"(%a, %b) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>`)."""

from __future__ import annotations

import re
from typing import Any

import ml_dtypes  # noqa: F401  (bfloat16 for np.dtype lookups)
import numpy as np

from solir.errors import ParseError
from solir.ir.attrs import AffineMap
from solir.ir.core import Block, Func, Loc, Module, Value, make_op
from solir.ir.registry import get_op
from solir.ir.types import DType, TensorType

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<type>tensor<[0-9x]*(?:f32|f64|f16|bf16|i1|i8|i32|i64)>)
  | (?P<map>affine_map<\((?:[^()]|\([^()]*\))*\)\s*->\s*\((?:[^()]|\([^()]*\))*\)>)
  | (?P<value>%[A-Za-z0-9_.$]+)
  | (?P<symbol>@[A-Za-z0-9_.$]+)
  | (?P<label>\^[A-Za-z0-9_]+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|-inf\b)
  | (?P<arrow>->)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[(){}\[\]<>,:=])
""", re.VERBOSE)


class Token:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind: str, text: str, line: int, col: int):
        self.kind, self.text, self.line, self.col = kind, text, line, col


def tokenize(text: str, filename: str) -> list[Token]:
    tokens, pos, line, line_start = [], 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ParseError(f"unexpected character {text[pos]!r}",
                             loc=Loc(f"{filename}:{line}:{pos - line_start + 1}"))
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), line, pos - line_start + 1))
        newlines = m.group().count("\n")
        if newlines:
            line += newlines
            line_start = m.start() + m.group().rfind("\n") + 1
        pos = m.end()
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens


class Parser:
    def __init__(self, text: str, filename: str = "<string>"):
        self.filename = filename
        self.toks = tokenize(text, filename)
        self.i = 0
        self.scopes: list[dict[str, Value]] = []

    # -- token helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def error(self, msg: str, tok: Token | None = None) -> ParseError:
        t = tok or self.tok
        return ParseError(msg, loc=Loc(f"{self.filename}:{t.line}:{t.col}"))

    def next(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.tok.text == text and self.tok.kind in ("punct", "arrow", "ident"):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        if not self.accept(text):
            raise self.error(f"expected '{text}', found '{self.tok.text or 'end of input'}'")
        return self.toks[self.i - 1]

    def expect_kind(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found '{self.tok.text or 'end of input'}'")
        return self.next()

    # -- values and types ------------------------------------------------------------------------
    def lookup(self, tok: Token) -> Value:
        for scope in reversed(self.scopes):
            if tok.text in scope:
                return scope[tok.text]
        raise self.error(f"use of undefined value {tok.text}", tok)

    def define(self, tok: Token, v: Value) -> None:
        if tok.text in self.scopes[-1]:
            raise self.error(f"redefinition of {tok.text}", tok)
        self.scopes[-1][tok.text] = v
        v.name = tok.text[1:] if not tok.text[1:].isdigit() else ""

    def type(self) -> TensorType:
        return TensorType.parse(self.expect_kind("type", "a tensor type").text)

    def type_list(self) -> list[TensorType]:
        if self.accept("("):
            types = []
            if not self.accept(")"):
                types.append(self.type())
                while self.accept(","):
                    types.append(self.type())
                self.expect(")")
            return types
        types = [self.type()]
        while self.tok.text == "," and self.toks[self.i + 1].kind == "type":
            self.next()
            types.append(self.type())
        return types

    # -- attributes ---------------------------------------------------------------------------------
    def attr_dict(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if not self.accept("{"):
            return attrs
        if self.accept("}"):
            return attrs
        while True:
            key = self.expect_kind("ident", "an attribute name").text
            self.expect("=")
            attrs[key] = self.attr_value()
            if self.accept("}"):
                return attrs
            self.expect(",")

    def attr_value(self) -> Any:
        t = self.tok
        if t.kind == "number":
            self.next()
            if t.text == "-inf":
                return float("-inf")
            return float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
        if t.kind == "string":
            self.next()
            return bytes(t.text[1:-1], "utf-8").decode("unicode_escape")
        if t.kind == "map":
            self.next()
            return AffineMap.parse(t.text[len("affine_map<"):-1])
        if self.accept("["):
            items = []
            if not self.accept("]"):
                items.append(self.attr_value())
                while self.accept(","):
                    items.append(self.attr_value())
                self.expect("]")
            return tuple(items)
        if t.kind == "ident":
            self.next()
            if t.text in ("true", "false"):
                return t.text == "true"
            if t.text == "none":
                return None
            if t.text in ("inf", "nan"):
                return float(t.text)
            if t.text == "dense":
                return self.dense()
            try:
                return DType(t.text)
            except ValueError:
                raise self.error(f"unknown attribute value '{t.text}'", t) from None
        raise self.error(f"expected an attribute value, found '{t.text}'")

    def dense(self) -> np.ndarray:
        self.expect("<")
        if self.tok.kind == "string":
            payload: Any = self.next().text[1:-1]
        else:
            payload = self.dense_literal()
        self.expect(">")
        self.expect(":")
        ty = self.type()
        dt = ty.dtype.numpy
        if isinstance(payload, str):
            if not payload.startswith("0x"):
                raise self.error(f"dense payload {payload[:30]!r} is not hex bytes (elided text "
                                 "cannot be parsed back)")
            raw = bytes.fromhex(payload[2:])
            if len(raw) != ty.nbytes:
                raise self.error(f"dense payload has {len(raw)} bytes, {ty} needs {ty.nbytes}")
            return np.frombuffer(raw, dt).reshape(ty.shape).copy()
        arr = np.array(payload, dtype=object)
        if arr.shape != ty.shape:
            raise self.error(f"dense literal of shape {list(arr.shape)} does not match {ty}")
        if ty.dtype.is_float:  # bf16 goes through f32, which holds every bf16 value exactly
            wide = np.array([float(x) for x in arr.ravel()], np.float64).reshape(ty.shape)
            return wide.astype(np.float32).astype(dt) if ty.dtype is DType.BF16 else wide.astype(dt)
        return arr.astype(dt) if arr.size else np.zeros(ty.shape, dt)

    def dense_literal(self) -> Any:
        if self.accept("["):
            items = []
            if not self.accept("]"):
                items.append(self.dense_literal())
                while self.accept(","):
                    items.append(self.dense_literal())
                self.expect("]")
            return items
        return self.attr_value()

    # -- structure ----------------------------------------------------------------------------------
    def module(self) -> Module:
        m = Module()
        while self.tok.kind != "eof":
            m.funcs.append(self.func())
        return m

    def func(self) -> Func:
        self.expect("func")
        name = self.expect_kind("symbol", "a function name like @main").text[1:]
        self.scopes.append({})
        body = Block()
        self.expect("(")
        if not self.accept(")"):
            while True:
                tok = self.expect_kind("value", "an argument like %x")
                self.expect(":")
                self.define(tok, body.add_arg(self.type()))
                if self.accept(")"):
                    break
                self.expect(",")
        self.expect("->")
        result_types = self.type_list()
        attrs = self.attr_dict() if self.accept("attributes") else {}
        self.expect("{")
        self.ops_until_close(body)
        self.scopes.pop()
        f = Func(name, body, attrs)
        if not body.ops or body.ops[-1].name != "return":
            raise self.error(f"function @{name} must end with 'return'")
        if [v.type for v in f.results] != result_types:
            raise self.error(f"function @{name} returns {[str(v.type) for v in f.results]} but "
                             f"declares {[str(t) for t in result_types]}")
        return f

    def ops_until_close(self, block: Block) -> None:
        while not self.accept("}"):
            if self.tok.kind == "eof":
                raise self.error("missing '}'")
            self.op(block)

    def op(self, block: Block) -> None:
        result_toks = []
        if self.tok.kind == "value":
            result_toks.append(self.next())
            while self.accept(","):
                result_toks.append(self.expect_kind("value", "a result name"))
            self.expect("=")
        name_tok = self.tok
        if name_tok.kind == "string":
            self.next()
            opdef = get_op(name_tok.text[1:-1], Loc(f"{self.filename}:{name_tok.line}"))
            operands = self.operand_list(parens=True)
        elif name_tok.kind == "ident":
            self.next()
            opdef = get_op(name_tok.text, Loc(f"{self.filename}:{name_tok.line}"))
            operands = self.operand_list(parens=False)
        else:
            raise self.error(f"expected an op, found '{name_tok.text}'")
        attrs = self.attr_dict()
        regions = []
        if self.tok.text == "(" and self.toks[self.i + 1].text == "{":
            self.next()
            regions.append(self.region())
            while self.accept(","):
                regions.append(self.region())
            self.expect(")")
        result_types: list[TensorType] = []
        if self.accept(":"):
            if name_tok.kind == "string":
                in_types = self.type_list()
                if len(in_types) != len(operands):
                    raise self.error(f"{len(in_types)} operand types for {len(operands)} operands")
                self.expect("->")
                result_types = self.type_list()
            else:
                types = self.type_list()
                result_types = types if result_toks else []
        if len(result_types) != len(result_toks):
            raise self.error(f"'{opdef.name}' defines {len(result_toks)} results but has "
                             f"{len(result_types)} result types", name_tok)
        loc = Loc(f"{self.filename}:{name_tok.line}")
        if self.accept("loc"):
            self.expect("(")
            loc = Loc(self.attr_value())
            self.expect(")")
        op = make_op(opdef, operands, result_types, attrs, loc, regions)
        for tok, r in zip(result_toks, op.results):
            self.define(tok, r)
        block.ops.append(op)

    def operand_list(self, parens: bool) -> list[Value]:
        if parens:
            self.expect("(")
            if self.accept(")"):
                return []
        elif self.tok.kind != "value":
            return []
        vals = [self.lookup(self.expect_kind("value", "an operand"))]
        while self.accept(","):
            vals.append(self.lookup(self.expect_kind("value", "an operand")))
        if parens:
            self.expect(")")
        return vals

    def region(self) -> Block:
        self.expect("{")
        block = Block()
        self.scopes.append({})
        if self.tok.kind == "label":
            self.next()
            self.expect("(")
            if not self.accept(")"):
                while True:
                    tok = self.expect_kind("value", "a block argument")
                    self.expect(":")
                    self.define(tok, block.add_arg(self.type()))
                    if self.accept(")"):
                        break
                    self.expect(",")
            self.expect(":")
        self.ops_until_close(block)
        self.scopes.pop()
        return block


def parse_module(text: str, filename: str = "<string>") -> Module:
    return Parser(text, filename).module()
