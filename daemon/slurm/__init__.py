"""Slurm backends: one interface, a pyslurm and a CLI implementation."""
