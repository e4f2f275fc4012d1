"""The LLaMA-style trainer on token shards. Arrives with the trainer issue."""

from .omp_wait import prefer_short_spin

prefer_short_spin()  # before any trainer module imports torch: its OpenMP pool reads the env once
