"""Flower ClientApp and local trainers."""
