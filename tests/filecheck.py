"""A small FileCheck, as LLVM and MLIR tests use it: the expected output is written as
`// CHECK:` lines in the test file itself.

  CHECK: text        the text appears, after the previous match
  CHECK-NEXT: text   ... on the line right after the previous match
  CHECK-NOT: text    ... does not appear between the previous match and the next one
  CHECK-LABEL: text  like CHECK; the conventional start of each function's checks
"""

from __future__ import annotations

import re

_DIRECTIVE = re.compile(r"//\s*(CHECK(?:-NEXT|-NOT|-LABEL)?):\s?(.*)$")


def directives(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        m = _DIRECTIVE.search(line)
        if m:
            out.append((m.group(1), m.group(2).strip()))
    return out


def filecheck(output: str, checks: list[tuple[str, str]]) -> None:
    """Raise AssertionError naming the first directive that does not hold. Matching continues
    from the end of the previous match (on the same line, as in LLVM's FileCheck)."""
    pos = 0               # offset where the next CHECK may match
    pending_not: list[str] = []
    for kind, pattern in checks:
        if kind == "CHECK-NOT":
            pending_not.append(pattern)
            continue
        if kind == "CHECK-NEXT":
            start = output.find("\n", pos)
            end = output.find("\n", start + 1) if start >= 0 else -1
            hit = output.find(pattern, start + 1, len(output) if end < 0 else end) if start >= 0 else -1
        else:
            hit = output.find(pattern, pos)
        if hit < 0:
            line = output.count("\n", 0, pos) + 1
            where = f"on line {line + 1}" if kind == "CHECK-NEXT" else f"after line {line}"
            raise AssertionError(f"{kind}: {pattern!r} not found {where} in:\n{_numbered(output)}")
        _check_absent(pending_not, output, pos, hit)
        pending_not = []
        pos = hit + len(pattern)
    _check_absent(pending_not, output, pos, len(output))


def _check_absent(patterns: list[str], output: str, start: int, end: int) -> None:
    for p in patterns:
        hit = output.find(p, start, end)
        if hit >= 0:
            raise AssertionError(f"CHECK-NOT: {p!r} found on line {output.count(chr(10), 0, hit) + 1} "
                                 f"in:\n{_numbered(output)}")


def _numbered(output: str) -> str:
    return "\n".join(f"{k + 1:4d} | {line}" for k, line in enumerate(output.splitlines()))
