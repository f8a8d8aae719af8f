"""`python -m s2policy.data FILE...`: run the dataset check every stage runs first, without training."""

from .check import main

raise SystemExit(main())
