"""FedHyper test-suite."""
