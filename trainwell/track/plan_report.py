"""`trainwell plan` as text: the memory plan of a run (a ``Plan.to_dict()``), term by term, training
next to inference, with the time a step and the run take at the device's measured peak."""

from __future__ import annotations

from typing import Any

from trainwell.track import fmt

ROWS = (("weights", "weights"), ("gradients", "gradients"), ("optimizer", "optimizer state"),
        ("activations", "activations"), ("temporaries", "temporary buffers"), ("collectives", "collectives"))


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:,.0f} {unit}" if abs(v) >= 1000 else f"{v:.3g} {unit}"
    return f"{int(n)} B"


def flops(x: float) -> str:
    return f"{fmt.human_rate(x)}FLOP" if x else "-"


def render(plan: dict[str, Any], title: str = "") -> list[str]:
    """The lines `trainwell plan` prints."""
    p = plan
    procs = f"{p['world_size']} processes ({p['strategy']})" if p["world_size"] > 1 else "1 process"
    out = [f"plan{' for ' + title if title else ''}: {p['device']} ({p['device_name']}), {p['precision']}, {procs}"]
    share = f" ({100 * p['trainable'] / max(p['parameters'], 1):.2f}% trainable)" if p["trainable"] != p["parameters"] \
        else ""
    out.append(f"  parameters      {p['parameters']:,}{share}")
    out.append(f"  batch           {p['batch']} samples per process per micro-batch, "
               f"{p['grad_accum']} micro-batch{'es' if p['grad_accum'] > 1 else ''} per step")
    if p["flops_per_step"]:
        formula = f"; 6N per token + attention: {flops(p['flops_formula'])}" if p["flops_formula"] else ""
        out.append(f"  FLOPs per step  {flops(p['flops_per_step'])} measured (torch.utils.flop_counter){formula}")
    if p["step_seconds"]:
        run = p["step_seconds"] * p["total_steps"]
        out.append(f"  time            >= {p['step_seconds']:.3g} s per step, >= {fmt.human_duration(run)} for "
                   f"{p['total_steps']:,} steps (at the measured matmul peak, "
                   f"{fmt.human_rate(p['matmul_peak'])}FLOP/s per process)")
    ac = p["activation_checkpointing"]
    cols = [(f"training (ckpt {'every ' + str(ac) if ac else 'off'})", p["step"], p["peak"])]
    if p.get("other") is not None:
        o = p["other_checkpointing"]
        cols.append((f"ckpt {'every ' + str(o) if o else 'off'}", p["other"], p["other_peak"]))
    inf = p.get("inference") or {}
    lines = ["  memory per process  " + "".join(f"{c[0]:>26}" for c in cols)
             + (f"{'inference':>14}" if inf else "") + (f"{'generation':>14}" if inf.get("generate") else "")]
    for key, label in ROWS:
        if key not in p["step"]:
            continue
        row = f"    {label:<18}" + "".join(f"{size(c[1].get(key)):>26}" for c in cols)
        if key == "weights" and inf:
            full = p.get("weights") or p["step"]["weights"]
            row += f"{size(full):>14}" + (f"{size(full):>14}" if inf.get("generate") else "")
        lines.append(row)
    if inf.get("generate"):
        lines.append(f"    {'KV cache':<18}" + " " * 26 * len(cols) + f"{'':>14}{size(inf['kv_cache']):>14}")
    peak = f"    {'peak':<18}" + "".join(f"{size(c[2]):>26}" for c in cols)
    if inf:
        peak += f"{size(inf['forward']):>14}" + (f"{size(inf['generate']):>14}" if inf.get("generate") else "")
    lines.append(peak)
    out += lines
    out.append("    (each column: the terms at the moment of its peak; gradients appear late in the backward pass)")
    if inf.get("generate"):
        out.append(f"    (inference: a forward pass without gradients on one batch; generation: {inf['rows']} rows "
                   f"to {inf['capacity']} tokens with the KV cache)")
    out.append(f"  data            {size(p['data'])} held by the data source and evaluation batches (host)")
    need = p["peak"] * (p["world_size"] if p["device"] == "cpu" else 1) + (p["data"] if p["device"] == "cpu" else 0)
    verdict = "fits" if need <= p["free"] else "does NOT fit"
    out.append(f"  free now        {size(p['free'])} ({p['free_source']}): the run needs ~{size(need)}, {verdict}")
    out += [f"  {n}" for n in p.get("notes", [])]
    return out
