"""solir as an ONNX backend: the standard `onnx.backend.base.Backend` API.

    rep = solir.onnx.prepare(model)          # a path, bytes or onnx.ModelProto
    outputs = rep.run([x])                   # numpy in, numpy out, in graph output order

Models are compiled for static shapes. A graph input with symbolic dims is compiled for the
shapes of the inputs it is first run with (and again for each new shape); a graph input whose
*value* decides a shape (Reshape's target, Slice's starts, a Reduce's axes...) is folded in
as a constant, and the model is compiled once per distinct value of it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from solir.errors import ArgumentError, UnsupportedOpError
from solir.frontends.onnx import from_onnx, load_model
from solir.frontends.onnx_graph import NeedsConstant
from solir.lower.pipeline import Options
from solir.targets import Target, get_target


class SolirRep(BackendRep):
    """A prepared model: compiled on first run for the input shapes (and shape-deciding
    input values) it sees, then reused."""

    def __init__(self, model: onnx.ModelProto, where: str, target: Target, options: Options,
                 num_threads: int | None = None):
        self.model, self.where = model, where
        self.target, self.options, self.num_threads = target, options, num_threads
        inits = {i.name for i in model.graph.initializer}
        self.input_names = [vi.name for vi in model.graph.input if vi.name not in inits]
        self.output_names = [vi.name for vi in model.graph.output]
        self.folded: set[str] = set()        # inputs found to decide shapes
        # inputs solir cannot take (sequences, maps, optionals), refused at run time
        self.non_tensor = [(vi.name, (vi.type.WhichOneof("value") or "untyped").removesuffix("_type"))
                           for vi in model.graph.input
                           if vi.name in self.input_names and not vi.type.HasField("tensor_type")]
        self._compiled: dict[Any, Any] = {}

    def _key(self, arrays: list[np.ndarray]) -> Any:
        parts = []
        for name, a in zip(self.input_names, arrays):
            parts.append((name, a.shape, a.dtype.str, a.tobytes() if name in self.folded else None))
        return tuple(parts)

    def _compile(self, arrays: list[np.ndarray]) -> Any:
        from solir.driver import compile_module
        shapes = {n: a.shape for n, a in zip(self.input_names, arrays)}
        values = dict(zip(self.input_names, arrays))
        while True:
            try:
                module = from_onnx(self.model, input_shapes=shapes,
                                   constant_inputs={n: values[n] for n in self.folded})
                break
            except NeedsConstant as e:
                if e.input_name in self.folded:
                    raise
                self.folded.add(e.input_name)
        return compile_module(module, self.target, self.options, self.num_threads)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        arrays = self._arrays(inputs)
        compiled = self._compiled_for(arrays)
        args = [a for n, a in zip(self.input_names, arrays) if n not in self.folded]
        return tuple(compiled(*args))

    def compile(self, inputs: Any) -> None:
        """Compile for these inputs' shapes (or load the compiled model from the cache)
        without running it: what `run` does first for shapes it has not seen."""
        self._compiled_for(self._arrays(inputs))

    def _arrays(self, inputs: Any) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            missing = [n for n in self.input_names if n not in inputs]
            if missing:
                raise ArgumentError(f"missing inputs {missing} for {self.where}",
                                    fix=f"the model takes {self.input_names}")
            inputs = [inputs[n] for n in self.input_names]
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if len(inputs) != len(self.input_names):
            raise ArgumentError(f"{self.where} takes {len(self.input_names)} inputs "
                                f"({', '.join(self.input_names)}), got {len(inputs)}")
        for name, kind in self.non_tensor:
            raise UnsupportedOpError(f"graph input '{name}' of {self.where} is a {kind}, not a "
                                     "tensor (sequences, maps and optionals are not supported)")
        return [np.asarray(x) for x in inputs]

    def _compiled_for(self, arrays: list[np.ndarray]) -> Any:
        key = self._key(arrays)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile(arrays)
            key = self._key(arrays)          # compiling may have found shape-deciding inputs
            self._compiled[key] = compiled
        return compiled


class SolirBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", target: str | Target = "host",
                options: Options | None = None, num_threads: int | None = None,
                **kwargs: Any) -> SolirRep:
        if not cls.supports_device(device):
            raise ArgumentError(f"solir runs on the CPU, not on {device}")
        proto, where = load_model(model)
        return SolirRep(proto, where, get_target(target), options or Options(), num_threads)

    @classmethod
    def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[Any, Any]] | None = None, **kwargs: Any) -> tuple:
        """Run one node on numpy inputs (a one-node model is built around it)."""
        import onnx.helper as oh
        arrays = [np.asarray(x) for x in inputs]
        ins = [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in zip(node.input, arrays)]
        outs = [oh.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
        graph = oh.make_graph([node], "run_node", ins, outs)
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", kwargs.pop("opset", 21))])
        return cls.run_model(model, arrays, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = SolirBackend.prepare
run_model = SolirBackend.run_model
run_node = SolirBackend.run_node
supports_device = SolirBackend.supports_device
