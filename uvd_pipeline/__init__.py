"""The UVD build: config, CLI, the Beam graph, sentence assembly, shard formats, reports.

Kept light: importing the package does not import Beam or torch.
"""
