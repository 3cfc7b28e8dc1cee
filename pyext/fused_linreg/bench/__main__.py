"""``python -m fused_linreg.bench``."""

from .runner import main

main()
