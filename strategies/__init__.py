"""Flower server strategies and the ServerApp."""
