"""`python -m codegen`: compile specs/ and providers.yaml into generated/."""

from codegen.cli import main

raise SystemExit(main())
