"""`python -m suite.bench`: training steps side by side (ours, plain PyTorch, the textbook BBB, the
peers), the per-kernel breakdown, dense vs sparse inference, the speed targets; prints the tables and
writes them as JSON, with the machine they ran on. `--processes N` instead times the per-kernel table
in N fresh processes; `--widths W,W,...` instead races ours SGD, BBB and Sparse VD at each hidden width;
`--compact W,W,...` instead times the compacted forward against the dense one by first hidden width.
Method and figures: docs/performance.md."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..data import default_data_dir
from ..evaluate import latency
from ..fpmode import flush_denormals
from .compacted import print_table as print_compact
from .compacted import race_compact
from .inference import inference, isolation
from .kernels import breakdown, print_breakdown
from .machine import describe, header
from .peers import INSTALL, missing_peers, peer_steps
from .processes import in_processes, print_spread, spread
from .race import race
from .steps import loader_batches, mnist, ours, plain_sgd, tensor_batches, tutorial_bbb
from .targets import speed_targets
from .widths import print_table, race_widths, scaling_widths, static_shapes


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m suite.bench",
                                 description="this suite's training and inference speed beside its peers, in one process")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per contender per round (default 15)")
    ap.add_argument("--samples", type=int, default=1, help="BBB weight samples per step, the same for every BBB (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--data-dir", default=None, help="dataset cache (default: $BPB_DATA_DIR or ~/.cache/bayes-prune-bench)")
    ap.add_argument("--json", default="bench_results/bench.json", help="where to write the results")
    ap.add_argument("--isolation", action="store_true",
                    help="also measure whether concurrent trials' latency phases disturb each other (with/without the node lock)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--processes", type=processes, default=None, metavar="N",
                      help="instead, time the per-kernel table in N >= 2 fresh processes, one after another, "
                           "and report each kernel's median and range over them")
    mode.add_argument("--widths", type=widths, default=None, metavar="W,W,...",
                      help="instead, race ours SGD, BBB and Sparse VD with two hidden layers of each width "
                           "(784-W-W-10), e.g. 100,400,1200; 'scaling' takes the scaling grid's widths")
    mode.add_argument("--compact", type=widths, default=None, metavar="W,W,...",
                      help="instead, time the compacted LeNet-300-100 forward of Sparse VD's natural-level shapes "
                           "with W first-layer units (e.g. 52,60,64,66,80), unpadded and padded, against the dense "
                           "forward at batch 1000")
    ap.add_argument("--live", type=live_pixels, default=507, metavar="N",
                    help="with --compact: live pixels of the 681-pixel window, for the gather forward (default 507, "
                         "Sparse VD's; Bayesian Compression keeps about 260-400)")
    return ap


def processes(value: str) -> int:
    n = int(value)
    if n < 2:
        raise argparse.ArgumentTypeError(f"{n}: a range over processes needs at least 2 (e.g. --processes 5)")
    return n


def live_pixels(value: str) -> int:
    """--live: live pixels of the compacted bench's window, its two ends included."""
    from .compacted import WINDOW
    span = WINDOW[1] - WINDOW[0]
    if not value.strip().isdigit() or not 2 <= int(value) <= span:
        raise argparse.ArgumentTypeError(f"{value!r}: give the live pixels of the {span}-pixel window as an integer "
                                         f"from 2 (its two ends) to {span} (e.g. --live 266)")
    return int(value)


def widths(value: str) -> list[int]:
    """'100,400,1200' -> [100, 400, 1200]; 'scaling' -> the scaling grid's widths."""
    if value.strip() == "scaling":
        return scaling_widths()
    parts = [p.strip() for p in value.split(",")]
    bad = [p for p in parts if not p.isdigit() or int(p) < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a width: give positive integers separated by commas "
                                         "(e.g. 100,400,1200) or 'scaling'")
    out = [int(p) for p in parts]
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"{value}: a width is repeated; give each width once")
    return out


def load_warning(load: float, cores: int | None) -> str:
    """A line to print when the machine is busy (load average >= cores): then every timing varies with
    the neighbours' load, and neither the ratios nor a spread over processes mean much."""
    if cores and load >= cores:
        return (f"WARNING: load average {load:.1f} on {cores} cores: other work competes for the cores, "
                "so these timings measure it too; rerun on a quiet machine")
    return ""


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    flushed = flush_denormals()  # as trials train (suite/fpmode.py): every contender gets it
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_dir).resolve() if args.data_dir else default_data_dir()
    if args.processes:
        return main_processes(args, root)
    if args.widths:
        return main_widths(args, root, flushed)
    if args.compact:
        return main_compact(args)
    x, y = mnist(root)
    s = args.samples
    for peer, why in missing_peers().items():
        print(f"peer {peer} will not be measured: {why}")
    contenders = {
        "ours SGD": ours("sgd", x, y),
        f"ours BBB ({s} sample)": ours("bbb", x, y, s),
        f"ours BBB eager ({s} sample)": ours("bbb", x, y, s, compile=False),
        "ours Sparse VD": ours("sparse_vd", x, y),
        "ours BC-GNJ (eager)": ours("bc_gnj", x, y),
        "ours BC-GHS (eager)": ours("bc_ghs", x, y),
        "plain SGD (tensor loop)": plain_sgd(tensor_batches(x, y)),
        "plain SGD (DataLoader)": plain_sgd(loader_batches(root)),
        f"tutorial BBB (DataLoader, {s} sample)": tutorial_bbb(loader_batches(root), s),
    }
    peers, missing = peer_steps(tensor_batches(x, y), s)
    contenders.update(peers)
    cpu, load = {**describe(), "denormals_flushed": flushed}, [os.getloadavg()[0]]
    print(header(cpu))
    print(f"load average {load[0]:.1f}; {len(contenders)} contenders x {args.rounds} rounds x {args.steps} steps")
    if warning := load_warning(load[0], cpu["cores"]):
        print(warning)
    steps = race(contenders, args.rounds, args.steps, warmup=10)
    base = steps["ours SGD"]
    print(f"\n{'training step (batch 100, 784-500-500-10)':44} {'ms/step':>9} {'x ours SGD':>11}")
    for name, ms in steps.items():
        print(f"{name:44} {ms:9.2f} {ms / base:11.2f}")
    for line in missing:
        print(f"  not measured: {line}")
    kernel_ms = breakdown(x, y, args.rounds, args.steps)
    flagged = print_breakdown(kernel_ms, cpu)
    inf = inference(x)
    print(f"\n{'inference at 90 % sparsity':44} {'dense ms':>9} {'sparse ms':>10} {'kernel':>10}")
    for bsz in latency.BATCHES:
        print(f"{'batch ' + str(bsz):44} {inf[f'latency_dense_b{bsz}_ms_p90']:9.3f} "
              f"{inf[f'latency_sparse_b{bsz}_ms_p90']:10.3f} {inf[f'sparse_format_b{bsz}_p90']:>10}")
    iso = isolation() if args.isolation else {}
    if iso:
        keys = list(iso["alone"])
        print(f"\n{'latency isolation (1 thread per trial), median ms':50} " + " ".join(f"{k[8:-7]:>12}" for k in keys))
        for name, m in iso.items():
            print(f"{name:50} " + " ".join(f"{m[k]:12.3f}" for k in keys))
    load.append(os.getloadavg()[0])
    targets = speed_targets(steps, s)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"train_ms_per_step": steps, "kernel_breakdown": kernel_ms, "flagged_kernels": flagged,
                               "targets": targets, "inference_p90": inf, "latency_isolation": iso,
                               **cpu, "load_average": load, "samples": s, "not_measured": missing}, indent=1))
    print(f"\nwrote {out}")
    ratios = [f"{t['name']} = {t['value']:.2f} (target {t['op']} {t['target']}: {'met' if t['met'] else 'NOT met'})"
              for t in targets]
    ratios += [f"ours SGD / plain tensor loop = {base / steps['plain SGD (tensor loop)']:.2f}",
               f"sparse/dense b1000 @90% = {inf['latency_sparse_b1000_ms_p90'] / inf['latency_dense_b1000_ms_p90']:.2f}",
               f"load average {load[0]:.1f} -> {load[1]:.1f} on {cpu['cores']} cores"]
    if missing:
        ratios.append(f"peer targets not checked: {len(missing)} peer(s) not measured ({INSTALL})")
    print("RATIOS: " + "; ".join(ratios))
    return 0


def main_processes(args: argparse.Namespace, root: Path) -> int:
    """--processes N: the per-kernel table in N fresh processes; median and range of each kernel."""
    machine, load = describe(), [os.getloadavg()[0]]
    print(header(machine))
    print(f"load average {load[0]:.1f}; per-kernel table in {args.processes} fresh processes x {args.rounds} rounds "
          f"x {args.steps} steps")
    if warning := load_warning(load[0], machine["cores"]):
        print(warning)
    sp = spread(in_processes(args.processes, root, args.rounds, args.steps, args.threads))
    varies = print_spread(sp, args.processes)
    load.append(os.getloadavg()[0])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"kernel_processes": sp, "varying_kernels": varies, "processes": args.processes,
                               "rounds": args.rounds, "steps": args.steps, **machine, "load_average": load}, indent=1))
    print(f"\nwrote {out}")
    return 0


def main_widths(args: argparse.Namespace, root: Path, flushed: bool) -> int:
    """--widths: ours SGD, BBB and Sparse VD at each width in one race, then the per-kernel table at
    the narrowest and the widest width (where the growth of the ratios shows)."""
    x, y = mnist(root)
    machine, load = {**describe(), "denormals_flushed": flushed}, [os.getloadavg()[0]]
    print(header(machine))
    print(f"load average {load[0]:.1f}; widths {', '.join(map(str, args.widths))} x 3 methods x {args.rounds} rounds "
          f"x {args.steps} steps, {args.samples} sample")
    if warning := load_warning(load[0], machine["cores"]):
        print(warning)
    ends = sorted({min(args.widths), max(args.widths)})
    with static_shapes(len(args.widths)):
        rows = race_widths(x, y, args.widths, args.rounds, args.steps, args.samples)
        print_table(rows)
        tables = {}
        for w in ends:
            tables[str(w)] = breakdown(x, y, args.rounds, args.steps, hidden=(w, w))
            print(f"\nper-kernel breakdown at width {w}:", end="")
            print_breakdown(tables[str(w)], machine)
    load.append(os.getloadavg()[0])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"widths": rows, "kernel_breakdown_by_width": tables, "rounds": args.rounds,
                               "steps": args.steps, "samples": args.samples, **machine, "load_average": load},
                              indent=1))
    print(f"\nwrote {out}")
    print("RATIOS: " + "; ".join(f"width {r['width']}: BBB / SGD = {r['bbb_over_sgd']:.2f}, Sparse VD / SGD = "
                                 f"{r['sparse_vd_over_sgd']:.2f}" for r in rows)
          + f"; load average {load[0]:.1f} -> {load[1]:.1f} on {machine['cores']} cores")
    return 0


def main_compact(args: argparse.Namespace) -> int:
    """--compact: the compacted forward's speed-up over the dense one at each first-layer width."""
    machine, load = describe(), [os.getloadavg()[0]]
    print(header(machine))
    print(f"load average {load[0]:.1f}; first-layer widths {', '.join(map(str, args.compact))}, {args.live} live pixels, "
          "batch 1000")
    if warning := load_warning(load[0], machine["cores"]):
        print(warning)
    rows = race_compact(args.compact, args.live)
    print_compact(rows)
    load.append(os.getloadavg()[0])
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"compact": rows, **machine, "load_average": load}, indent=1))
    print(f"\nwrote {out}")
    print("RATIOS: " + "; ".join(f"width {r['width']}: {r['unpadded_speedup']:.2f}x unpadded, {r['padded_speedup']:.2f}x "
                                 f"padded" for r in rows) + f"; load average {load[0]:.1f} -> {load[1]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
