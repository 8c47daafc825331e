"""FLOPs of a traced TensorFlow function (TF's own per-op FLOP registry) and per-op time from the TF profiler trace."""

from __future__ import annotations

import collections
import glob
import json
import re
import tempfile
from collections.abc import Callable
from typing import Any

# op types that run on the matrix units (oneDNN/AMX); the peak we compare against is a matmul peak
MATMUL_TYPES = frozenset({"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv2DBackpropInput",
                          "Conv2DBackpropFilter", "Conv3D", "DepthwiseConv2dNative"})


def _registry_loaded() -> None:
    # the FLOP statistics of most ops (MatMul, Conv2DBackprop*, elementwise) live in this module, which TF
    # only imports for the v1 profiler; import it so ops.get_stats_for_node_def can find them
    from tensorflow.python.profiler.internal import flops_registry  # noqa: F401


def _subgraphs(op: Any) -> list[Any]:
    """Function graphs called by `op` (PartitionedCall, If/While branches), for a recursive count."""
    out = []
    for attr in ("f", "then_branch", "else_branch", "body", "cond"):
        try:
            fn = op.get_attr(attr)
        except (ValueError, TypeError):
            continue
        name = getattr(fn, "name", None)
        if not name:
            continue
        g = op.graph
        while g is not None:
            found = g._get_function(name) if hasattr(g, "_get_function") else None
            if found is not None:
                sub = getattr(found, "graph", None)
                if sub is not None:
                    out.append(sub)
                break
            g = getattr(g, "outer_graph", None)
    return out


def graph_flops(graph: Any) -> dict[str, Any]:
    """FLOPs of one execution of `graph` by op type, from TensorFlow's registered 'flops' statistics.

    Ops whose statistics fail (unknown shapes) are listed in 'uncounted'. While-loop bodies count once.
    """
    from tensorflow.python.framework import ops

    _registry_loaded()
    by_type: dict[str, float] = collections.defaultdict(float)
    by_name: dict[str, float] = {}
    uncounted: dict[str, int] = collections.Counter()
    seen: set[int] = set()

    def walk(g: Any, prefix: str) -> None:
        if id(g) in seen:
            return
        seen.add(id(g))
        for op in g.get_operations():
            for sub in _subgraphs(op):
                walk(sub, prefix + op.name + "/")
            try:
                stat = ops.get_stats_for_node_def(g, op.node_def, "flops")
            except Exception:  # the registry asserts fully defined shapes; such ops are reported, not guessed
                if op.type in MATMUL_TYPES:
                    uncounted[op.type] += 1
                continue
            if stat.value:
                by_type[op.type] += float(stat.value)
                by_name[prefix + op.name] = float(stat.value)

    walk(graph, "")
    total = sum(by_type.values())
    matmul = sum(v for k, v in by_type.items() if k in MATMUL_TYPES)
    return {"total": total, "matmul_conv": matmul, "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "by_name": by_name, "uncounted": dict(uncounted),
            "method": "TensorFlow per-op FLOP registry (tensorflow.python.profiler.internal.flops_registry) over the traced graph"}


def function_flops(fn: Callable[..., Any], *input_signature: Any) -> dict[str, Any]:
    """FLOPs of one call of python callable `fn` traced by tf.function with the given TensorSpecs."""
    import tensorflow as tf

    # no autograph, as Keras traces train_step: the graph is the one fit runs (and no source re-reading)
    cf = tf.function(fn, autograph=False).get_concrete_function(*input_signature)
    return graph_flops(cf.graph)


def canonical_op_type(kernel_type: str) -> str:
    """Map a oneDNN kernel name (e.g. _MklNativeFusedConv2D) to its TF op type (Conv2D)."""
    t = kernel_type
    for token in ("_MklNative", "_Mkl", "_Fused", "Fused"):
        t = t.replace(token, "")
    t = re.sub(r"WithBias$", "", t)
    return t


def trace_op_times(run: Callable[[], Any]) -> dict[str, Any]:
    """Run `run()` under the TF profiler; per-op-type self time (us) and share, from the trace's framework op stats."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="cxr-prof-") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            run()
        finally:
            tf.profiler.experimental.stop()
        files = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        if not files:
            return {"available": False, "reason": "the profiler wrote no trace"}
        try:
            # the same converter TensorBoard's profile plugin uses (TF-internal; labelled if it is missing)
            from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

            raw, ok = plugin.xspace_to_tools_data(files, "framework_op_stats", {})
            tables = json.loads(raw)
        except Exception as e:  # a TF without the converter: the section says so instead of guessing
            return {"available": False, "reason": f"framework_op_stats conversion failed: {type(e).__name__}: {e}"}
    table = tables[0]
    cols = [c["id"] for c in table["cols"]]
    by_type: dict[str, float] = collections.defaultdict(float)
    kernels: dict[str, str] = {}
    idle = 0.0
    for row in table.get("rows", []):
        r = dict(zip(cols, [c.get("v") for c in row["c"]], strict=False))
        if r.get("type") == "IDLE":
            idle += float(r.get("total_self_time") or 0.0)
            continue
        t = canonical_op_type(str(r.get("type")))
        kernels.setdefault(t, str(r.get("type")))
        by_type[t] += float(r.get("total_self_time") or 0.0)
    busy = sum(by_type.values())
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1])
    return {
        "available": True,
        "busy_us": busy,
        "idle_us": idle,
        "by_type": [{"op": k, "kernel": kernels[k], "self_us": v, "share": v / busy if busy else 0.0} for k, v in ranked],
        "method": "tf.profiler.experimental trace -> framework_op_stats (host op self time)",
    }


def join_flops_and_time(flops_by_type: dict[str, float], times: dict[str, Any], steps: int, top: int = 12) -> list[dict[str, Any]]:
    """Per op type: share of step time, FLOPs per step and the achieved FLOP/s while that op ran."""
    rows = []
    for rec in times.get("by_type", [])[:top]:
        f = flops_by_type.get(rec["op"], 0.0)
        secs = rec["self_us"] / 1e6
        rows.append({**rec, "flops_per_step": f, "achieved_flops_per_second": (f * steps / secs) if secs > 0 and f else None})
    return rows
