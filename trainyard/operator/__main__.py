"""`python -m trainyard.operator`: run the scheduling loop (what `trainyard serve` starts)."""

from trainyard.operator.runner import main

main()
