"""Merge layers: Add (the residual connection)."""
from ..errors import ShapeError
from ..inference_steps import Elementwise
from ..layer import Layer, register

__all__ = ["Add"]


@register
class Add(Layer):
    """Element-wise sum of a list of same-shape tensors: [x1, x2, ...] -> x1 + x2 + ...

    Backward returns the same gradient for every input; the model adds (+) it to whatever
    else flows into each input tensor, which is what makes a residual branch correct.
    """

    def build(self, input_shape):
        if not isinstance(input_shape, list) or not input_shape:
            raise ShapeError(f"Layer {self.name!r} (Add) must be called on a list of tensors. "
                             f"Received: input_shape={input_shape!r}.")
        self.compute_output_shape(input_shape)


    def forward(self, x, training=False):
        total = x[0].copy()
        for term in x[1:]:
            total += term
        self._cache = len(x)
        return total

    def backward(self, dy):
        return [dy] * self._cache

    def to_inference(self, srcs, new_vid):
        return [Elementwise(srcs, new_vid())]

    def inference_epilogue(self):
        return {"residual": True}

    def to_onnx(self, graph, xs, shapes):
        return graph.node("Add" if len(xs) == 2 else "Sum", xs, self.name)

    def compute_output_shape(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        first = shapes[0]
        for shape in shapes[1:]:
            if len(shape) != len(first) or any(a is not None and b is not None and a != b
                                               for a, b in zip(first, shape)):
                raise ShapeError(f"Layer {self.name!r} (Add) needs inputs of one shape. "
                                 f"Received: input_shape={shapes}.")
        return tuple(next((d for d in dims if d is not None), None) for dims in zip(*shapes))
