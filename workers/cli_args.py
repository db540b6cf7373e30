"""Arguments of `framers worker` (no heavy imports: the codec CLI builds its parser on every run)."""

from __future__ import annotations

import argparse

from core.queue_names import ALL_QUEUES

QUEUE_NAMES = ALL_QUEUES  # priority order


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (default: FRAMERS_REDIS_URL)")
    parser.add_argument(
        "--queues",
        nargs="+",
        metavar="QUEUE",
        choices=QUEUE_NAMES,
        help=f"queues to serve, in priority order (default: {' '.join(QUEUE_NAMES)})",
    )
    parser.add_argument("--data-dir", help="local storage directory (default: FRAMERS_DATA_DIR)")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
