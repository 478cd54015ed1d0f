"""End-to-end training-step benchmark, dense vs sparse (see sparsetrain.bench.e2e); same as
``sparsetrain bench model ...``."""
import sys

from sparsetrain.bench.e2e import main

if __name__ == "__main__":
    sys.exit(main())
