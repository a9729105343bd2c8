"""FedHyper: hypergradient learning-rate scheduling for federated learning (core, Flower-free)."""
