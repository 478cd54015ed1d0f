"""HRBP layer benchmark: dense conv vs HRBP blocks vs SparseProp vs channel pruning on CIFAR shapes (see --help)."""
from sparsetrain.bench.hrbp import main

if __name__ == "__main__":
    main()
