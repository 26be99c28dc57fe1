"""Contractions: dot_general (any batch/contracting layout) and conv (lax.conv_general_dilated)."""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.errors import UnsupportedOpError
from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.ops.kernel import build_generic
from solir.ir.ops.matmul import build_matmul, matmul_applies
from solir.ir.registry import CONTRACTION, OpDef, register
from solir.ir.types import DType, TensorType


def _mul_body(out_dtype: DType):  # noqa: ANN202
    def body(inner: Builder, args: list[Value]) -> list[Value]:
        a, c = args
        if a.type.dtype != out_dtype:
            a = inner("tensor.convert", a, dtype=out_dtype)
        if c.type.dtype != out_dtype:
            c = inner("tensor.convert", c, dtype=out_dtype)
        return [inner("tensor.mul", a, c)]
    return body


# ---- dot_general ------------------------------------------------------------------------------

def _dot_dims(attrs: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    return (tuple(attrs["lhs_contract"]), tuple(attrs["rhs_contract"]),
            tuple(attrs.get("lhs_batch") or ()), tuple(attrs.get("rhs_batch") or ()))


def _infer_dot(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    lhs, rhs = types
    lc, rc, lb, rb = _dot_dims(attrs)
    if len(lc) != len(rc) or len(lb) != len(rb):
        raise ValueError("contracting and batch dims must pair up")
    for a, c in zip(lc + lb, rc + rb):
        if lhs.shape[a] != rhs.shape[c]:
            raise ValueError(f"lhs dim {a} (size {lhs.shape[a]}) does not match rhs dim {c} "
                             f"(size {rhs.shape[c]})")
    if lhs.dtype != rhs.dtype and attrs.get("dtype") is None:
        raise ValueError(f"operand dtypes differ ({lhs.dtype}, {rhs.dtype})")
    lfree = [k for k in range(lhs.rank) if k not in lc + lb]
    rfree = [k for k in range(rhs.rank) if k not in rc + rb]
    shape = [lhs.shape[k] for k in lb] + [lhs.shape[k] for k in lfree] + [rhs.shape[k] for k in rfree]
    return [TensorType(tuple(shape), attrs.get("dtype") or lhs.dtype)]


def _ref_dot(attrs: dict[str, Any], lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    lc, rc, lb, rb = _dot_dims(attrs)
    out = attrs.get("dtype")
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ls = [""] * lhs.ndim
    rs = [""] * rhs.ndim
    for a, c in zip(lb, rb):
        ls[a] = rs[c] = next(letters)
    for a, c in zip(lc, rc):
        ls[a] = rs[c] = next(letters)
    for k in range(lhs.ndim):
        ls[k] = ls[k] or next(letters)
    for k in range(rhs.ndim):
        rs[k] = rs[k] or next(letters)
    lfree = [ls[k] for k in range(lhs.ndim) if k not in lc + lb]
    rfree = [rs[k] for k in range(rhs.ndim) if k not in rc + rb]
    spec = f"{''.join(ls)},{''.join(rs)}->{''.join([ls[k] for k in lb] + lfree + rfree)}"
    dt = out.numpy if out is not None else lhs.dtype
    acc = np.float64 if dt.kind == "f" or dt.name == "bfloat16" else dt
    return np.einsum(spec, lhs.astype(acc), rhs.astype(acc)).astype(dt)


def _lower_dot(op: Op, b: Builder) -> list[Value]:
    lhs, rhs = op.operands
    lc, rc, lb, rb = _dot_dims(op.attrs)
    lfree = [k for k in range(lhs.type.rank) if k not in lc + lb]
    rfree = [k for k in range(rhs.type.rank) if k not in rc + rb]
    nb, nl, nr, nc = len(lb), len(lfree), len(rfree), len(lc)
    out = op.results[0].type
    if op.attrs.get("algorithm", "matmul") == "matmul" and matmul_applies(lhs.type, rhs.type, out, nc):
        return [build_matmul(b, lhs, rhs, lb, lfree, lc, rb, rfree, rc, out.shape)]
    n = nb + nl + nr + nc
    ldim, rdim = [0] * lhs.type.rank, [0] * rhs.type.rank
    for i, (a, c) in enumerate(zip(lb, rb)):
        ldim[a], rdim[c] = i, i
    for i, a in enumerate(lfree):
        ldim[a] = nb + i
    for i, c in enumerate(rfree):
        rdim[c] = nb + nl + i
    for i, (a, c) in enumerate(zip(lc, rc)):
        ldim[a], rdim[c] = nb + nl + nr + i, nb + nl + nr + i
    dims = ([lhs.type.shape[k] for k in lb] + [lhs.type.shape[k] for k in lfree]
            + [rhs.type.shape[k] for k in rfree] + [lhs.type.shape[k] for k in lc])
    out_dtype = op.results[0].type.dtype
    return build_generic(b, dims, "p" * (nb + nl + nr) + "r" * nc,
                         [(lhs, AffineMap.select(n, tuple(ldim))), (rhs, AffineMap.select(n, tuple(rdim)))],
                         _mul_body(out_dtype), [out_dtype], combiner="add" if nc else None,
                         name="dot", loc=op.loc)     # no contracting dims: an outer product


register(OpDef(name="tensor.dot_general", operands=("lhs", "rhs"),
               attrs=("lhs_contract", "rhs_contract"),
               optional_attrs={"lhs_batch": (), "rhs_batch": (), "dtype": None,
                               "algorithm": None, "algorithm_why": None},
               infer=_infer_dot, reference=_ref_dot, lower=_lower_dot, kind=CONTRACTION,
               doc="Result dims: batch, then lhs free, then rhs free (lax.dot_general)."))


# ---- conv ---------------------------------------------------------------------------------------

def conv_params(lhs: TensorType, rhs: TensorType, attrs: dict[str, Any]) -> dict[str, Any]:
    lhs_spec, rhs_spec, out_spec = (tuple(attrs[k]) for k in ("lhs_spec", "rhs_spec", "out_spec"))
    ns = lhs.rank - 2
    ones = (1,) * ns
    p = {
        "lhs_spec": lhs_spec, "rhs_spec": rhs_spec, "out_spec": out_spec, "ns": ns,
        "strides": tuple(attrs.get("strides") or ones),
        "padding": tuple(tuple(x) for x in (attrs.get("padding") or ((0, 0),) * ns)),
        "lhs_dilation": tuple(attrs.get("lhs_dilation") or ones),
        "rhs_dilation": tuple(attrs.get("rhs_dilation") or ones),
        "groups": attrs.get("feature_group_count", 1),
        "batch_groups": attrs.get("batch_group_count", 1),
    }
    n, c = lhs.shape[lhs_spec[0]], lhs.shape[lhs_spec[1]]
    o, ci = rhs.shape[rhs_spec[0]], rhs.shape[rhs_spec[1]]
    g = p["groups"]
    if p["batch_groups"] != 1:
        raise UnsupportedOpError("conv with batch_group_count > 1 is not supported yet",
                                 fix="use feature_group_count for grouped convolutions")
    if c != ci * g or o % g:
        raise ValueError(f"input features {c} and kernel features {ci}x{o} do not fit "
                         f"feature_group_count {g}")
    spatial = []
    for k in range(ns):
        size = lhs.shape[lhs_spec[2 + k]]
        win = rhs.shape[rhs_spec[2 + k]]
        lo, hi = p["padding"][k]
        dilated = (size - 1) * p["lhs_dilation"][k] + 1 + lo + hi
        span = (win - 1) * p["rhs_dilation"][k] + 1
        spatial.append(max(0, (dilated - span) // p["strides"][k] + 1) if dilated >= span else 0)
    out_shape = [0] * lhs.rank
    out_shape[out_spec[0]], out_shape[out_spec[1]] = n, o
    for k in range(ns):
        out_shape[out_spec[2 + k]] = spatial[k]
    p.update(n=n, c=c, o=o, ci=ci, og=o // g, out_shape=tuple(out_shape),
             window=tuple(rhs.shape[rhs_spec[2 + k]] for k in range(ns)))
    return p


def _infer_conv(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    lhs, rhs = types
    if lhs.rank != rhs.rank or lhs.rank < 3:
        raise ValueError("lhs and rhs must have the same rank, at least 3")
    p = conv_params(lhs, rhs, attrs)
    return [TensorType(p["out_shape"], attrs.get("dtype") or lhs.dtype)]


def _conv_generic_layout(lhs: TensorType, rhs: TensorType, attrs: dict[str, Any]):  # noqa: ANN202
    """Dims in output memory order with the feature dim split into (group, feature in group),
    then reductions over (input feature in group, window...). Returns dims, iterators, maps."""
    p = conv_params(lhs, rhs, attrs)
    ns, out_spec = p["ns"], p["out_spec"]
    rank = lhs.rank
    # role of each output position: ('n',), ('o',), ('s', k)
    roles: list[Any] = [None] * rank
    roles[out_spec[0]], roles[out_spec[1]] = "n", "o"
    for k in range(ns):
        roles[out_spec[2 + k]] = ("s", k)
    dims: list[int] = []
    where: dict[Any, int] = {}
    for role in roles:
        if role == "o":
            where["g"], where["og"] = len(dims), len(dims) + 1
            dims += [p["groups"], p["og"]]
        else:
            where[role] = len(dims)
            dims.append(p["n"] if role == "n" else p["out_shape"][out_spec[2 + role[1]]])
    n_par = len(dims)
    where["c"] = len(dims)
    dims.append(p["ci"])
    for k in range(ns):
        where[("w", k)] = len(dims)
        dims.append(p["window"][k])
    nd = len(dims)
    lhs_exprs: list[AffineExpr] = [AffineExpr.constant(nd, 0)] * rank
    lhs_exprs[p["lhs_spec"][0]] = AffineExpr.dim(nd, where["n"])
    feat = [0] * nd
    feat[where["g"]], feat[where["c"]] = p["ci"], 1
    lhs_exprs[p["lhs_spec"][1]] = AffineExpr(tuple(feat))
    rhs_exprs: list[AffineExpr] = [AffineExpr.constant(nd, 0)] * rank
    ofeat = [0] * nd
    ofeat[where["g"]], ofeat[where["og"]] = p["og"], 1
    rhs_exprs[p["rhs_spec"][0]] = AffineExpr(tuple(ofeat))
    rhs_exprs[p["rhs_spec"][1]] = AffineExpr.dim(nd, where["c"])
    for k in range(ns):
        coeffs = [0] * nd
        coeffs[where[("s", k)]] = p["strides"][k]
        coeffs[where[("w", k)]] = p["rhs_dilation"][k]
        lhs_exprs[p["lhs_spec"][2 + k]] = AffineExpr(tuple(coeffs), -p["padding"][k][0],
                                                     p["lhs_dilation"][k])
        rhs_exprs[p["rhs_spec"][2 + k]] = AffineExpr.dim(nd, where[("w", k)])
    its = "p" * n_par + "r" * (nd - n_par)
    return dims, its, AffineMap(nd, tuple(lhs_exprs)), AffineMap(nd, tuple(rhs_exprs)), p


WINOGRAD = {"winograd": 4, "winograd2": 2}      # algorithm name -> output tile m


def _lower_conv(op: Op, b: Builder) -> list[Value]:
    lhs, rhs = op.operands
    algorithm = op.attrs.get("algorithm") or "im2col"     # select-algorithms decides
    weights = rhs.owner.attrs["value"] if getattr(rhs.owner, "name", "") == "tensor.constant" \
        else None  # type: ignore[union-attr]
    if algorithm in WINOGRAD:
        from solir.ir.ops.winograd import build_winograd_conv
        return [build_winograd_conv(op, b, WINOGRAD[algorithm], weights)]
    if algorithm == "depthwise":
        from solir.ir.ops.depthwise import build_depthwise_conv
        return [build_depthwise_conv(op, b, weights)]
    if algorithm in ("im2col", "im2col_rows"):
        im2col = _conv_as_matmul(op, b, rows=algorithm == "im2col_rows")
        if im2col is not None:
            return [im2col]
    dims, its, lmap, rmap, p = _conv_generic_layout(lhs.type, rhs.type, op.attrs)
    out = op.results[0].type
    [split] = build_generic(b, dims, its, [(lhs, lmap), (rhs, rmap)], _mul_body(out.dtype),
                            [out.dtype], combiner="add", pads=[0, None], name="conv", loc=op.loc)
    return [b.op("tensor.reshape", [split], {"shape": out.shape},
                 name_hint=op.results[0].name).result]


def conv_im2col_layout(op: Op) -> str | None:
    """Why im2col cannot express this conv's layout (None: it can)."""
    lhs, rhs = op.operands
    p = conv_params(lhs.type, rhs.type, op.attrs)
    rank = lhs.type.rank
    osp, o_pos = p["out_spec"], p["rhs_spec"][0]
    if list(osp[2:]) != sorted(osp[2:]) or osp[0] != 0:
        return f"output layout {list(osp)} puts the batch or spatial dims out of order"
    feature_first = osp[1] == 1 and list(osp[2:]) == list(range(2, rank))
    feature_last = osp[1] == rank - 1 and list(osp[2:]) == list(range(1, rank - 1))
    if not (feature_first or feature_last):
        return f"output features are neither first nor last ({list(osp)})"
    if o_pos not in (0, rank - 1):
        return "the kernel's output-feature dim is in the middle"
    return None


def patches_gathered(p: dict[str, Any]) -> bool:
    """NCHW image, OIHW kernel and output, column stride 1 or 2: kernel.matmul's B packing
    gathers the patches from the image (`patches`), so no patch matrix is written."""
    nchw = [0, 1, 2, 3]
    return (p["ns"] == 2 and list(p["lhs_spec"]) == nchw and list(p["rhs_spec"]) == nchw
            and list(p["out_spec"]) == nchw and p["lhs_dilation"] == (1, 1)
            and p["strides"][1] in (1, 2))


def _conv_as_matmul(op: Op, b: Builder, rows: bool = False) -> Value | None:
    """im2col + the matmul microkernel, for ungrouped float convs whose output keeps its
    feature dim first (NCHW: C[n] = W[O,R] x P[n]^T) or last (NHWC: C[N*S, O] = P x W[R,O]).
    P[n, s..., r...] holds each output position's receptive field (zero outside the input),
    r in the kernel's memory order so W needs no copy; a 1x1 stride-1 conv uses its input as
    P directly. With `rows` an NCHW conv is computed the other way round, C^T = P W^T with
    the output positions as the product's rows (a 7x7 image is 49 rows, padded to 54 by a
    6-row register tile where it would be 64 as columns), then transposed back.
    Returns None when the conv does not fit (grouped, ints, odd layouts)."""
    lhs, rhs = op.operands
    out = op.results[0].type
    p = conv_params(lhs.type, rhs.type, op.attrs)
    ns, rank = p["ns"], lhs.type.rank
    if p["groups"] != 1 or out.dtype not in (DType.F32, DType.F64) or \
            not lhs.type.dtype == rhs.type.dtype == out.dtype or out.size == 0:
        return None
    lsp, rsp, osp = p["lhs_spec"], p["rhs_spec"], p["out_spec"]
    if list(osp[2:]) != sorted(osp[2:]) or osp[0] != 0:
        return None
    feature_first = osp[1] == 1 and list(osp[2:]) == list(range(2, rank))
    feature_last = osp[1] == rank - 1 and list(osp[2:]) == list(range(1, rank - 1))
    o_pos = rsp[0]
    if not (feature_first or feature_last) or o_pos not in (0, rank - 1):
        return None
    r_dims = [d for d in range(rank) if d != o_pos]          # rhs memory order of (c, window)
    n, o = p["n"], p["o"]
    S = int(np.prod(p["out_shape"][2:] if feature_first else p["out_shape"][1:-1], dtype=np.int64))
    R = int(np.prod([rhs.type.shape[d] for d in r_dims], dtype=np.int64))
    spatial_out = [p["out_shape"][osp[2 + k]] for k in range(ns)]
    pointwise = (all(w == 1 for w in p["window"]) and all(s == 1 for s in p["strides"])
                 and all(pp == (0, 0) for pp in p["padding"]) and all(d == 1 for d in p["lhs_dilation"]))
    rows = rows and feature_first and o_pos == 0          # C^T = P W^T (NCHW, OIHW)
    patches = None                                       # (written below unless read as is)
    if not rows and pointwise and list(lsp) == list(osp):
        patches, p_trans = lhs, not feature_first    # NCHW input is already [n, R=C, S]
    elif not rows and patches_gathered(p):
        # NCHW image, OIHW kernel: the microkernel's B packing gathers the patches itself
        geometry = (*p["window"], *p["strides"], p["padding"][0][0], p["padding"][1][0],
                    *p["rhs_dilation"], *spatial_out)
        wv = b("tensor.reshape", rhs, shape=(1, o, R))
        c = b.op("kernel.matmul", [wv, lhs], {"patches": tuple(int(v) for v in geometry)}).result
        return b.op("tensor.reshape", [c], {"shape": out.shape}, name_hint=op.results[0].name).result
    if patches is None:
        # P[n, s..., r...] (NHWC: rows of the product) or P[n, r..., s...] (NCHW: its columns,
        # so packing reads whole rows), r = (c, window) in the kernel's memory order
        r_sizes = [rhs.type.shape[d] for d in r_dims]
        p_trans = not feature_first or rows
        dims = [n] + (spatial_out + r_sizes if p_trans else r_sizes + spatial_out)
        s_at = 1 if p_trans else 1 + len(r_dims)     # generic dim of the first spatial
        r_at = 1 + ns if p_trans else 1
        nd = len(dims)
        role = {d: r_at + j for j, d in enumerate(r_dims)}   # rhs dim -> generic dim
        exprs: list[AffineExpr] = [AffineExpr.constant(nd, 0)] * rank
        exprs[lsp[0]] = AffineExpr.dim(nd, 0)
        exprs[lsp[1]] = AffineExpr.dim(nd, role[rsp[1]])
        for k in range(ns):
            coeffs = [0] * nd
            coeffs[s_at + k] = p["strides"][k]
            coeffs[role[rsp[2 + k]]] = p["rhs_dilation"][k]
            exprs[lsp[2 + k]] = AffineExpr(tuple(coeffs), -p["padding"][k][0], p["lhs_dilation"][k])
        [patches] = build_generic(b, dims, "p" * nd, [(lhs, AffineMap(nd, tuple(exprs)))],
                                  lambda inner, args: [args[0]], [lhs.type.dtype], pads=[0],
                                  name="im2col", loc=op.loc)
    if rows:
        pv = b("tensor.reshape", patches, shape=(1, n * S, R))
        wv = b("tensor.reshape", rhs, shape=(1, o, R))
        ct = b.op("kernel.matmul", [pv, wv], {"trans_b": True}).result      # [1, n*S, o]
        sel = AffineMap(3, (AffineExpr.constant(3, 0), AffineExpr((S, 0, 1)),
                            AffineExpr.dim(3, 1)))
        [c] = build_generic(b, [n, o, S], "ppp", [(ct, sel)], lambda inner, args: [args[0]],
                            [out.dtype], name="transpose", loc=op.loc)
    elif feature_first:
        pv = b("tensor.reshape", patches, shape=(n, R, S) if not p_trans else (n, S, R))
        wv = b("tensor.reshape", rhs, shape=(1, o, R) if o_pos == 0 else (1, R, o))
        c = b.op("kernel.matmul", [wv, pv], {"trans_a": o_pos != 0, "trans_b": p_trans}).result
    else:
        if not p_trans:
            return None
        pv = b("tensor.reshape", patches, shape=(1, n * S, R))
        wv = b("tensor.reshape", rhs, shape=(1, R, o) if o_pos != 0 else (1, o, R))
        c = b.op("kernel.matmul", [pv, wv], {"trans_b": o_pos == 0}).result
    return b.op("tensor.reshape", [c], {"shape": out.shape}, name_hint=op.results[0].name).result


def _ref_conv(attrs: dict[str, Any], lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    from solir.ir.ops.kernel import gather_affine
    lt, rt = (TensorType(a.shape, DType.from_numpy(a.dtype)) for a in (lhs, rhs))
    dims, its, lmap, rmap, p = _conv_generic_layout(lt, rt, attrs)
    out_dtype = (attrs.get("dtype") or lt.dtype).numpy
    n_par = its.count("p")
    grids = list(np.indices(dims, sparse=True))
    lv = gather_affine(lhs.astype(np.float64), lmap, grids, 0)
    rv = gather_affine(rhs.astype(np.float64), rmap, grids, None)
    prod = np.broadcast_to(lv * rv, dims)
    out = prod.sum(axis=tuple(range(n_par, len(dims))))
    return out.reshape(p["out_shape"]).astype(out_dtype)


register(OpDef(name="tensor.conv", operands=("lhs", "rhs"),
               attrs=("lhs_spec", "rhs_spec", "out_spec"),
               optional_attrs={"strides": None, "padding": None, "lhs_dilation": None,
                               "rhs_dilation": None, "feature_group_count": 1,
                               "batch_group_count": 1, "dtype": None, "algorithm": None,
                               "algorithm_why": None},
               infer=_infer_conv, reference=_ref_conv, lower=_lower_conv, kind=CONTRACTION,
               doc="lax.conv_general_dilated. Specs give (batch, feature, spatial...) positions "
                   "of lhs and out and (out feature, in feature, spatial...) of rhs."))
