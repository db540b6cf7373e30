"""Export ``framemae_compose``: FrameMAE ``flowmix``'s full-resolution composition as an ONNX graph
(issue 17), so a GPU worker does the per-pixel work on the GPU instead of numpy/OpenCV.

The graph has no weights; it is written with ``onnx.helper`` (no torch needed, byte-for-byte
reproducible) and mirrors ``framers.motion`` step by step, for N frames of one window at once:

1. flows of the kept pairs, at the flow scale, bilinearly resized to the frame size (half-pixel
   centres, clamped at the border, as ``cv2.resize``) and multiplied by (W/fw, H/fh), as
   ``WindowFlows._resize_flow``;
2. the kept frames before/after each frame backward-warped along ``t·F(b→a)`` / ``(1-t)·F(a→b)``
   (``GridSample``, bilinear, ``padding_mode=border`` = ``cv2.BORDER_REPLICATE`` for bilinear
   sampling, ``align_corners=1`` so grid ±1 are the centres of the edge pixels); for the
   ``trajectory`` candidate set (``--candidates trajectory``) also b along ``(t-1)·F(b→a)`` and a
   along ``−t·F(a→b)``, each pair averaged with weights (1-t, t);
3. the linear candidate ``a·(1-t) + b·t``;
4. the network's low-resolution weights of candidates 1 and 2 resized like the flows
   (``motion.mix``: ``cv2.resize`` ``INTER_LINEAR``), and ``c0 + w1·(c1-c0) + w2·(c2-c0)``
   (softmax weights sum to one; the order of operations is ``motion.mix``'s);
5. round half to even (``cv2.convertScaleAbs``'s ``cvRound``), clip to [0, 255], uint8, NHWC.

Kept frames and the output are NHWC uint8, the layout frames have in memory everywhere else,
so the host does no transposes (the graph transposes the gathered frames to NCHW for GridSample).

    python -m training.export_compose --version 1.0.0       # → model_store/framemae_compose/1.0.0
    python -m training.export_compose --version 1.1.0 --candidates trajectory
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from framers import motion
from framers.model_store import MODEL_FILE, StoreConfig

ROOT = Path(__file__).resolve().parents[1]
NAME = "framemae_compose"
OPSET = 17  # GridSample needs ≥ 16; 17 is the opset of the other stored models
IR_VERSION = 8  # onnxruntime ≥ 1.14 reads it; newer IR versions would shut out older builds

INPUTS: list[dict[str, Any]] = [
    {"name": "kept", "dtype": "uint8", "dims": ["kept", "height", "width", 3],
     "doc": "the window's kept frames used by the N frames, RGB, NHWC (as decoded)"},
    {"name": "flows", "dtype": "float32", "dims": ["pairs", "flow_height", "flow_width", 4],
     "doc": "per kept pair (a, b): F(b→a).xy, F(a→b).xy of framers.motion.WindowFlows.pair, in pixels of "
            "the flow resolution (motion.flow_scale; any size, resized in the graph)"},
    {"name": "weights", "dtype": "float32", "dims": ["frames", 3, "net_height", "net_width"],
     "doc": "softmax mixing weights of framers.motion.CANDIDATES per frame at the network's resolution"},
    {"name": "before", "dtype": "int64", "dims": ["frames"], "doc": "index into kept of frame i's previous kept frame"},
    {"name": "after", "dtype": "int64", "dims": ["frames"], "doc": "index into kept of frame i's next kept frame"},
    {"name": "pair", "dtype": "int64", "dims": ["frames"], "doc": "index into flows of frame i's kept pair"},
    {"name": "t", "dtype": "float32", "dims": ["frames"], "doc": "position of frame i between its kept frames, (0, 1)"},
]
OUTPUTS: list[dict[str, Any]] = [
    {"name": "frames", "dtype": "uint8", "dims": ["frames", "height", "width", 3],
     "doc": "the composed frames, RGB, NHWC"},
]
_ONNX_TYPES = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT, "int64": TensorProto.INT64}


def _value_info(spec: dict[str, Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(spec["name"], _ONNX_TYPES[spec["dtype"]], spec["dims"])


def _const(name: str, values: list[float] | list[int], dtype: int = TensorProto.INT64,
           dims: list[int] | None = None) -> onnx.NodeProto:
    tensor = helper.make_tensor(name, dtype, dims if dims is not None else [len(values)], values)
    return helper.make_node("Constant", [], [name], value=tensor)


def build_graph(candidate_set: str = "warp") -> onnx.ModelProto:
    """The composition graph (see the module docstring for the steps) of a FrameMAE that mixes
    ``candidate_set`` (``framers.motion.CANDIDATE_SETS``). Raises KeyError for an unknown set."""
    if candidate_set not in motion.CANDIDATE_SETS:
        raise KeyError(f"unknown candidate set {candidate_set!r}")
    n = helper.make_node
    f32 = TensorProto.FLOAT
    nodes = [
        _const("i0", [0]), _const("i1", [1]), _const("i2", [2]), _const("i3", [3]), _const("i4", [4]),
        _const("f0", [0.0], f32, []), _const("f1", [1.0], f32, []), _const("f2", [2.0], f32, []),
        _const("f255", [255.0], f32, []), _const("shape_n111", [-1, 1, 1, 1]),
        # sizes: H, W of the frames; fh, fw of the flows
        n("Shape", ["kept"], ["kept_shape"]),
        n("Slice", ["kept_shape", "i1", "i3"], ["hw"]),  # [H, W] int64
        n("Shape", ["flows"], ["flows_shape"]),
        n("Slice", ["flows_shape", "i1", "i3"], ["fhw"]),
        n("Cast", ["hw"], ["hw_f"], to=f32),
        n("Cast", ["fhw"], ["fhw_f"], to=f32),
        # 1. flows → [P, 4, H, W], times (W/fw, H/fh, W/fw, H/fh)
        n("Transpose", ["flows"], ["flows_nchw"], perm=[0, 3, 1, 2]),
        n("Shape", ["flows_nchw"], ["flows_nchw_shape"]),
        n("Slice", ["flows_nchw_shape", "i0", "i2"], ["p4"]),
        n("Concat", ["p4", "hw"], ["flow_sizes"], axis=0),
        n("Resize", ["flows_nchw", "", "", "flow_sizes"], ["flows_full"], mode="linear",
          coordinate_transformation_mode="half_pixel"),
        n("Div", ["hw_f", "fhw_f"], ["ratio_hw"]),  # [H/fh, W/fw]
        n("Slice", ["ratio_hw", "i1", "i2"], ["ratio_w"]),
        n("Slice", ["ratio_hw", "i0", "i1"], ["ratio_h"]),
        n("Concat", ["ratio_w", "ratio_h", "ratio_w", "ratio_h"], ["ratio4"], axis=0),
        _const("shape_1411", [1, 4, 1, 1]),
        n("Reshape", ["ratio4", "shape_1411"], ["ratio4b"]),
        n("Mul", ["flows_full", "ratio4b"], ["flows_px"]),
        n("Gather", ["flows_px", "pair"], ["flows_n"], axis=0),  # [N, 4, H, W]
        n("Slice", ["flows_n", "i0", "i2", "i1"], ["flow_ba"]),  # [N, 2, H, W]
        n("Slice", ["flows_n", "i2", "i4", "i1"], ["flow_ab"]),
        # 2. sampling positions: pixel grid + t·F(b→a) / + (1-t)·F(a→b), normalised to [-1, 1].
        # Channel-first until GridSample's [N, H, W, 2] grid: onnxruntime's CPU kernels broadcast
        # a per-channel scalar fast and a length-2 last axis ~20x slower.
        n("Slice", ["hw", "i0", "i1"], ["h_1d"]),
        n("Slice", ["hw", "i1", "i2"], ["w_1d"]),
        n("Squeeze", ["h_1d"], ["h0d"]),
        n("Squeeze", ["w_1d"], ["w0d"]),
        n("Cast", ["h0d"], ["h_f"], to=f32),
        n("Cast", ["w0d"], ["w_f"], to=f32),
        n("Range", ["f0", "w_f", "f1"], ["xs"]),
        n("Range", ["f0", "h_f", "f1"], ["ys"]),
        _const("shape_111w", [1, 1, 1, -1]),
        _const("shape_11h1", [1, 1, -1, 1]),
        n("Reshape", ["xs", "shape_111w"], ["xs4"]),
        n("Reshape", ["ys", "shape_11h1"], ["ys4"]),
        n("Concat", ["i1", "i1", "hw"], ["grid_shape"], axis=0),  # [1, 1, H, W]
        n("Expand", ["xs4", "grid_shape"], ["gx"]),
        n("Expand", ["ys4", "grid_shape"], ["gy"]),
        n("Concat", ["gx", "gy"], ["grid"], axis=1),  # [1, 2, H, W] (x, y)
        n("Reshape", ["t", "shape_n111"], ["t4"]),
        n("Sub", ["f1", "t4"], ["one_minus_t4"]),
        n("Mul", ["flow_ba", "t4"], ["move_prev"]),
        n("Add", ["move_prev", "grid"], ["map_prev"]),  # cv2.scaleAdd(flow, t, grid)
        n("Mul", ["flow_ab", "one_minus_t4"], ["move_next"]),
        n("Add", ["move_next", "grid"], ["map_next"]),
        n("Sub", ["hw_f", "f1"], ["hw_m1"]),  # [H-1, W-1]
        n("Div", ["f2", "hw_m1"], ["norm_hw"]),
        n("Slice", ["norm_hw", "i1", "i2"], ["norm_w"]),
        n("Slice", ["norm_hw", "i0", "i1"], ["norm_h"]),
        n("Concat", ["norm_w", "norm_h"], ["norm_xy"], axis=0),  # [2/(W-1), 2/(H-1)]
        _const("shape_1211", [1, 2, 1, 1]),
        n("Reshape", ["norm_xy", "shape_1211"], ["norm_xy4"]),
        n("Mul", ["map_prev", "norm_xy4"], ["grid_prev_s"]),
        n("Sub", ["grid_prev_s", "f1"], ["grid_prev_c"]),
        n("Transpose", ["grid_prev_c"], ["grid_prev"], perm=[0, 2, 3, 1]),  # [N, H, W, 2]
        n("Mul", ["map_next", "norm_xy4"], ["grid_next_s"]),
        n("Sub", ["grid_next_s", "f1"], ["grid_next_c"]),
        n("Transpose", ["grid_next_c"], ["grid_next"], perm=[0, 2, 3, 1]),
        # kept frames of each output frame, NCHW float
        n("Gather", ["kept", "before"], ["a_u8"], axis=0),
        n("Gather", ["kept", "after"], ["b_u8"], axis=0),
        n("Transpose", ["a_u8"], ["a_u8c"], perm=[0, 3, 1, 2]),
        n("Transpose", ["b_u8"], ["b_u8c"], perm=[0, 3, 1, 2]),
        n("Cast", ["a_u8c"], ["a"], to=f32),
        n("Cast", ["b_u8c"], ["b"], to=f32),
        n("GridSample", ["a", "grid_prev"], ["c1" if candidate_set == "warp" else "a_prev"], mode="bilinear",
          padding_mode="border", align_corners=1),
        n("GridSample", ["b", "grid_next"], ["c2" if candidate_set == "warp" else "b_next"], mode="bilinear",
          padding_mode="border", align_corners=1),
    ]
    if candidate_set == "trajectory":
        # 2b. the other end of each trajectory: b at x + (t-1)·F(b→a), a at x − t·F(a→b); then
        # the time-weighted means (cv2.addWeighted(p, 1-t, q, t, 0)), as WindowFlows.interpolate
        nodes += [
            n("Sub", ["t4", "f1"], ["t_minus_1_4"]),
            n("Neg", ["t4"], ["minus_t4"]),
            n("Mul", ["flow_ba", "t_minus_1_4"], ["move_prev_b"]),
            n("Add", ["move_prev_b", "grid"], ["map_prev_b"]),
            n("Mul", ["flow_ab", "minus_t4"], ["move_next_a"]),
            n("Add", ["move_next_a", "grid"], ["map_next_a"]),
            n("Mul", ["map_prev_b", "norm_xy4"], ["grid_prev_b_s"]),
            n("Sub", ["grid_prev_b_s", "f1"], ["grid_prev_b_c"]),
            n("Transpose", ["grid_prev_b_c"], ["grid_prev_b"], perm=[0, 2, 3, 1]),
            n("Mul", ["map_next_a", "norm_xy4"], ["grid_next_a_s"]),
            n("Sub", ["grid_next_a_s", "f1"], ["grid_next_a_c"]),
            n("Transpose", ["grid_next_a_c"], ["grid_next_a"], perm=[0, 2, 3, 1]),
            n("GridSample", ["b", "grid_prev_b"], ["b_prev"], mode="bilinear", padding_mode="border",
              align_corners=1),
            n("GridSample", ["a", "grid_next_a"], ["a_next"], mode="bilinear", padding_mode="border",
              align_corners=1),
            n("Mul", ["a_prev", "one_minus_t4"], ["a_prev_w"]),
            n("Mul", ["b_prev", "t4"], ["b_prev_w"]),
            n("Add", ["a_prev_w", "b_prev_w"], ["c1"]),
            n("Mul", ["a_next", "one_minus_t4"], ["a_next_w"]),
            n("Mul", ["b_next", "t4"], ["b_next_w"]),
            n("Add", ["a_next_w", "b_next_w"], ["c2"]),
        ]
    nodes += [
        # 3. linear candidate (cv2.addWeighted(a, 1-t, b, t, 0))
        n("Mul", ["a", "one_minus_t4"], ["a_w"]),
        n("Mul", ["b", "t4"], ["b_w"]),
        n("Add", ["a_w", "b_w"], ["c0"]),
        # 4. weights of candidates 1, 2 at full resolution, mixed as motion.mix
        n("Shape", ["weights"], ["weights_shape"]),
        n("Slice", ["weights_shape", "i0", "i1"], ["n1"]),
        n("Concat", ["n1", "i2", "hw"], ["weight_sizes"], axis=0),  # [N, 2, H, W]
        n("Slice", ["weights", "i1", "i3", "i1"], ["w12"]),
        n("Resize", ["w12", "", "", "weight_sizes"], ["w12_full"], mode="linear",
          coordinate_transformation_mode="half_pixel"),
        n("Slice", ["w12_full", "i0", "i1", "i1"], ["w1"]),
        n("Slice", ["w12_full", "i1", "i2", "i1"], ["w2"]),
        n("Sub", ["c1", "c0"], ["d1"]),
        n("Mul", ["d1", "w1"], ["m1"]),
        n("Add", ["c0", "m1"], ["mix1"]),
        n("Sub", ["c2", "c0"], ["d2"]),
        n("Mul", ["d2", "w2"], ["m2"]),
        n("Add", ["mix1", "m2"], ["mixed"]),
        # 5. uint8, NHWC
        n("Round", ["mixed"], ["rounded"]),
        n("Clip", ["rounded", "f0", "f255"], ["clipped"]),
        n("Cast", ["clipped"], ["frames_nchw"], to=TensorProto.UINT8),
        n("Transpose", ["frames_nchw"], ["frames"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(nodes, NAME, [_value_info(s) for s in INPUTS], [_value_info(s) for s in OUTPUTS])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="framers training.export_compose")
    model.ir_version = IR_VERSION
    model.doc_string = __doc__.split("\n\n")[0] if __doc__ else ""
    onnx.checker.check_model(model, full_check=True)
    return model


def export(out: Path, version: str, command: str, candidate_set: str = "warp") -> StoreConfig:
    """Write ``out``/model.onnx and config.json (sha256, IO spec, opset, the candidate set, the
    building command)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILE
    onnx.save(build_graph(candidate_set), str(path))
    config = StoreConfig.for_model_file(
        path, name=NAME, version=version, inputs=INPUTS, outputs=OUTPUTS,
        format=f"onnx opset {OPSET} (IR {IR_VERSION}), fp32 arithmetic, uint8 frames, no weights, dynamic sizes",
        opset=OPSET,
        candidates=list(motion.CANDIDATE_SETS[candidate_set]),
        command=command,
        mirrors=("framers.motion: WindowFlows._resize_flow, WindowFlows.candidates (cv2.remap INTER_LINEAR, "
                 "BORDER_REPLICATE), _linear_small (cv2.addWeighted), mix (cv2.resize INTER_LINEAR); "
                 "framemae.compose's cv2.convertScaleAbs"),
        runtime="framers.reconstructors.compose_onnx (FRAMERS_COMPOSE=auto|numpy|onnx)",
        parity=("tests/test_compose_onnx.py: ONNX (CPU EP) vs numpy path; cv2.remap quantises sampling "
                "positions to 1/32 px, GridSample does not, hence small differences at sharp edges"),
    )
    config.write(out)
    return config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--out-dir", type=Path, default=None, help="write here instead of the store")
    parser.add_argument("--candidates", choices=sorted(motion.CANDIDATE_SETS), default="warp",
                        help="the candidate set of the FrameMAE the graph composes for")
    args = parser.parse_args(argv)
    out = args.out_dir or args.store / NAME / args.version
    command = f"python -m training.export_compose --version {args.version} --candidates {args.candidates}"
    config = export(out, args.version, command, args.candidates)
    print(f"wrote {out / MODEL_FILE} sha256 {config.sha256}", file=sys.stderr)


if __name__ == "__main__":
    main()
