"""``python -m pitwall_executor.cli``."""

from pitwall_executor.cli import main

main()
