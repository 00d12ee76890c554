"""``python -m compile_ckpt.workshop.bench --worker ROUTE ...``: one route's fresh process."""

from .routes import main

raise SystemExit(main())
