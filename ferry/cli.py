"""`ferry` command line: run a catalogue, validate it, inspect a TF1 graph."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ferry
from ferry.spec import SpecError, load_catalogue
from ferry.stages import STAGE_NAMES

DEFAULT_CATALOGUE = "specs/catalogue.yaml"


def cmd_validate(args: argparse.Namespace) -> int:
    """Print every problem of every spec in the catalogue, with file, field and value."""
    from ferry.keras3.build import check_architecture

    cat = load_catalogue(Path(args.catalogue))
    problems = [p for ps in cat.problems.values() for p in ps]
    for spec in cat.specs.values():
        problems += check_architecture(spec)
    for problem in problems:
        print(problem)
    total = len(cat.specs) + len(cat.problems)
    bad = len({p.file for p in problems})
    print(f"{total - bad} of {total} specs valid" + (f", {len(problems)} problems" if problems else ""))
    return 1 if problems else 0


def cmd_run(args: argparse.Namespace) -> int:
    """Migrate the catalogue (or the --only models) and print the summary."""
    from ferry.prefect_api import ensure_api

    load_catalogue(Path(args.catalogue), only=args.only or None, check_files=False)  # a bad catalogue fails first
    ensure_api()
    from flows.migrate import CatalogueFailed, migrate_catalogue

    state = migrate_catalogue(str(Path(args.catalogue).resolve()), args.only or None,
                              force=args.force or bool(args.stage), force_stage=args.stage,
                              max_parallel=args.max_parallel, dask=args.dask, return_state=True)
    outcome = state.result(raise_on_failure=False)
    rows = outcome.rows if isinstance(outcome, CatalogueFailed) else outcome
    if isinstance(rows, list) and rows and rows[0].get("tracking"):
        print(f"ferry: {rows[0]['tracking']}", file=sys.stderr)
    if isinstance(outcome, CatalogueFailed):
        print(f"ferry: {outcome}", file=sys.stderr)
        return 1
    if isinstance(outcome, SpecError):
        raise outcome
    if isinstance(outcome, BaseException):
        print(f"ferry: catalogue run failed: {outcome}", file=sys.stderr)
        return 1
    print(f"ferry: {len(outcome)} of {len(outcome)} models migrated")
    return 0


def cmd_relog(args: argparse.Namespace) -> int:
    """Log the records of a catalogue run that could not reach MLflow (its journal) into a store."""
    from ferry.files import project_root
    from ferry.review.tracking import absolute_uri, relog, tracking_uri

    catalogue = Path(args.catalogue).resolve()
    folder = Path(args.journal) if "/" in args.journal else project_root(catalogue) / ".ferry" / "relog" / args.journal
    uri = absolute_uri(args.tracking_uri) if args.tracking_uri else tracking_uri(catalogue)
    ids = relog(folder, uri)
    print(f"ferry: relogged {folder} into {uri}: {len(ids)} runs created")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Show what a TF1 artifact holds: inputs, outputs, variables, ops, training-only parts, `auto`."""
    from ferry.tf1.draft import survey
    from ferry.tf1.inventory_text import format_inventory

    found = survey(Path(args.path))
    inventory = {**found.inventory, "signature": {"inputs": found.inputs, "outputs": found.outputs,
                                                  "declared": found.declared}}
    inventory["auto"] = {"supported": found.translation is not None, "unsupported_ops": found.blockers,
                         "fallback_ops": found.translation.fallbacks if found.translation else {}}
    if args.json:
        print(json.dumps(inventory, indent=1))
        return 0
    print(format_inventory(inventory))
    auto = inventory["auto"]
    if auto["supported"] and auto["fallback_ops"]:
        print("\narchitecture: auto — translates, with a warning: these op types have no translation and run as "
              "raw TF ops (ferry.RawOp: the .keras model needs the TensorFlow backend) (one node each):")
        for op_type, node in sorted(auto["fallback_ops"].items()):
            print(f"  {op_type:<32} {node}")
    elif auto["supported"]:
        print("\narchitecture: auto — every op between the guessed inputs and outputs translates")
    elif not auto["unsupported_ops"]:
        print("\narchitecture: auto — no inputs or outputs could be guessed; name them in the spec's source")
    else:
        print("\narchitecture: auto — unsupported op types (one node each); use `architecture: {factory: ...}`:")
        for op_type, node in sorted(auto["unsupported_ops"].items()):
            print(f"  {op_type:<32} {node}")
    return 0


def cmd_draft_spec(args: argparse.Namespace) -> int:
    """Write an editable `graph`-form spec for a TF1 artifact."""
    from ferry.tf1.draft import write_draft

    out = write_draft(Path(args.path), Path(args.output), args.name, args.shards, args.force)
    print(f"wrote {out}: confirm its inputs and outputs, then `ferry validate`")
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    """Find every TF1 model under a folder, report on each, draft a spec per model and a catalogue."""
    from ferry import scan
    from ferry.prefect_api import ensure_api

    root, out = Path(args.folder), Path(args.output)
    if not root.is_dir():
        raise FileNotFoundError(f"scan: {root} is not a folder")
    if (out / "catalogue.yaml").exists() and not args.force:
        raise FileExistsError(f"scan: {out / 'catalogue.yaml'} exists; pass --force to draft over it")
    ensure_api()
    rows = scan.main(root, out)
    print(scan.table(rows))
    drafted = [r for r in rows if r.get("spec")]
    print(f"ferry: {len(rows)} models under {root}, {sum(bool(r.get('error')) for r in rows)} unreadable; "
          f"{len(drafted)} specs drafted in {out} ({sum(r['auto'] for r in drafted)} with architecture: auto). "
          f"Next: ferry validate {out / 'catalogue.yaml'}")
    return 0


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferry", description=__doc__)
    p.add_argument("--version", action="version", version=f"ferry {ferry.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="migrate every model of a catalogue")
    run.add_argument("catalogue", nargs="?", default=DEFAULT_CATALOGUE)
    run.add_argument("--only", action="append", metavar="NAME", help="migrate only this model (repeatable)")
    run.add_argument("--force", action="store_true", help="recompute every stage instead of taking cached results")
    run.add_argument("--stage", choices=STAGE_NAMES, help="with --force: recompute this stage and the ones after it")
    run.add_argument("--max-parallel", type=_at_least_one, metavar="N", help="models at once (default: the catalogue's "
                     "run.max_parallel)")
    run.add_argument("--dask", metavar="ADDRESS", help="fan models out over a Dask cluster: tcp://HOST:8786, or "
                     "local:N for N local worker processes")
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="check a catalogue and its specs")
    val.add_argument("catalogue", nargs="?", default=DEFAULT_CATALOGUE)
    val.set_defaults(func=cmd_validate)
    rel = sub.add_parser("relog", help="log a catalogue run's records that could not reach MLflow")
    rel.add_argument("journal", help="the journal id the run printed (a folder of .ferry/relog/), or its path")
    rel.add_argument("--catalogue", default=DEFAULT_CATALOGUE, help="finds the project root (default: %(default)s)")
    rel.add_argument("--tracking-uri", help="the store to log into (default: MLFLOW_TRACKING_URI, else mlflow.db)")
    rel.set_defaults(func=cmd_relog)
    formats = "a .meta graph, a frozen .pb, a SavedModel folder or an Estimator model_dir"
    ins = sub.add_parser("inspect", help=f"inventory of a TF1 artifact: {formats}")
    ins.add_argument("path")
    ins.add_argument("--json", action="store_true", help="print the full inventory as JSON")
    ins.set_defaults(func=cmd_inspect)
    draft = sub.add_parser("draft-spec", help=f"write a spec (graph form) derived from a TF1 artifact: {formats}")
    draft.add_argument("path")
    draft.add_argument("-o", "--output", required=True, help="spec file to write, e.g. specs/models/NAME.yaml")
    draft.add_argument("--name", help="model name (default: the output file's stem)")
    draft.add_argument("--shards", help="verification shards glob (default: shards/*.npz beside the artifact)")
    draft.add_argument("--force", action="store_true", help="replace an existing file")
    draft.set_defaults(func=cmd_draft_spec)
    scan = sub.add_parser("scan", help=f"find every TF1 model under a folder ({formats}) and draft a catalogue")
    scan.add_argument("folder")
    scan.add_argument("-o", "--output", default="specs/scanned", help="where the specs, catalogue.yaml and "
                      "scan.json go (default: %(default)s)")
    scan.add_argument("--force", action="store_true", help="draft over an earlier scan's catalogue")
    scan.set_defaults(func=cmd_scan)
    return p


def main(argv: list[str] | None = None) -> int:
    from ferry.prefect_api import PrefectUnavailable

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, PrefectUnavailable, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"ferry: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
