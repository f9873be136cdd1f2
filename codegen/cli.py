"""Command line of codegen: validate all inputs, then write (or, with --check, compare) generated/.

Exit status: 0 written or up to date; 1 validation errors (all listed, nothing written) or,
with --check, generated/ differs from what the inputs produce.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import tempfile
from pathlib import Path

from codegen.load import LoadError, load_inputs, resolve
from codegen.models import ModelGenerationError, generate_model
from codegen.render import render_all
from codegen.validate import load_schemas, validate


def build(root: Path, catalogue: Path | None = None) -> dict[str, str]:
    """All files of generated/ as text; raises SystemExit(1) after reporting every error."""
    try:
        inputs = load_inputs(root, catalogue)
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    resolved, errors = resolve(inputs.descriptors)
    errors += validate(inputs, resolved)
    if errors:
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        print(f"{len(errors)} error(s); nothing written.", file=sys.stderr)
        raise SystemExit(1)
    try:
        models = {spec.stem: generate_model(spec) for spec in inputs.openapi_files}
    except ModelGenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    return render_all(inputs, resolved, models, load_schemas(root / "specs"))


def write_tree(files: dict[str, str], out: Path) -> None:
    """Replace `out` with exactly these files, atomically enough for a build step."""
    staging = Path(tempfile.mkdtemp(prefix=".generated-", dir=out.parent))
    for rel, text in files.items():
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def differences(files: dict[str, str], out: Path) -> list[str]:
    found = []
    existing = {p.relative_to(out).as_posix() for p in out.rglob("*.py")} if out.exists() else set()
    for rel in sorted(existing - files.keys()):
        found.append(f"generated/{rel}: not produced by the current specs (stale file)")
    for rel, text in sorted(files.items()):
        path = out / rel
        if not path.exists():
            found.append(f"generated/{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            diff = difflib.unified_diff(path.read_text(encoding="utf-8").splitlines(),
                                        text.splitlines(), f"generated/{rel}", "expected",
                                        lineterm="", n=1)
            found.append("\n".join(list(diff)[:40]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="project root holding specs/ and providers.yaml (default: .)")
    parser.add_argument("--catalogue", type=Path,
                        help="catalogue file (default: ROOT/providers.yaml)")
    parser.add_argument("--out", type=Path, help="output directory (default: ROOT/generated)")
    parser.add_argument("--check", action="store_true",
                        help="compare instead of writing; exit 1 when generated/ is stale")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    out = (args.out or root / "generated").resolve()
    files = build(root, args.catalogue)
    if args.check:
        found = differences(files, out)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print("generated/ is stale: run `make generate` and commit the result.",
                  file=sys.stderr)
            return 1
        print(f"generated/ is up to date ({len(files)} files).")
        return 0
    write_tree(files, out)
    print(f"wrote {len(files)} files to {out}")
    return 0
