"""A faster CPU graph of a stored FrameMAE (``flowmix``) ONNX model, same weights (issue 17).

    python -m training.optimize_onnx model_store/framemae/1.0.0

Reads the folder's checksum-verified ``model.onnx`` (as exported by ``training.export``) and
writes ``model_cpu.onnx`` beside it, the same network with three graph rewrites that ONNX
Runtime's own optimizer (``ORT_ENABLE_ALL``, and ``onnxruntime.transformers``' fusions, whose
attention pattern does not match this export) does not make:

- each block's attention (``(q·scale) @ kᵀ → Softmax → @ v`` on a ``[3, heads, hd]`` split of
  the qkv projection) becomes one ``com.microsoft.MultiHeadAttention`` node (Split of q, k, v):
  no [B, heads, N, N] score tensor is written and read back;
- the output softmax over the K candidates is taken on the last axis of the head's output
  ([..., K], K = 3) before the pure permutation (``Einsum``) that lays the tile out, instead of on
  axis 1 of the [B, K, 16, tile, tile] result (onnxruntime transposes for a softmax that is not on
  the last axis: 19 % of the network's time); the constant ``prior_bias`` is folded into the
  head's bias (the same values in the same places);
- the permutation ``Einsum`` becomes the equal ``Transpose``.

The result is checked against the stored model on random tiles (max abs difference of the
mixing weights, recorded in config.json) and on its IO spec; config.json gets a ``cpu_graph``
entry {file, sha256, size_bytes, source_sha256, max_abs_err, command}, which
``framers.runtime.load_model`` verifies before it opens that file for CPU-only sessions. The
stored model (its ``sha256``, the selector's pairing) is unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from framers.hashing import sha256_file
from framers.model_store import CONFIG_FILE, read_config, verified_model_file

CPU_FILE = "model_cpu.onnx"
#: mixing weights of the two graphs may differ by float rounding only
MAX_ABS_ERR = 1e-5


class PatternError(ValueError):
    """The graph does not have the structure a rewrite expects (another exporter or model)."""


class _Graph:
    """Producer / consumer / constant lookups over an ONNX graph (rebuilt after each rewrite)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {t.name: t for t in self.graph.initializer}

    def node(self, name: str, op: str) -> onnx.NodeProto:
        """The node producing tensor ``name``, which must be a ``op``. Raises PatternError."""
        n = self.producer.get(name)
        if n is None or n.op_type != op:
            raise PatternError(f"{name}: expected the output of a {op}, got {n.op_type if n else 'an input'}")
        return n

    def only_consumer(self, name: str, op: str) -> onnx.NodeProto:
        """The single consumer of tensor ``name``, which must be a ``op``. Raises PatternError."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op:
            raise PatternError(f"{name}: expected one {op} consumer, got {[u.op_type for u in users]}")
        return users[0]

    def const(self, name: str) -> np.ndarray:
        """Value of a Constant node's output or an initializer. Raises PatternError."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.node(name, "Constant")
        return numpy_helper.to_array(helper.get_attribute_value(n.attribute[0]))


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def fuse_attention(model: onnx.ModelProto, num_heads: int) -> int:
    """Replace every exported attention core by Split + ``com.microsoft.MultiHeadAttention``
    (in place; the old nodes are left dead for ``prune``). Returns the number of blocks fused.

    Pattern (``training.model.Attention`` under ONNX export): qkv [B, N, 3·D] → Reshape
    [B, N, 3, heads, D/heads] → Transpose (2, 0, 3, 1, 4) → Gather 0/1/2 = q, k, v; q · scale;
    MatMul(q, Transpose(k)) → Softmax(-1) → MatMul(·, v) → Transpose (0, 2, 1, 3) → Reshape
    [B, N, D]. Raises PatternError when a Softmax inside the graph does not fit it."""
    g = _Graph(model)
    replace: dict[str, list[onnx.NodeProto]] = {}
    for sm in [n for n in g.graph.node if n.op_type == "Softmax"]:
        scores = g.producer.get(sm.input[0])
        if scores is None or scores.op_type != "MatMul":
            continue  # not an attention softmax (the output softmax)
        mul = g.node(scores.input[0], "Mul")
        k_t = g.node(scores.input[1], "Transpose")
        if list(_attr(k_t, "perm")) != [0, 1, 3, 2]:
            raise PatternError(f"{k_t.name}: unexpected perm")
        scale = float(g.const(mul.input[1]))
        gathers = [g.node(mul.input[0], "Gather"), g.node(k_t.input[0], "Gather")]
        out_mm = g.only_consumer(sm.output[0], "MatMul")
        gathers.append(g.node(out_mm.input[1], "Gather"))
        if [int(g.const(x.input[1])) for x in gathers] != [0, 1, 2]:
            raise PatternError(f"{sm.name}: q, k, v are not slices 0, 1, 2 of the qkv tensor")
        split_t = g.node(gathers[0].input[0], "Transpose")
        if {x.input[0] for x in gathers} != {split_t.output[0]} or list(_attr(split_t, "perm")) != [2, 0, 3, 1, 4]:
            raise PatternError(f"{sm.name}: q, k, v do not come from one (2, 0, 3, 1, 4) transpose")
        qkv = g.node(split_t.input[0], "Reshape").input[0]
        merge_t = g.only_consumer(out_mm.output[0], "Transpose")
        if list(_attr(merge_t, "perm")) != [0, 2, 1, 3]:
            raise PatternError(f"{merge_t.name}: unexpected perm")
        merged = g.only_consumer(merge_t.output[0], "Reshape")
        width = _qkv_width(g, qkv)
        if width % (3 * num_heads):
            raise PatternError(f"{qkv}: width {width} is not 3 × a multiple of {num_heads} heads")
        tag = sm.name.rsplit("/", 1)[0]
        sizes = numpy_helper.from_array(np.full(3, width // 3, np.int64), f"{tag}/qkv_split_sizes")
        g.graph.initializer.append(sizes)
        q, k, v = (f"{tag}/{c}" for c in "qkv")
        replace[merged.name] = [
            helper.make_node("Split", [qkv, sizes.name], [q, k, v], axis=-1, name=f"{tag}/qkv_split"),
            helper.make_node("MultiHeadAttention", [q, k, v], [merged.output[0]], domain="com.microsoft",
                             num_heads=num_heads, scale=scale, name=f"{tag}/MultiHeadAttention"),
        ]
    _splice(model, replace)
    if replace and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replace)


def _qkv_width(g: _Graph, qkv: str) -> int:
    """Last dimension of the qkv projection (``Add(bias, MatMul(x, W))``): W's column count."""
    add = g.node(qkv, "Add")
    for name in add.input:
        if name in g.producer and g.producer[name].op_type == "MatMul":
            weight = g.const(g.producer[name].input[1])
            return int(weight.shape[-1])
    raise PatternError(f"{qkv}: not Add(bias, MatMul(x, W))")


def softmax_before_layout(model: onnx.ModelProto) -> None:
    """Move the output softmax over the candidates (axis 1 of [B, K, T, H, W]) to the last axis of
    the head's output before the layout permutation, fold the constant bias added before it into
    the head's bias, and make the permutation a Transpose (in place; see the module docstring).

    Pattern: head = Add(bias [P·K], MatMul) → Reshape [B, S, G, G, Tb, p, p, K] → Einsum
    (permutation) → Reshape [B, K, T, H, W] → Add(const [1, K, 1, 1, 1]) → Softmax(axis=1) →
    graph output. Raises PatternError otherwise."""
    g = _Graph(model)
    out = g.graph.output[0].name
    sm = g.node(out, "Softmax")
    if _attr(sm, "axis") != 1:
        raise PatternError(f"{sm.name}: the output softmax is not on axis 1")
    add = g.node(sm.input[0], "Add")
    bias_name = next((i for i in add.input if i not in g.producer or g.producer[i].op_type == "Constant"), None)
    if bias_name is None:
        raise PatternError(f"{add.name}: no constant operand")
    prior = g.const(bias_name)
    layout = g.node(next(i for i in add.input if i != bias_name), "Reshape")
    einsum = g.node(layout.input[0], "Einsum")
    split = g.node(einsum.input[0], "Reshape")
    head = g.node(split.input[0], "Add")
    lhs, rhs = _attr(einsum, "equation").decode().replace(" ", "").split("->")
    if sorted(lhs) != sorted(rhs) or len(set(lhs)) != len(lhs):
        raise PatternError(f"{einsum.name}: {lhs}->{rhs} is not a permutation")
    k = prior.size
    if prior.shape != (1, k, 1, 1, 1) or rhs[1] != lhs[-1]:
        raise PatternError(f"{add.name}: the bias is not per candidate, or the candidates are not the last input axis")
    head_bias = next((i for i in head.input if i in g.inits), None)
    if head_bias is None:
        raise PatternError(f"{head.name}: no bias initializer")
    hb = numpy_helper.to_array(g.inits[head_bias])
    if hb.ndim != 1 or hb.size % k:
        raise PatternError(f"{head_bias}: shape {hb.shape} is not [P·{k}]")
    folded = (hb.reshape(-1, k) + prior.reshape(1, k).astype(hb.dtype)).reshape(-1)
    g.inits[head_bias].CopyFrom(numpy_helper.from_array(folded.astype(hb.dtype), head_bias))
    probs = split.output[0] + "/softmax"
    perm = [lhs.index(c) for c in rhs]
    layout.output[0] = out  # the layout Reshape now writes the graph output
    _splice(model, {
        einsum.name: [
            helper.make_node("Softmax", [split.output[0]], [probs], axis=-1, name=f"{sm.name}_last_axis"),
            helper.make_node("Transpose", [probs], list(einsum.output), perm=perm, name=f"{einsum.name}_transpose"),
        ],
        add.name: [],
        sm.name: [],
    })


def _splice(model: onnx.ModelProto, replace: dict[str, list[onnx.NodeProto]]) -> None:
    """Replace nodes (by name) with lists of nodes, keeping the order of everything else.
    Raises PatternError when node names are not unique."""
    names = [n.name for n in model.graph.node]
    if len(set(names)) != len(names):
        raise PatternError("node names are not unique")
    nodes: list[onnx.NodeProto] = []
    for n in model.graph.node:
        nodes.extend(replace.get(n.name, [n]))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def prune(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers the graph outputs do not depend on (in place)."""
    g = model.graph
    live = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    del g.node[:]
    g.node.extend(reversed(keep))
    used = [t for t in g.initializer if t.name in live]
    del g.initializer[:]
    g.initializer.extend(used)


def optimize(model: onnx.ModelProto, num_heads: int) -> onnx.ModelProto:
    """The rewritten copy of a ``flowmix`` FrameMAE graph (see the module docstring); checked by
    ``onnx.checker``. Raises PatternError when the graph is not the one ``training.export`` writes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    fused = fuse_attention(out, num_heads)
    if fused == 0:
        raise PatternError("no attention block found")
    softmax_before_layout(out)
    prune(out)
    onnx.checker.check_model(out)
    return out


def max_abs_err(reference: Path, candidate: Path, input_shape: tuple[int, ...], tiles: int = 6,
                seed: int = 0) -> float:
    """Max |candidate - reference| of the two models' first outputs on random inputs in
    [-0.5, 0.5) of shape (tiles, *input_shape[1:]) (one onnxruntime CPU thread each)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    x = np.random.default_rng(seed).random((tiles, *input_shape[1:]), dtype=np.float32) - 0.5
    outs = []
    for path in (reference, candidate):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    return float(np.abs(outs[0] - outs[1]).max())


def write_cpu_graph(folder: Path, command: str) -> dict[str, Any]:
    """Write ``folder``/model_cpu.onnx from the folder's verified model.onnx and record it as
    ``cpu_graph`` in its config.json; returns that entry. Raises SystemExit when the outputs
    differ by more than ``MAX_ABS_ERR``, PatternError/ModelError as the steps above."""
    config = read_config(folder)
    if config.get("variant") != "flowmix":
        raise SystemExit(f"{folder}: only the flowmix variant has a CPU graph")
    source = verified_model_file(folder, config)
    model = optimize(onnx.load(str(source)), int(config.get("model")["num_heads"]))
    target = folder / CPU_FILE
    onnx.save(model, str(target))
    dims = tuple(d if isinstance(d, int) else 1 for d in config.inputs[0].dims)
    err = max_abs_err(source, target, dims)
    if err > MAX_ABS_ERR:
        target.unlink()
        raise SystemExit(f"{target}: outputs differ from {source} by {err:.2e} > {MAX_ABS_ERR:.0e}")
    entry = {
        "file": CPU_FILE,
        "sha256": sha256_file(target),
        "size_bytes": target.stat().st_size,
        "source_sha256": config.sha256,
        "max_abs_err": err,
        "doc": "the same network for CPU-only onnxruntime sessions: fused MultiHeadAttention, "
               "output softmax on the last axis (training/optimize_onnx.py)",
        "command": command,
    }
    data = json.loads((folder / CONFIG_FILE).read_text())
    data["cpu_graph"] = entry
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a model_store/framemae/<version> folder")
    args = parser.parse_args(argv)
    entry = write_cpu_graph(args.folder, f"python -m training.optimize_onnx {args.folder}")
    size_mb = entry["size_bytes"] / 1e6
    print(f"wrote {args.folder / CPU_FILE} ({size_mb:.2f} MB), max abs err {entry['max_abs_err']:.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])
