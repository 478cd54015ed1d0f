"""Layer benchmark: dense vs torch.sparse CSR vs published sparseprop vs sparsetrain (see --help)."""
from sparsetrain.bench.layers import main

if __name__ == "__main__":
    main()
