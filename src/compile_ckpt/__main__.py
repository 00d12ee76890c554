"""``python -m compile_ckpt`` is the ``compile-ckpt`` command."""

from .cli import main

raise SystemExit(main())
