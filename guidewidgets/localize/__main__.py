"""``python -m guidewidgets.localize``: train the box head and compare it with CAM boxes on held-out scenes."""

from .box_head import main

raise SystemExit(main())
