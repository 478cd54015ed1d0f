"""Layer benchmark: dense vs torch.sparse CSR vs published sparseprop vs sparsetrain (see --help)."""
import os

# The published sparseprop's OpenMP kernels slow down a lot with sleeping waiters (lin768x3072_b128 at 90%:
# 24.9 ms instead of 6.8 ms), and `import sparsetrain` defaults OMP_WAIT_POLICY to PASSIVE. Compare every
# implementation under the OpenMP runtime's own default, as the README tables were measured, unless set.
os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")

from sparsetrain.bench.layers import main  # noqa: E402

if __name__ == "__main__":
    main()
