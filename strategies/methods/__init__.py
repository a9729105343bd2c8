"""Federated methods: every module here registers some with :mod:`fedhyper.methods`."""
