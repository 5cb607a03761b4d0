"""Small self-made ONNX graphs for the quantizer tests: a residual MLP block with an attention-like
activation x activation MatMul, and an embedding lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN = 64
VOCAB = 256


def mlp_block(path: Path, seed: int = 0) -> Path:
    """x [b, s, 64] -> MatMul W1 -> Add -> Relu -> MatMul W2 -> Add x -> y0; scores = y0 @ y0^T: y [b, s, s]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.1, (HIDDEN, 4 * HIDDEN)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4 * HIDDEN, HIDDEN)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4 * HIDDEN,)).astype(np.float32), "b1"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="up"),
        helper.make_node("Add", ["h1", "b1"], ["h2"], name="bias"),
        helper.make_node("Relu", ["h2"], ["h3"], name="act"),
        helper.make_node("MatMul", ["h3", "W2"], ["h4"], name="down"),
        helper.make_node("Add", ["h4", "x"], ["y0"], name="residual"),
        helper.make_node("Transpose", ["y0"], ["y0t"], perm=[0, 2, 1], name="transpose"),
        helper.make_node("MatMul", ["y0", "y0t"], ["y"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", "seq"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def embedding(path: Path, seed: int = 0) -> Path:
    """input_ids [b, s] -> Gather over a [256, 64] table -> inputs_embeds [b, s, 64]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(seed).normal(0, 1, (VOCAB, HIDDEN)).astype(np.float32), "E")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "input_ids"], ["inputs_embeds"], name="lookup")],
        "embed_tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]
