"""The exceptions solir raises. Every message names what failed, where it came from, and a fix."""

from __future__ import annotations


class SolirError(Exception):
    """Base class of every error solir raises on purpose."""

    def __init__(self, message: str, *, loc: object = None, fix: str | None = None):
        self.message = message
        self.loc = loc
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [self.message]
        if self.loc is not None and str(self.loc):
            lines.append(f"  at {self.loc}")
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)


class UnsupportedOpError(SolirError):
    """An op, primitive, attribute or dtype that solir cannot translate or lower."""


class ParseError(SolirError):
    """Textual IR that does not parse."""


class VerifyError(SolirError):
    """IR that breaks a type rule or structural invariant."""


class PassError(SolirError):
    """A pass whose preconditions do not hold."""


class CompileError(SolirError):
    """LLVM or the system linker rejected generated code."""


class ArgumentError(SolirError, TypeError):
    """A call-time argument with the wrong shape, dtype, layout or count."""


class CacheError(SolirError):
    """A compiled-module cache entry or artifact that is missing, corrupted or mismatched."""


class TargetError(SolirError):
    """An unknown target, or an artifact built for features this CPU lacks."""


class SolirWarning(UserWarning):
    """Something solir recovered from by itself (a bad cache entry it rebuilt)."""
