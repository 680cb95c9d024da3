"""The ``sgdlab`` command line: list, run, report, bench.

Exit status: 0 when every check passes, 1 when a check fails, 2 on a usage or
configuration error (a one-line message on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        raise _UsageError(message)


class _UsageError(Exception):
    pass


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the help already states it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sgdlab", description="Monte Carlo studies of SGD.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.add_parser("list", help="the experiments, one line each")
    r = sub.add_parser("run", help="run an experiment", formatter_class=_Help,
                       description="Run an experiment: its studies, the checks of its "
                       "predictions, a summary table, results.zarr, summary.json and figures.")
    r.add_argument("name", help="the experiment (see `sgdlab list`)")
    r.add_argument("--preset", default="quick", choices=("quick", "paper"),
                   help="size of the run: quick (about a minute on a laptop) or paper")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (lists with commas); repeatable; see --params")
    r.add_argument("--config", metavar="FILE.toml", default=None,
                   help="TOML file of parameter values (a table named after the experiment, "
                   "or top-level keys); applied after the preset, before --set (default: "
                   "none)")
    r.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: runs/NAME)")
    r.add_argument("--force", action="store_true", help="replace a finished run in DIR")
    r.add_argument("--seed", type=int, default=0,
                   help="base seed of every random key (runs with the same seed are "
                   "bitwise identical)")
    r.add_argument("--x64", action="store_true", help="run in float64 (validation)")
    r.add_argument("--memory", type=float, metavar="GiB", default=None,
                   help="memory budget per chunk (default: a quarter of the RAM, at most 4 "
                   "GiB, on CPU; half of the free memory on an accelerator)")
    r.add_argument("--quiet", action="store_true", help="no progress display")
    r.add_argument("--devices", type=int, metavar="N", default=None,
                   help="local devices to shard over (default: all)")
    r.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="checkpoint interval in seconds")
    r.add_argument("--checkpoint-steps", type=int, metavar="STEPS", default=None,
                   help="also checkpoint every STEPS steps (default: by time only)")
    r.add_argument("--distributed", action="store_true",
                   help="join a multi-process job: call jax.distributed.initialize() (also "
                   "implied by JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID "
                   "all set; SLURM's variables alone do not); every process runs the same "
                   "command and --out, which must be on a filesystem all of them see")
    r.add_argument("--params", action="store_true",
                   help="list the parameters with the values the chosen --preset, --config "
                   "and --set give them, next to the defaults, and exit")
    r.add_argument("--dry-run", action="store_true",
                   help="print the plan (members, chunks, devices, memory) and exit")
    rep = sub.add_parser("report", help="redraw figures and reprint the table of a stored run")
    rep.add_argument("dir", help="output directory of a finished run")
    sub.add_parser("bench", help="benchmarks (see `sgdlab bench --help`)", add_help=False)
    return p


def params_lines(exp, preset: str, config_file=None, set_strings=()) -> list[str]:
    """The parameters of ``exp`` with the values that would run, and where they come from."""
    base = exp.resolve(preset)
    final = exp.resolve(preset, config_file=config_file, set_strings=set_strings)
    default = {p.name: p.check(p.default) for p in exp.params}
    lines = [f"{exp.name} parameters for --preset {preset} "
             "(value [where it comes from; the default]):"]
    for p in exp.params:
        if final[p.name] != base[p.name]:
            source = "--config/--set"
        elif base[p.name] != default[p.name]:
            source = f"preset {preset}"
        else:
            source = None
        lines.append("  " + p.describe(final[p.name], source))
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        import benchmarks
        return benchmarks.main(argv[1:])
    try:
        args = _parser().parse_args(argv)
        if args.command is None:
            _parser().print_help()
            return 2
        return _dispatch(args)
    except (_UsageError, ValueError, FileExistsError, FileNotFoundError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"sgdlab: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sgdlab: interrupted", file=sys.stderr)
        return 130


def argv_for_resume(args, out: str) -> list[str]:
    """The command line that resumes an interrupted run (same configuration)."""
    cmd = ["run", args.name, "--preset", args.preset, "--out", out, "--seed", str(args.seed)]
    for s in args.sets:
        cmd += ["--set", s]
    if args.config:
        cmd += ["--config", args.config]
    if args.x64:
        cmd.append("--x64")
    if getattr(args, "distributed_run", False):
        cmd.append("--distributed")
    return cmd


def _dispatch(args) -> int:
    from sgdlab import experiments
    from sgdlab.engine import Interrupted

    if args.command == "list":
        for name in experiments.names():
            exp = experiments.get(name)
            print(f"{name:16s} study {exp.study}: {exp.title}")
        return 0
    if args.command == "report":
        summary, figures = experiments.report(args.dir)
        print(experiments.summary_table(summary))
        paths = (os.path.join(args.dir, "figures", f + ".png") for f in figures)
        print("figures: " + ", ".join(paths))
        return experiments.exit_status(summary)
    # run
    exp = experiments.get(args.name)
    if args.params:
        for line in params_lines(exp, args.preset, args.config, args.sets):
            print(line)
        return 0
    if args.seed < 0:
        raise ValueError(f"--seed={args.seed} is invalid: expected a non-negative integer")
    if args.memory is not None and not args.memory > 0:
        raise ValueError(f"--memory={args.memory} is invalid: expected a positive number of GiB")
    args.distributed_run = False
    if not args.params and not args.dry_run:
        from sgdlab import engine
        if engine.distributed_requested(args.distributed):
            engine.initialize_distributed()
            args.distributed_run = True
    if args.x64:
        import jax
        jax.config.update("jax_enable_x64", True)
    if not args.checkpoint_every > 0:
        raise ValueError(f"--checkpoint-every={args.checkpoint_every} is invalid: expected a "
                         "positive number of seconds")
    if args.checkpoint_steps is not None and args.checkpoint_steps < 1:
        raise ValueError(f"--checkpoint-steps={args.checkpoint_steps} is invalid: expected a "
                         "positive integer")
    memory = None if args.memory is None else int(args.memory * 2**30)
    if args.dry_run:
        for line in experiments.dry_run(args.name, args.preset, config_file=args.config,
                                        set_strings=args.sets, seed=args.seed,
                                        devices=args.devices, memory_budget=memory):
            print(line)
        return 0
    out = args.out or os.path.join("runs", args.name)
    try:
        summary, _, figures = experiments.run(
            args.name, args.preset, config_file=args.config, set_strings=args.sets, out=out,
            force=args.force, seed=args.seed, progress=not args.quiet, devices=args.devices,
            memory_budget=memory,
            checkpoint_seconds=args.checkpoint_every, checkpoint_steps=args.checkpoint_steps,
            log=lambda m: print(m, file=sys.stderr))
    except Interrupted as e:
        resume = " ".join(shlex.quote(a) for a in ["sgdlab", *argv_for_resume(args, out)])
        if args.distributed_run:
            resume += "\n(on every process, as before; the number of processes may change)"
        print(f"sgdlab: interrupted ({e}); checkpoint written to {out}/.sgdlab-state\n"
              f"resume with: {resume}", file=sys.stderr)
        return 130
    if args.distributed_run:
        import jax
        if jax.process_index() != 0:  # process 0 reports
            return experiments.exit_status(summary)
    print(experiments.summary_table(summary))
    print(f"wrote {out}/results.zarr, {out}/summary.json, {out}/figures/ "
          f"({len(figures)} figure(s)) in {summary['runtime_s']:.1f} s")
    return experiments.exit_status(summary)


if __name__ == "__main__":
    sys.exit(main())
