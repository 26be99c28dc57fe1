"""Checks SSA scoping, operand counts, type rules and each op's own invariants. Errors show
the enclosing function with the failing op marked."""

from __future__ import annotations

from solir.errors import SolirError, VerifyError
from solir.ir.core import Block, Func, Module, Op, Value


def verify_module(module: Module, after: str | None = None) -> None:
    names = set()
    for f in module.funcs:
        if f.name in names:
            raise VerifyError(f"function @{f.name} is defined twice")
        names.add(f.name)
        verify_func(f, after)


def verify_func(f: Func, after: str | None = None) -> None:
    problem = _check_block(f.body, set(f.args), top=True)
    if problem is None:
        return
    op, message = problem
    raise VerifyError(_render(f, op, message, after), loc=op.loc if op is not None else None)


def _check_block(block: Block, visible: set[Value], top: bool) -> tuple[Op | None, str] | None:
    defined = set(visible) | set(block.args)
    if not block.ops:
        return None, "empty block"
    for i, op in enumerate(block.ops):
        for v in op.operands:
            if v not in defined:
                return op, f"operand %{v.name or '?'} is used before it is defined"
        msg = check_op(op)
        if msg:
            return op, msg
        for region in op.regions:
            inner = _check_block(region, defined, top=False)
            if inner is not None:
                return inner
        defined.update(op.results)
        terminator = i == len(block.ops) - 1
        if op.name in ("return", "kernel.yield") and not terminator:
            return op, f"'{op.name}' must be the last op of its block"
    last = block.ops[-1].name
    want = "return" if top else "kernel.yield"
    if last != want:
        return block.ops[-1], f"the block must end with '{want}'"
    return None


def check_op(op: Op) -> str | None:
    od = op.opdef
    try:
        od.check_arity(len(op.operands))
        if od.infer is not None:
            expected = od.infer_types([v.type for v in op.operands], op.attrs)
            got = [r.type for r in op.results]
            if expected != got:
                return (f"result type {', '.join(map(str, got)) or '()'} does not match the "
                        f"inferred {', '.join(map(str, expected)) or '()'}")
        if od.verify is not None:
            return od.verify(op)
    except SolirError as e:
        return e.message
    return None


def _render(f: Func, op: Op | None, message: str, after: str | None) -> str:
    from solir.ir.printer import Printer

    p = Printer()
    p.func(f)
    head = f"invalid IR after pass '{after}'" if after else "invalid IR"
    name = f"'{op.name}' " if op is not None and not message.startswith(f"'{op.name}'") else ""
    lines = [f"{head}: {name}{message}"]
    at = p.op_lines.get(op) if op is not None else None
    for k, line in enumerate(p.lines):
        if len(p.lines) > 60 and at is not None and abs(k - at) > 12 and k not in (0, len(p.lines) - 1):
            if abs(k - at) == 13:
                lines.append("    ...")
            continue
        lines.append(("  > " if k == at else "    ") + line)
        if k == at:
            indent = len(line) - len(line.lstrip())
            lines.append("    " + " " * indent + "^ " + message)
    return "\n".join(lines)
