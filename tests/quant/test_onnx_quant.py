"""Per-file quantizers on small self-made graphs: the expected ops appear, outputs stay close to fp32.

Tolerances are relative to the largest fp32 output: int8 1%, int4 (block 32) 5%, fp16 0.1%; measured here they are
about 0.3%, 2% and 0.01%.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from covspec.quant import onnx_quant  # noqa: E402
from covspec.quant.calibration import feed_reader  # noqa: E402
from tests.quant import graphs  # noqa: E402


@pytest.fixture
def mlp(tmp_path):
    return graphs.mlp_block(tmp_path / "mlp.onnx")


@pytest.fixture
def emb(tmp_path):
    return graphs.embedding(tmp_path / "embed_tokens.onnx")


def _x(seed: int = 1, batch: int = 2, seq: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, seq, graphs.HIDDEN)).astype(np.float32)


def _rel_err(path, ref_path, feeds) -> float:
    ref = graphs.run(ref_path, feeds)
    return float(np.abs(graphs.run(path, feeds) - ref).max() / np.abs(ref).max())


def test_constant_weight_nodes_skip_activation_matmuls(mlp):
    import onnx

    assert onnx_quant.constant_weight_nodes(onnx.load(str(mlp))) == ["up", "down"]


def test_int8_dynamic_uses_matmulinteger(mlp, tmp_path):
    out = onnx_quant.quantize_int8_dynamic(mlp, tmp_path / "mlp_int8.onnx")
    ops = onnx_quant.op_counts(out)
    assert ops["MatMulInteger"] == 2 and ops["DynamicQuantizeLinear"] >= 1
    assert ops["MatMul"] == 1  # the activation x activation product stays float
    assert _rel_err(out, mlp, {"x": _x()}) < 0.01
    assert onnx_quant.graph_bytes(out) < 0.4 * onnx_quant.graph_bytes(mlp)


def test_int8_dynamic_embeddings(emb, tmp_path):
    out = onnx_quant.quantize_int8_dynamic(emb, tmp_path / "embed_tokens_int8.onnx", op_types=("Gather",))
    ops = onnx_quant.op_counts(out)
    assert ops["DequantizeLinear"] == 1 and ops["Gather"] == 1
    ids = {"input_ids": np.array([[0, 7, 255]], np.int64)}
    assert _rel_err(out, emb, ids) < 0.01


def test_int4_matmulnbits_block32_symmetric(mlp, tmp_path):
    import onnx

    out = onnx_quant.quantize_int4(mlp, tmp_path / "mlp_q4.onnx", block_size=32)
    model = onnx.load(str(out))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2
    for node in nbits:
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs["bits"] == 4 and attrs["block_size"] == 32
        assert len(node.input) == 3  # A, B, scales: symmetric, so no zero points
    assert _rel_err(out, mlp, {"x": _x()}) < 0.05
    assert onnx_quant.graph_bytes(out) < 0.25 * onnx_quant.graph_bytes(mlp)


def test_int4_embeddings_gatherblockquantized(emb, tmp_path):
    out = onnx_quant.quantize_int4(emb, tmp_path / "embed_tokens_q4.onnx", embeddings=True)
    ops = onnx_quant.op_counts(out)
    assert ops["GatherBlockQuantized"] == 1 and ops["Gather"] == 0
    ids = {"input_ids": np.array([[0, 7, 255]], np.int64)}
    assert _rel_err(out, emb, ids) < 0.15  # N(0, 1) table, 4 bits: about 1/16 of the block's range


def test_fp16_weights_fp32_io(mlp, tmp_path):
    import onnx
    from onnx import TensorProto

    out = onnx_quant.convert_fp16(mlp, tmp_path / "mlp_fp16.onnx")
    model = onnx.load(str(out))
    assert {i.type.tensor_type.elem_type for i in model.graph.input} == {TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {TensorProto.FLOAT}
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert _rel_err(out, mlp, {"x": _x()}) < 1e-3


def test_int8_qdq_static(mlp, tmp_path):
    import onnx

    feeds = [{"x": _x(seed, batch=1, seq=seq)} for seed, seq in ((2, 1), (3, 7), (4, 3))]
    out = onnx_quant.quantize_int8_qdq(mlp, tmp_path / "mlp_int8_qdq.onnx", feed_reader(feeds))
    model = onnx.load(str(out))
    ops = onnx_quant.op_counts(out)
    assert ops["QuantizeLinear"] >= 2 and ops["DequantizeLinear"] >= 4  # activations Q/DQ, weights DQ
    assert ops["MatMul"] == 3  # QDQ keeps float ops between the pairs
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zero_points and all(not np.any(onnx.numpy_helper.to_array(z)) for z in zero_points)  # symmetric
    weight_scales = [
        inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in weight_scales)  # per-channel weights
    assert _rel_err(out, mlp, {"x": _x(3, batch=1, seq=7)}) < 0.02


def test_feed_reader_rewinds_and_refuses_empty():
    reader = feed_reader([{"x": np.zeros(1)}, {"x": np.ones(1)}])
    assert reader.get_next() is not None and reader.get_next() is not None and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["x"][0] == 0
    with pytest.raises(ValueError):
        feed_reader([])
