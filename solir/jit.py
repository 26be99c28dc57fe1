"""solir.jit: a drop-in for jax.jit on the CPU. Arrays in, numpy arrays out (in the function's
own pytree structure), compiled once per shape/dtype signature, and the JAX ahead-of-time API:
`f.lower(*args)` -> Lowered with `.as_text(stage)` and `.compile()`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence

import numpy as np

from solir.driver import Compilation, compile_cached
from solir.errors import ArgumentError, SolirError
from solir.lower.pipeline import Options
from solir.runtime.load import CompiledModule
from solir.targets import Target, get_target


class Compiled:
    """A compiled function: call it with the same kinds of arguments as the original."""

    def __init__(self, module: CompiledModule, in_tree: Any, out_tree: Any,
                 leaf_dtypes: Sequence[np.dtype], static: tuple[tuple[int, ...], tuple[str, ...]]):
        self.module = module
        self.in_tree, self.out_tree = in_tree, out_tree
        self.leaf_dtypes = list(leaf_dtypes)
        self.static_argnums, self.static_argnames = static
        import jax
        n = len(self.leaf_dtypes)
        # positional arrays only, no static arguments: __call__ skips the pytree machinery
        # when every argument is an ndarray of the compiled dtype (shapes: the module checks)
        self._flat = (not any(static) and
                      in_tree == jax.tree_util.tree_structure((tuple(range(n)), {})))
        self._one_out = out_tree == jax.tree_util.tree_structure(0)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._flat and not kwargs and len(args) == len(self.leaf_dtypes):
            for a, dt in zip(args, self.leaf_dtypes):
                if type(a) is not np.ndarray or a.dtype != dt:
                    break
            else:
                outs = self.module(*args)
                return outs[0] if self._one_out else _unflatten(self.out_tree, outs)
        import jax
        dyn_args, dyn_kwargs = _split_static(args, kwargs, self.static_argnums, self.static_argnames)
        leaves, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        if tree != self.in_tree:
            raise ArgumentError(f"arguments have structure {tree}, compiled for {self.in_tree}")
        for k, (x, dt) in enumerate(zip(leaves, self.leaf_dtypes)):
            have = getattr(x, "dtype", None)
            if have is not None and np.dtype(have) != dt:   # python scalars convert, arrays don't
                raise ArgumentError(f"argument leaf {k} has dtype {np.dtype(have).name}, compiled "
                                    f"for {dt.name}", fix=f"convert it with .astype(np.{dt.name}), "
                                    "or call the jitted function, which compiles per dtype")
        return self.call_leaves(leaves)

    def call_leaves(self, leaves: list[Any]) -> Any:
        arrays = [_as_array(x, dt) for x, dt in zip(leaves, self.leaf_dtypes)]
        return _unflatten(self.out_tree, self.module(*arrays))

    def as_text(self) -> str:
        return repr(self.module)


class Lowered:
    def __init__(self, comp: Compilation, in_tree: Any, out_tree: Any,
                 leaf_dtypes: list[np.dtype], jaxpr: Any, static: tuple, num_threads: int | None):
        self.compilation = comp
        self.in_tree, self.out_tree, self.leaf_dtypes = in_tree, out_tree, leaf_dtypes
        self.jaxpr = jaxpr
        self.static = static
        self.num_threads = num_threads

    def as_text(self, stage: str = "tensor") -> str:
        """IR at any stage: jaxpr, tensor, each pass, loops, llvm, llvm-opt, asm."""
        if stage == "jaxpr":
            return str(self.jaxpr)
        return self.compilation.as_text(stage)

    def compile(self) -> Compiled:
        module = compile_cached(self.compilation, self.num_threads)
        return Compiled(module, self.in_tree, self.out_tree, self.leaf_dtypes, self.static)


class JitFunction:
    def __init__(self, fn: Callable[..., Any], *, static_argnums: int | Sequence[int] = (),
                 static_argnames: str | Sequence[str] = (), target: str | Target = "host",
                 options: Options | None = None, num_threads: int | None = None,
                 algorithms: Any = None, autotune: bool = False):
        """`algorithms` forces per-op choices, e.g. {"conv": "loops", "dot:2": "matmul"}
        (see solir/lower/algorithms.py and `lower(...).as_text("algorithms")`); `autotune`
        times the candidates of the others on this machine at `num_threads` (once per op
        shape, remembered in the cache) instead of trusting the cost model."""
        self.fn = fn
        self.static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
        self.static_argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
        self.target = get_target(target)
        self.options = options or Options()
        if algorithms:
            from solir.lower.algorithms import parse_overrides
            self.options = dataclasses.replace(
                self.options, algorithms=self.options.algorithms + parse_overrides(algorithms))
        if autotune:
            from solir.runtime.load import default_num_threads
            self.options = dataclasses.replace(self.options, autotune=True,
                                               tune_threads=num_threads or default_num_threads())
        self.num_threads = num_threads
        self._cache: dict[Any, Compiled] = {}
        # calls with ndarrays only (no keywords or static arguments): keyed by shapes and
        # dtypes alone, no pytree flattening (the call overhead is most of a small op's time)
        self._arrays_only = not self.static_argnums and not self.static_argnames
        self._by_arrays: dict[Any, Compiled] = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fast = self._arrays_only and not kwargs and all(type(a) is np.ndarray for a in args)
        if fast:
            akey = tuple((a.shape, a.dtype) for a in args)
            compiled = self._by_arrays.get(akey)
            if compiled is not None:
                return compiled(*args)
        import jax
        dyn_args, dyn_kwargs = _split_static(args, kwargs, self.static_argnums, self.static_argnames)
        leaves, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        key = (tree, tuple(_leaf_key(x) for x in leaves),
               _static_key(args, kwargs, self.static_argnums, self.static_argnames))
        compiled = self._cache.get(key)
        if compiled is None:
            compiled = self.lower(*args, **kwargs).compile()
            self._cache[key] = compiled
        if fast:
            self._by_arrays[akey] = compiled
        return compiled.call_leaves(leaves)

    def lower(self, *args: Any, **kwargs: Any) -> Lowered:
        import jax

        from solir.frontends.jaxpr import from_jaxpr
        dyn_args, dyn_kwargs = _split_static(args, kwargs, self.static_argnums, self.static_argnames)
        static_pos = {i: args[i] for i in self.static_argnums if i < len(args)}
        static_kw = {k: kwargs[k] for k in self.static_argnames if k in kwargs}

        def flat_fn(dargs: tuple, dkwargs: dict) -> Any:
            full = list(dargs)
            for i in sorted(static_pos):
                full.insert(i, static_pos[i])
            return self.fn(*full, **dkwargs, **static_kw)

        leaves, in_tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        specs = [jax.ShapeDtypeStruct(np.shape(x), _jax_dtype(x)) for x in leaves]
        spec_tree = jax.tree_util.tree_unflatten(in_tree, specs)
        try:
            closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*spec_tree)
        except SolirError:
            raise
        except Exception as e:  # noqa: BLE001 (tracing errors belong to the user's function)
            raise SolirError(f"jax could not trace {getattr(self.fn, '__name__', 'the function')}: "
                             f"{type(e).__name__}: {e}",
                             fix="check that the function runs under jax.jit") from e
        out_tree = jax.tree_util.tree_structure(out_shape)
        name = getattr(self.fn, "__name__", "main")
        module = from_jaxpr(closed, name, source=_source_of(self.fn))
        names = [f"arg{k}" for k in range(len(module.funcs[0].args))]
        for a, n in zip(module.funcs[0].args, names):
            a.name = n
        leaf_dtypes = [np.dtype(v.aval.dtype) for v in closed.jaxpr.invars]
        comp = Compilation(module, self.target, self.options)
        return Lowered(comp, in_tree, out_tree, leaf_dtypes, closed,
                       (self.static_argnums, self.static_argnames), self.num_threads)


def jit(fn: Callable[..., Any] | None = None, **kw: Any) -> Any:
    """Compile `fn` with solir. Use as @solir.jit or @solir.jit(static_argnums=1, target='avx2')."""
    if fn is None:
        return lambda f: JitFunction(f, **kw)
    return JitFunction(fn, **kw)


def _split_static(args: tuple, kwargs: dict, nums: tuple[int, ...], names: tuple[str, ...]) -> tuple[tuple, dict]:
    dyn_args = tuple(a for i, a in enumerate(args) if i not in nums)
    dyn_kwargs = {k: v for k, v in kwargs.items() if k not in names}
    return dyn_args, dyn_kwargs


def _static_key(args: tuple, kwargs: dict, nums: tuple[int, ...], names: tuple[str, ...]) -> Any:
    key = tuple((i, args[i]) for i in nums if i < len(args)) + tuple(
        (k, kwargs[k]) for k in names if k in kwargs)
    try:
        hash(key)
    except TypeError:
        raise ArgumentError("static arguments must be hashable",
                            fix="pass tuples instead of lists, or make the argument dynamic") from None
    return key


def _leaf_key(x: Any) -> Any:
    if type(x) is np.ndarray:               # the common case, first: no string building
        return (x.shape, x.dtype)
    if isinstance(x, (bool, int, float, complex)):
        return type(x)
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(x)
        return (arr.shape, arr.dtype)
    return (tuple(shape), np.dtype(dtype))


def _jax_dtype(x: Any) -> Any:
    import jax.numpy as jnp
    if isinstance(x, bool):
        return jnp.bool_
    if isinstance(x, int):
        return jnp.int32
    if isinstance(x, float):
        return jnp.float32
    dt = getattr(x, "dtype", None)
    return jnp.dtype(dt) if dt is not None else np.asarray(x).dtype


def _unflatten(tree: Any, leaves: list[Any]) -> Any:
    import jax
    return jax.tree_util.tree_unflatten(tree, leaves)


def _as_array(x: Any, dtype: np.dtype) -> np.ndarray:
    if isinstance(x, np.ndarray) and x.dtype == dtype:
        return x
    return np.asarray(x, dtype=dtype)


def _source_of(fn: Callable[..., Any]) -> str:
    try:
        return f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (TypeError, OSError):
        return ""

