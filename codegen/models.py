"""Typed pydantic v2 models from specs/openapi/*.yaml, via datamodel-code-generator.

Extra fields are allowed on every model: a field an upstream or a client adds tomorrow must
pass through, never become a 400 or a 500. Output is deterministic (no timestamp, relative
input names) so `make check-generated` can compare bytes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--input-file-type", "openapi",
    "--output-model-type", "pydantic_v2.BaseModel",
    "--target-python-version", "3.11",
    "--use-annotated",
    "--field-constraints",
    "--use-standard-collections",
    "--use-union-operator",
    "--extra-fields", "allow",
    "--disable-timestamp",
    "--use-schema-description",
    "--enum-field-as-literal", "all",
    "--use-type-alias",
    "--use-title-as-name",
    "--formatters", "builtin",
]


class ModelGenerationError(Exception):
    """datamodel-code-generator refused a spec; the message carries its output."""


def generate_model(spec: Path) -> str:
    """Python source of the models for one OpenAPI file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{spec.stem}.py"
        proc = subprocess.run(
            [sys.executable, "-m", "datamodel_code_generator", "--input", spec.name,
             "--output", str(out), *FLAGS],
            cwd=spec.parent, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            raise ModelGenerationError(
                f"specs/openapi/{spec.name}: datamodel-code-generator failed:\n"
                f"{proc.stderr.strip() or proc.stdout.strip()}")
        return out.read_text(encoding="utf-8")
