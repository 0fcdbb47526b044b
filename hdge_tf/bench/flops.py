"""How much arithmetic a training step is, and how fast this host multiplies.

`forward_multiply_adds` counts the multiply-adds of one forward pass per example
from the model's Conv and Dense layers (an output position of a conv costs
kh * kw * (cin / groups) * cout, a Dense row in * out), walking into nested models,
e.g. `HDGEClassifier` -> its functional backbone. Elementwise layers (activations,
normalization, padding, pooling, adds) are neglected: at WRN sizes they are well
under 1% of the multiply-adds. It also counts the layers that read the input,
i.e. have no trainable weight upstream (the WRN's stem conv): backprop into the
weights never needs their input gradient.

A training pass (forward, weight gradients, input gradients) costs F + F + (F - I)
multiply-adds for F of the forward pass and I of the input-reading layers, one
SGLD step F + F (forward, input gradient of every layer, no weight gradients); a
multiply-add is 2 FLOPs. `step_flops` adds these up per benchmark mode
(config.MODES) as `HDGEClassifier.train_step` runs them. `matmul_gflops` is the
yardstick the step's rate is read against: what a plain square matmul reaches here.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from hdge_tf.bench.timing import timed

# Layers whose multiply-adds are counted; a kernel of shape (*window, cin/groups,
# cout) for the convs, (in, out) for Dense.
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_COUNTED = (*_CONVS, keras.layers.Dense)
MATMUL_SIZE = 2048  # big enough for the library's best kernel, ~0.3 s per call here


@dataclasses.dataclass(frozen=True)
class ForwardCost:
    """Multiply-adds of one forward pass of one example.

    Attributes:
      multiply_adds: of every Conv and Dense layer.
      input_multiply_adds: of those with no trainable weight upstream, whose input
        gradient a training pass never computes.
    """

    multiply_adds: int
    input_multiply_adds: int

    @property
    def training_pass(self) -> int:
        """Forward + weight gradients + input gradients, multiply-adds."""
        return 3 * self.multiply_adds - self.input_multiply_adds

    @property
    def sgld_step(self) -> int:
        """Forward + input gradients of every layer, multiply-adds."""
        return 2 * self.multiply_adds


def forward_multiply_adds(model: keras.Layer) -> ForwardCost:
    """Per-example multiply-adds of `model`'s forward pass (see the module
    docstring), from the shapes its layers were built with."""
    if not model.built:
        raise ValueError(
            f"{model.name} is not built: its layers have no shapes to count "
            "multiply-adds from. Call it on a batch or build(input_shape) first."
        )
    return ForwardCost(*_count(model, reads_input=True))


def _graph(layer: keras.Layer):
    """The functional graph of `layer`, or None (a subclassed model or a layer)."""
    if isinstance(layer, keras.Sequential):
        return layer._functional  # Keras builds one once the input shape is known
    return layer if hasattr(layer, "_nodes_by_depth") else None


def _count(layer, reads_input: bool) -> tuple[int, int]:
    """(multiply-adds, those of input-reading layers) of one call of `layer`;
    `reads_input`: no trainable weight lies between the model's input and
    `layer`'s input."""
    graph = _graph(layer)
    if graph is not None:
        return _count_graph(graph, reads_input)
    if isinstance(layer, _COUNTED):
        shapes = getattr(layer, "_build_shapes_dict", None) or {}
        input_shape = next(iter(shapes.values()), None)
        if not layer.built or input_shape is None:
            raise ValueError(
                f"Layer {layer.name} is not built: call the model on a batch first."
            )
        macs = _layer_multiply_adds(
            layer, input_shape, layer.compute_output_shape(input_shape)
        )
        return macs, macs if reads_input else 0
    return _count_children(layer, reads_input)


def _count_graph(graph, reads_input: bool) -> tuple[int, int]:
    """Walks a functional graph from its inputs (Keras's own node order), noting
    which tensors no trainable weight has touched yet."""
    untouched = {id(t) for t in graph.inputs} if reads_input else set()
    total = from_input = 0
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.is_input or node.operation is None:
                continue
            layer = node.operation
            node_reads_input = all(id(t) in untouched for t in node.input_tensors)
            if isinstance(layer, _COUNTED):
                macs = _layer_multiply_adds(
                    layer, node.input_tensors[0].shape, node.output_tensors[0].shape
                )
                parts = (macs, macs if node_reads_input else 0)
            elif isinstance(layer, keras.Layer):
                parts = _count(layer, node_reads_input)
            else:  # a keras.ops call in the graph: elementwise, no weights
                parts = (0, 0)
            total, from_input = total + parts[0], from_input + parts[1]
            if node_reads_input and not getattr(layer, "trainable_weights", ()):
                untouched.update(id(t) for t in node.output_tensors)
    return total, from_input


def _count_children(layer: keras.Layer, reads_input: bool) -> tuple[int, int]:
    """A subclassed model or layer: its sub-layers, each called once. Its call
    order is unknown, so only a lone counted child (a wrapper such as
    `HDGEClassifier` around its backbone) is taken to read the input; with
    several, none is, which errs towards more FLOPs."""
    children = layer._flatten_layers(include_self=False, recursive=False)
    counts = [_count(child, reads_input=False) for child in children]
    counted = [i for i, (macs, _) in enumerate(counts) if macs]
    if reads_input and len(counted) == 1:
        counts[counted[0]] = _count(children[counted[0]], reads_input=True)
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _layer_multiply_adds(layer, input_shape, output_shape) -> int:
    """A conv: output positions x kernel size; Dense: input rows x kernel size."""
    positions = output_shape[1:-1] if isinstance(layer, _CONVS) else input_shape[1:-1]
    if any(d is None for d in positions):
        raise ValueError(
            f"Layer {layer.name} has an unknown spatial size {tuple(positions)}: "
            "build the model with a fixed input shape to count its multiply-adds."
        )
    return math.prod(positions) * math.prod(layer.kernel.shape)


def training_pass_flops(cost: ForwardCost, batch_size: int) -> float:
    """FLOPs of forward + backward (weight and input gradients) on a batch."""
    return 2.0 * batch_size * cost.training_pass


def sgld_chain_flops(cost: ForwardCost, batch_size: int, steps: int) -> float:
    """FLOPs of an SGLD chain of `steps` steps on `batch_size` images."""
    return 2.0 * batch_size * steps * cost.sgld_step


def step_flops(
    cost: ForwardCost, mode: str, batch_size: int, sgld_steps: int = 0
) -> float:
    """FLOPs of one training step of a benchmark mode (config.MODES).

    ce and hdge: one training pass on the batch (hdge's contrastive term against
    the K-slot queue is a logsumexp over batch x K x classes elementwise numbers,
    neglected like the optimizer update). jem adds what
    `HDGEClassifier._forward_backward` runs for log p(x): an SGLD chain of
    `sgld_steps` steps on a batch-sized chain (`JEMTerms.chains`), then a training
    pass on the samples (`JEMTerms.terms` calls the model on them in training mode;
    the samples are constants, so input-reading layers again need no input
    gradient).
    """
    flops = training_pass_flops(cost, batch_size)
    if mode == "jem":
        flops += training_pass_flops(cost, batch_size)
        flops += sgld_chain_flops(cost, batch_size, sgld_steps)
    elif mode not in ("ce", "hdge"):
        raise ValueError(f"Unknown mode {mode!r}; expected ce, hdge or jem.")
    return flops


def matmul_gflops(
    dtype: str = "float32", size: int = MATMUL_SIZE, repeats: int = 5, warmup: int = 1
) -> float:
    """GFLOP/s of a square `size` x `size` matmul in `dtype` (2 size³ FLOPs) in a
    tf.function on TF's default device: the median of `repeats` calls after
    `warmup` calls (the first traces).

    The operands are arguments, not captured constants, which grappler could fold
    at trace time; the call sums the product (size² more additions, negligible)
    so a scalar, not the matrix, is fetched to sync.
    """
    if size < 1 or repeats < 1 or warmup < 1:
        raise ValueError(
            f"matmul_gflops needs size, repeats, warmup >= 1, got {size}, "
            f"{repeats}, {warmup}."
        )
    rng = np.random.default_rng(0)
    a, b = (
        tf.cast(rng.uniform(-1.0, 1.0, (size, size)).astype(np.float32), dtype)
        for _ in range(2)
    )

    @tf.function
    def product_sum(x, y):
        return tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32))

    _, median = timed(lambda: product_sum(a, b).numpy(), warmup, repeats)
    return 2.0 * size**3 / median / 1e9
